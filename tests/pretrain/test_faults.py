"""Faults in Ray Train + DeepSpeed pretraining on the `tiny` data (2 CPU workers over gloo), for real:
a NaN loss on one rank, and a truncated checkpoint on resume (under Ray Train and under torchrun).

One diverged run of `uqa-ray pretrain` (NaN injected at step 25 after checkpoints at steps 10, 14 = end of
epoch 1, and 20; Ray keeps the last 2) is shared: a test that damages it works on a copy.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from uqa_ray.cli import main as cli_main
from uqa_ray.config import ConfigError, build
from uqa_ray.distributed import CKPT_TAG, damage
from uqa_ray.encoders import load_encoder
from uqa_ray.faults import ENV
from uqa_ray.pretrain.config import PretrainConfig
from uqa_ray.pretrain.trainer import export_encoder, pretrain, read_meta, run_name

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
MODEL_STATES = "mp_rank_00_model_states.pt"  # ZeRO-2: the module's weights, read by every rank
SETTINGS = {  # 225 train users / 2 workers / micro-batch 8: 14 steps per epoch, 28 in all
    "preset": "tiny", "max_len": 32, "seed": 3, "optim.epochs": 2, "optim.lr": 3e-3, "optim.micro_batch": 8,
    "scaling.num_workers": 2, "scaling.cpus_per_worker": 0.5, "scaling.checkpoint_every": 10, "eval_batch": 32,
    "scaling.zero_stage": 2, "name": "faults",
}


def _cfg(data, storage, **over) -> PretrainConfig:
    nested: dict = {}
    for key, value in {**SETTINGS, "data": str(data), "scaling.storage": str(storage), **over}.items():
        *parents, leaf = key.split(".")
        d = nested
        for p in parents:
            d = d.setdefault(p, {})
        d[leaf] = value
    return build(PretrainConfig, nested)


def _checkpoints(run_dir: Path) -> list[Path]:
    return sorted(p for p in run_dir.glob("checkpoint_*") if p.is_dir())


def _truncate(path: Path) -> None:
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)  # what a copy or write cut short leaves


@dataclasses.dataclass
class Diverged:
    rc: int
    stderr: str
    run_dir: Path


@pytest.fixture(scope="module")
def diverged(tiny_data, tmp_path_factory) -> Diverged:
    """`uqa-ray pretrain` with a NaN injected at step 25 (the command's exit code and stderr)."""
    storage = tmp_path_factory.mktemp("runs")
    sets = [f"{k}={v}" for k, v in SETTINGS.items()] + [f"scaling.storage={storage}"]
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.MonkeyPatch.context() as m:
        m.setenv(ENV, '{"nan_at_step": 25}')  # read by the launching process (uqa_ray/faults.py)
        rc = cli_main(["pretrain", "--data", str(tiny_data), "--set", *sets])
    return Diverged(rc, err.getvalue(), storage / SETTINGS["name"])


def _status(run_dir: Path) -> dict:
    return json.loads((run_dir / "status.json").read_text())


def _copy_run(diverged, storage: Path) -> Path:
    """A copy of the diverged run under another storage folder (Ray's snapshot names checkpoints relative
    to the run folder, so the copy resumes like the original)."""
    return Path(shutil.copytree(diverged.run_dir, storage / diverged.run_dir.name))


def test_nan_on_one_rank_stops_run_as_diverged_with_its_step(diverged):
    assert diverged.rc == 2, diverged.stderr[-3000:]
    status = _status(diverged.run_dir)
    assert status["status"] == "diverged" and status["step"] == 25 and status["epoch"] == 2
    assert "non-finite loss at step 25" in status["reason"] and "on 1 of 2 ranks" in status["reason"]
    # The command says it, and where the status is.
    assert f"uqa-ray pretrain: diverged: {status['reason']} (see {diverged.run_dir / 'status.json'})" \
        in diverged.stderr
    # No summary or export of a diverged run, so a rerun is not mistaken for a finished one.
    assert not (diverged.run_dir / "summary.json").exists() and not (diverged.run_dir / "encoder").exists()


def test_divergence_keeps_last_good_checkpoint_loadable(diverged, tiny_data, tmp_path):
    status = _status(diverged.run_dir)
    last = status["last_checkpoint"]
    assert last["step"] == 20 and status["last_checkpoint_metrics"]["step"] == 20
    assert f"last good checkpoint: step 20 at {last['path']}" in status["reason"]
    kept = _checkpoints(diverged.run_dir)
    assert len(kept) == 2 and kept[-1] == Path(last["path"])  # keep_checkpoints=2; nothing after step 20
    ckpt = Path(last["path"])
    for rank in (0, 1):
        assert (ckpt / CKPT_TAG / f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt").is_file()
        assert (ckpt / "rng" / f"rank{rank}.pt").is_file()
    # The DeepSpeed client state is the loop's position at step 20, before the NaN.
    states = torch.load(ckpt / CKPT_TAG / MODEL_STATES, map_location="cpu", weights_only=False)
    assert states["global_step"] == 20 and states["epoch"] == 1 and states["step_in_epoch"] == 6
    # ...and its ZeRO shards consolidate to finite fp32 weights.
    cfg = _cfg(tiny_data, diverged.run_dir.parent)
    export = export_encoder(ckpt, cfg, cfg.encoder_config(read_meta(tiny_data)["vocab"]), tmp_path / "enc")
    model, _ = load_encoder(export)
    assert all(torch.isfinite(t).all() for t in model.state_dict().values())


def test_truncated_latest_checkpoint_falls_back_to_previous(diverged, tiny_data, tmp_path, capfd):
    run_dir = _copy_run(diverged, tmp_path)
    previous, latest = _checkpoints(run_dir)
    _truncate(latest / CKPT_TAG / MODEL_STATES)
    # The same run without the fault injection (which is not part of the run's key) resumes it.
    cfg = _cfg(tiny_data, tmp_path)
    assert run_name(cfg) == run_dir.name
    res = pretrain(cfg)
    out = capfd.readouterr()
    assert res.status == "ok", res.reason
    m = res.metrics
    assert m["final"] and m["epoch"] == 2 and m["step"] == 28
    # Resumed from the previous checkpoint (end of epoch 1, step 14), not the truncated step-20 one.
    assert m["resumed_from_step"] == 14
    [skipped] = m["skipped_checkpoints"]
    assert skipped.startswith(f"{latest}: ") and MODEL_STATES in skipped and "BadZipFile" in skipped
    assert f"WARNING: resumed past a checkpoint that could not be loaded: {latest}" in out.out  # the driver
    assert f"WARNING: checkpoint {latest} cannot be loaded" in out.out + out.err  # a worker, via Ray's log
    assert json.loads((run_dir / "status.json").read_text())["status"] == "ok"  # the stale "diverged" is gone
    model, _ = load_encoder(res.encoder_dir)
    assert all(torch.isfinite(t).all() for t in model.state_dict().values())


def test_no_loadable_checkpoint_fails_naming_each(diverged, tiny_data, tmp_path):
    run_dir = _copy_run(diverged, tmp_path)
    kept = _checkpoints(run_dir)
    for ckpt in kept:
        _truncate(ckpt / CKPT_TAG / MODEL_STATES)
    res = pretrain(_cfg(tiny_data, tmp_path))
    assert res.status == "failed" and res.encoder_dir is None
    assert "no checkpoint of this run can be loaded" in res.reason, res.reason
    for ckpt in kept:
        assert str(ckpt) in res.reason, res.reason
    assert json.loads((run_dir / "status.json").read_text())["status"] == "failed"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(data, storage, port: int, *sets: str, faults: str = "") -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(port), "-m", "uqa_ray.pretrain.torchrun", "--data", str(data), "--set",
           "preset=tiny", "max_len=32", "optim.epochs=1", "optim.micro_batch=16", "optim.lr=3e-3",
           f"scaling.storage={storage}", "name=t", "scaling.checkpoint_every=3", "scaling.zero_stage=2", *sets]
    env = {**os.environ, "PYTHONPATH": str(ROOT), ENV: faults}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def test_torchrun_nan_then_truncated_latest_falls_back_to_previous(tiny_data, tmp_path):
    # 7 steps per epoch; NaN at step 6 after checkpoints at steps 3 (previous) and 6 (latest).
    first = _torchrun(tiny_data, tmp_path, _free_port(), faults='{"nan_at_step": 6}')
    assert first.returncode != 0 and "DIVERGED" in first.stderr, first.stderr[-3000:]
    log = tmp_path / "t" / "metrics.jsonl"
    diverged = json.loads(log.read_text().splitlines()[-1])
    assert diverged["status"] == "diverged" and diverged["step"] == 6
    root = tmp_path / "t" / "checkpoints"
    _truncate(root / "latest" / CKPT_TAG / MODEL_STATES)
    # Without the fault: resumes from `previous`, with a warning naming `latest`, and finishes.
    again = _torchrun(tiny_data, tmp_path, _free_port())
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"WARNING: checkpoint {root / 'latest'} cannot be loaded" in again.stdout + again.stderr
    final = json.loads(log.read_text().splitlines()[-1])
    assert final["final"] and final["resumed_from_step"] == 3 and final["step"] == 7
    assert final["skipped_checkpoints"][0].startswith(f"{root / 'latest'}: ")


@pytest.mark.parametrize("field", ["checkpoint_every", "max_failures"])
def test_config_rejects_negative_counts(field):
    with pytest.raises(ConfigError, match=f"scaling: {field} must be >= 0"):
        build(PretrainConfig, {"scaling": {field: -1}})
    with pytest.raises(ConfigError, match="keep_checkpoints must be >= 1"):
        build(PretrainConfig, {"scaling": {"keep_checkpoints": 0}})


def test_damage_check_catches_truncation_and_flipped_bytes_in_own_files(tmp_path):
    tag = tmp_path / CKPT_TAG
    tag.mkdir()
    torch.save({"w": torch.arange(4096.0)}, tag / MODEL_STATES)
    for rank in (0, 1):
        torch.save({"s": torch.ones(64)}, tag / f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt")
    assert damage(tmp_path, 0) is None and damage(tmp_path, 1) is None
    # Flipped bytes inside a tensor would load silently as wrong weights; the zip's CRC catches them.
    data = bytearray((tag / MODEL_STATES).read_bytes())
    mid = data.index(torch.arange(4096.0)[2000:2004].numpy().tobytes())
    data[mid : mid + 8] = bytes(8)
    (tag / MODEL_STATES).write_bytes(bytes(data))
    assert "corrupt (CRC mismatch" in damage(tmp_path, 0)
    torch.save({"w": torch.arange(4096.0)}, tag / MODEL_STATES)
    # A rank checks only the shards it reads: rank 1's truncated shard is rank 1's finding.
    _truncate(tag / "zero_pp_rank_1_mp_rank_00_optim_states.pt")
    assert damage(tmp_path, 0) is None
    assert "zero_pp_rank_1_mp_rank_00_optim_states.pt: truncated or corrupt (BadZipFile" in damage(tmp_path, 1)
    assert damage(tmp_path / "nowhere", 0) == f"no {CKPT_TAG}/ folder"
