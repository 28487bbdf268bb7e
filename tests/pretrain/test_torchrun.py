"""The same per-worker loop without Ray: `torchrun -m uqa_ray.pretrain.torchrun` (2 CPU ranks, gloo).
It also runs ZeRO stages 0 and 1 for real (the Ray Train tests run stages 2 and 3)."""
from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(tiny_data: Path, storage: Path, *sets: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """Launch 2 ranks on the tiny data (run name `t` under `storage`); (process, metrics.jsonl lines)."""
    # A real free port: with --master_port 0 the two ranks never meet (each resolves its own port).
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()),
           "-m", "uqa_ray.pretrain.torchrun", "--data", str(tiny_data), "--set", "preset=tiny", "max_len=32",
           "optim.micro_batch=16", "optim.lr=3e-3", f"storage={storage}", "name=t", *sets]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(x) for x in (storage / "t" / "metrics.jsonl").read_text().splitlines()]
    return proc, lines


def test_torchrun_trains_checkpoints_and_resumes(tiny_data, tmp_path):
    _, lines = _torchrun(tiny_data, tmp_path, "optim.epochs=1", "checkpoint_every=3", "zero_stage=2")
    final = lines[-1]
    assert final["final"] and final["eval/n"] > 0 and final["train_loss"] > 0
    assert (tmp_path / "t" / "checkpoints" / "latest" / "ckpt").is_dir()
    # A second launch finds the finished run's checkpoint and has nothing left to train.
    again, _ = _torchrun(tiny_data, tmp_path, "optim.epochs=1", "checkpoint_every=3", "zero_stage=2")
    assert "resumed at epoch" in again.stdout + again.stderr or len(
        (tmp_path / "t" / "metrics.jsonl").read_text().splitlines()) == len(lines)


@pytest.mark.parametrize("stage", [0, 1])
def test_zero_stage_trains_and_loss_falls(tiny_data, tmp_path, stage):
    # 225 train users / 2 ranks / micro-batch 16: 7 steps per epoch, 2 epochs (~15 s per stage on 2 cores).
    _, lines = _torchrun(tiny_data, tmp_path, "optim.epochs=2", "eval_users=64", "eval_batch=32",
                         f"zero_stage={stage}")
    final = lines[-1]
    assert final["final"] and final["epoch"] == 2
    assert final["zero_stage"] == stage and final["precision"] == "fp32"  # CPU: fp32
    history = final["loss_history"]
    assert len(history) == 2 and all(map(math.isfinite, history)), history
    assert history[1] < history[0], history
    assert final["eval/n"] > 0 and math.isfinite(final["eval/HR@10"])
    # The stage DeepSpeed really ran, read from its checkpoint: stage 1 shards the optimizer state, one
    # file per rank; stage 0 keeps it whole with the model.
    ckpt = tmp_path / "t" / "checkpoints" / "latest" / "ckpt"
    shards = sorted(p.name for p in ckpt.glob("zero_pp_rank_*optim_states.pt"))
    if stage == 0:
        assert shards == [], shards
    else:
        assert shards == [f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt" for r in range(2)], shards
