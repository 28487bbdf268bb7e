"""`uqa-ray pretrain`: one pretraining run on Ray Train + DeepSpeed (config = YAML overrides + --set)."""
from __future__ import annotations

import argparse
import sys

from uqa_ray.config import build, load_yaml, parse_dotted
from uqa_ray.pretrain.config import PretrainConfig


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="prepared data folder (uqa-ray prepare)")
    p.add_argument("--config", action="append", default=[], help="YAML file of PretrainConfig overrides")
    p.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override, e.g. preset=25M scaling.num_workers=4 scaling.zero_stage=3 loss.kind=infonce")


def load_config(args: argparse.Namespace) -> PretrainConfig:
    overrides = [load_yaml(c) for c in args.config] + [parse_dotted(args.set)]
    if args.data:
        overrides.append({"data": args.data})
    return build(PretrainConfig, *overrides)


def run(args: argparse.Namespace) -> int:
    from uqa_ray.pretrain.trainer import STATUS_FILE, pretrain

    result = pretrain(load_config(args))
    if result.status == "ok":
        return 0
    print(f"uqa-ray pretrain: {result.status}: {result.reason} (see {result.run_dir / STATUS_FILE})", file=sys.stderr)
    # A diverged loss is an outcome of the config (exit 2, like other bad input); anything else failed (1).
    return 2 if result.status == "diverged" else 1
