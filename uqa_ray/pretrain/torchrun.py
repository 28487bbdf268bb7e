"""The same per-worker loop without Ray, for debugging and single-node measurements:

    torchrun --nproc_per_node 8 -m uqa_ray.pretrain.torchrun --data DIR --set preset=85M scaling.zero_stage=2

Data comes straight from the Arrow files (rows strided by rank), checkpoints go to
`<scaling.storage>/<name>/checkpoints/{latest,previous}`, metrics are printed by rank 0.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from uqa_ray.config import to_dict
from uqa_ray.data.schema import PRETRAIN_FILES
from uqa_ray.data.stream import arrow_file_info
from uqa_ray.faults import armed


def main(argv: list[str] | None = None) -> int:
    from uqa_ray.pretrain.cli import configure, load_config
    from uqa_ray.pretrain.loop import train_loop
    from uqa_ray.pretrain.session import TorchrunSession
    from uqa_ray.pretrain.trainer import read_meta, run_name

    p = argparse.ArgumentParser(prog="python -m uqa_ray.pretrain.torchrun", description=__doc__.split("\n")[0])
    configure(p)
    cfg = load_config(p.parse_args(argv))
    on_gpu = torch.cuda.is_available()
    if on_gpu:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if on_gpu else "gloo")
    vocab = read_meta(cfg.data)["vocab"]
    n_train = sum(arrow_file_info(Path(cfg.data) / PRETRAIN_FILES["train"])[1])
    run_dir = Path(cfg.scaling.storage).resolve() / run_name(cfg)
    steps = (n_train // dist.get_world_size()) // cfg.optim.micro_batch
    loop_cfg = {**to_dict(cfg), "_run": {"vocab": vocab, "steps_per_epoch": steps, "run_dir": str(run_dir),
                                         "threads": torch.get_num_threads(), "faults": dataclasses.asdict(armed())}}
    stopped = train_loop(loop_cfg, session_factory=lambda c: TorchrunSession(c, run_dir))
    dist.destroy_process_group()
    if stopped:  # a non-finite loss: the checkpoints in run_dir are the last good ones
        print(f"[pretrain] {run_dir}: DIVERGED: {stopped}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
