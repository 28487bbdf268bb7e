"""`uqa-ray plan`: memory per GPU for presets x ZeRO stages x GPU counts (which cluster to ask for)."""
from __future__ import annotations

import argparse

from uqa_ray.encoders.presets import TRM_SIZES
from uqa_ray.pretrain.config import TABLES
from uqa_ray.vocab import LOSS_KINDS


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", nargs="+", default=list(TRM_SIZES), help="encoder presets (default: table 5)")
    p.add_argument("--stage", nargs="+", type=int, default=None, choices=[0, 1, 2, 3],
                   help="ZeRO stages (default 2 3; 1 2 with --tables sparse)")
    p.add_argument("--gpus", nargs="+", type=int, default=[1, 8], help="data-parallel GPU counts")
    p.add_argument("--micro-batch", type=int, default=4, help="per GPU (official: 4)")
    p.add_argument("--max-len", type=int, default=512)
    p.add_argument("--gpu-gib", type=float, default=80.0, help="GPU memory to check against (H100: 80)")
    p.add_argument("--tables", choices=TABLES, default="dense", help="optim.tables")
    p.add_argument("--loss", choices=tuple(LOSS_KINDS), default="ce",
                   help="loss.kind (with sparse tables: whether the item table leaves ZeRO)")


def run(args: argparse.Namespace) -> int:
    from uqa_ray.pretrain.planner import markdown, plan_table

    stages = args.stage or ([1, 2] if args.tables == "sparse" else [2, 3])
    plans = plan_table(args.preset, stages, args.gpus, micro_batch=args.micro_batch, max_len=args.max_len,
                       tables=args.tables, loss=args.loss)
    print(markdown(plans, args.gpu_gib))
    return 0
