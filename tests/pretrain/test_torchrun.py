"""The same per-worker loop without Ray: `torchrun -m uqa_ray.pretrain.torchrun` (2 CPU ranks, gloo).
It also runs ZeRO stages 0 and 1 for real (the Ray Train tests run stages 2 and 3), and the row-sparse
tables (`optim.tables=sparse`) against the engine's dense AdamW and through a resume."""
from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(tiny_data: Path, storage: Path, *sets: str, env: dict | None = None
              ) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """Launch 2 ranks on the tiny data (run name `t` under `storage`); (process, metrics.jsonl lines)."""
    # A real free port: with --master_port 0 the two ranks never meet (each resolves its own port).
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()),
           "-m", "uqa_ray.pretrain.torchrun", "--data", str(tiny_data), "--set", "preset=tiny", "max_len=32",
           "optim.micro_batch=16", "optim.lr=3e-3", f"scaling.storage={storage}", "name=t", *sets]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**(env or os.environ), "PYTHONPATH": str(ROOT)},
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(x) for x in (storage / "t" / "metrics.jsonl").read_text().splitlines()]
    return proc, lines


def test_torchrun_trains_checkpoints_and_resumes(tiny_data, tmp_path):
    _, lines = _torchrun(tiny_data, tmp_path, "optim.epochs=1", "scaling.checkpoint_every=3", "scaling.zero_stage=2")
    final = lines[-1]
    assert final["final"] and final["eval/n"] > 0 and final["train_loss"] > 0
    assert (tmp_path / "t" / "checkpoints" / "latest" / "ckpt").is_dir()
    # A second launch finds the finished run's checkpoint and has nothing left to train.
    again, _ = _torchrun(tiny_data, tmp_path, "optim.epochs=1", "scaling.checkpoint_every=3", "scaling.zero_stage=2")
    assert "resumed at epoch" in again.stdout + again.stderr or len(
        (tmp_path / "t" / "metrics.jsonl").read_text().splitlines()) == len(lines)


@pytest.mark.parametrize("stage", [0, 1])
def test_zero_stage_trains_and_loss_falls(tiny_data, tmp_path, stage):
    # 225 train users / 2 ranks / micro-batch 16: 7 steps per epoch, 2 epochs (~15 s per stage on 2 cores).
    _, lines = _torchrun(tiny_data, tmp_path, "optim.epochs=2", "eval_users=64", "eval_batch=32",
                         f"scaling.zero_stage={stage}")
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


SPARSE = ("loss.kind=sampled", "loss.n_negatives=64", "scaling.zero_stage=2")


def _module_state(storage: Path) -> dict:
    return torch.load(storage / "t" / "checkpoints" / "latest" / "ckpt" / "mp_rank_00_model_states.pt",
                      map_location="cpu", weights_only=False)


@pytest.mark.parametrize("accum", [1, 2])  # one optimizer step of one or two micro-batches
def test_sparse_tables_one_step_equals_dense_adamw_on_two_ranks(tiny_data, tmp_path, accum):
    # One optimizer step from the same weights on 2 ranks under ZeRO-2: the row-sparse Adam (rows all-reduced
    # by the engine's sparse all-reduce) equals the engine's dense AdamW on every weight, tables included.
    # Adam's first step is lr * g / (|g| + eps): with the default eps, ~lr * sign(g) whatever g's scale, and
    # for a g that cancels to ~eps it turns summation-order noise into lr-sized steps. eps 1 makes it
    # ~lr * g, which shows a wrong gradient scale (a sum instead of the ranks' mean) and is well conditioned.
    states = {}
    for tables in ("dense", "sparse"):
        _torchrun(tiny_data, tmp_path / tables, f"max_steps={accum}", f"optim.grad_accum={accum}", "optim.eps=1.0",
                  f"optim.tables={tables}", *SPARSE)
        states[tables] = _module_state(tmp_path / tables)
    dense, sparse = states["dense"]["module"], states["sparse"]["module"]
    assert dense.keys() == sparse.keys()
    item = "encoder.item_input.tables.uni_seq_item_id.weight"
    moved = (sparse[item] - _initial(tiny_data)[item]).abs().amax(dim=1) > 0
    assert 0 < int(moved.sum()) < len(moved)  # the step moved some rows, not all
    for name in dense:
        torch.testing.assert_close(sparse[name], dense[name], rtol=1e-5, atol=1e-6, msg=name)
    assert "tables" in states["sparse"] and "tables" not in states["dense"]  # its optimizer state is saved


