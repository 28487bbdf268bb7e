"""The same per-worker loop without Ray: `torchrun -m uqa_ray.pretrain.torchrun` (2 CPU ranks, gloo)."""
from __future__ import annotations

import json
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


def test_torchrun_trains_checkpoints_and_resumes(tiny_data, tmp_path):
    # A real free port: with --master_port 0 the two ranks never meet (each resolves its own port).
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()),
           "-m", "uqa_ray.pretrain.torchrun", "--data", str(tiny_data), "--set", "preset=tiny", "max_len=32",
           "optim.epochs=1", "optim.micro_batch=16", "optim.lr=3e-3", f"storage={tmp_path}", "name=t",
           "checkpoint_every=3", "zero_stage=2"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(x) for x in (tmp_path / "t" / "metrics.jsonl").read_text().splitlines()]
    final = lines[-1]
    assert final["final"] and final["eval/n"] > 0 and final["train_loss"] > 0
    assert (tmp_path / "t" / "checkpoints" / "latest" / "ckpt").is_dir()
    # A second launch finds the finished run's checkpoint and has nothing left to train.
    cmd[cmd.index("--master_port") + 1] = str(_free_port())
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed at epoch" in again.stdout + again.stderr or len(
        (tmp_path / "t" / "metrics.jsonl").read_text().splitlines()) == len(lines)