def _initial(tiny_data: Path) -> dict:
    from uqa_ray.config import build
    from uqa_ray.pretrain.config import PretrainConfig
    from uqa_ray.pretrain.objective import PretrainObjective
    from uqa_ray.pretrain.trainer import read_meta

    cfg = build(PretrainConfig, {"preset": "tiny", "max_len": 32})
    torch.manual_seed(cfg.seed)  # as build_engine seeds every rank
    return PretrainObjective(cfg.encoder_config(read_meta(tiny_data)["vocab"])).state_dict()


def test_sparse_tables_resume_to_identical_metrics(tiny_data, tmp_path):
    # 7 steps per epoch, 2 epochs; a NaN at step 11 stops the run after the step-9 checkpoint, and the
    # relaunch resumes from it: the same final metrics as an undisturbed run only if the tables' moments
    # came back with it.
    settings = ("optim.epochs=2", "scaling.checkpoint_every=3", "optim.tables=sparse", *SPARSE)
    _, whole = _torchrun(tiny_data, tmp_path / "whole", *settings)
    env = {**os.environ, "UQA_RAY_FAULTS": '{"nan_at_step": 11}'}
    with pytest.raises(AssertionError):  # the diverged launch exits non-zero
        _torchrun(tiny_data, tmp_path / "resumed", *settings, env=env)
    _, lines = _torchrun(tiny_data, tmp_path / "resumed", *settings)
    final, ref = lines[-1], whole[-1]
    assert final["resumed_from_step"] == 9 and final["step"] == ref["step"] == 14
    history = ref["loss_history"]
    assert history[1] < history[0], history
    for k in ("train_loss", "eval/loss", "eval/HR@10", "eval_ranks"):
        assert final[k] == ref[k], k


def test_sparse_tables_under_bf16_keep_fp32_masters_that_the_export_takes(tiny_data, tmp_path):
    # DeepSpeed's bf16 engine casts the whole module, tables included; RowSparseAdam updates fp32 masters
    # (saved in the checkpoint) and the export takes those, not the rounded bf16 weights.
    from uqa_ray.config import build
    from uqa_ray.encoders import load_encoder
    from uqa_ray.pretrain.config import PretrainConfig
    from uqa_ray.pretrain.trainer import export_encoder, read_meta

    sets = ("max_steps=3", "precision=bf16", "optim.tables=sparse", *SPARSE)
    _torchrun(tiny_data, tmp_path, *sets)
    saved = _module_state(tmp_path)
    name = "encoder.item_input.tables.uni_seq_item_id.weight"
    master, weight = saved["tables"]["masters"][name], saved["module"][name]
    assert master.dtype == torch.float32 and weight.dtype == torch.bfloat16
    assert torch.equal(master.bfloat16(), weight) and not torch.equal(master, weight.float())
    cfg = build(PretrainConfig, {"preset": "tiny", "max_len": 32, "precision": "bf16", "scaling": {"zero_stage": 2},
                                 "optim": {"tables": "sparse"}, "loss": {"kind": "sampled"}})
    out = export_encoder(tmp_path / "t" / "checkpoints" / "latest", cfg,
                         cfg.encoder_config(read_meta(tiny_data)["vocab"]), tmp_path / "export")
    model, _ = load_encoder(out)
    assert torch.equal(model.item_input.item_embedding.weight, master)
