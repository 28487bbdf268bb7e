"""What every `experiments/<name>.py` does: pick a config preset, apply overrides, run, summarize.

    python experiments/<name>.py [--config local|ci|paper|FILE.yaml] [--set key=value ...] [--workdir DIR]

Exit codes (uqa_ray.io): 0 every planned run and trial ok; 2 bad input or config (nothing run); 3
incomplete - a pretraining run or trial has no ok result after its retries (each is named, the report
marks it; a rerun retries the missing ones).

Under `ray job submit` the script joins that cluster (RAY_ADDRESS is set for the job); without one it
starts a local Ray. Use an absolute --workdir on storage every node sees when running on a cluster.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from uqa_ray.config import ConfigError, build, load_yaml, parse_dotted
from uqa_ray.io import EXIT_BAD_INPUT, EXIT_INCOMPLETE, InputError
from uqa_ray.lab.config import LabConfig
from uqa_ray.raysetup import VERBOSE_ENV


def config_path(configs: Path, name: str) -> Path:
    path = Path(name)
    return path if path.suffix in (".yaml", ".yml") else configs / f"{name}.yaml"


def main(script: str, doc: str, argv: list[str] | None = None) -> int:
    """`script` is the experiment's `__file__`: its name is the experiment, its presets live in
    `experiments/configs/<name>/*.yaml` beside it."""
    experiment = Path(script).stem
    configs = Path(script).resolve().parent / "configs" / experiment
    # analysis/ is a top-level folder of the repo (not an installed package): make it importable from
    # the script's repo, also under `ray job submit --working-dir .`.
    sys.path.insert(0, str(Path(script).resolve().parents[1]))
    p = argparse.ArgumentParser(prog=f"experiments/{experiment}.py", description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    presets = sorted(f.stem for f in configs.glob("*.yaml"))
    p.add_argument("--config", default="local", help=f"a preset ({', '.join(presets)}) or a YAML file")
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="LabConfig overrides, e.g. workdir=/mnt/shared/lab pretrain.scaling.num_workers=8")
    p.add_argument("--workdir", help="where every stage writes (default: lab/ in the current folder)")
    p.add_argument("--verbose", action="store_true", help="Ray's own console lines too: Ray Train's and Ray "
                   "Data's INFO lines, progress bars, Tune's status tables (UQA_VERBOSE=1)")
    args = p.parse_args(argv)
    if args.verbose:
        os.environ[VERBOSE_ENV] = "1"  # read when Ray starts (raysetup.py), inherited by its workers
    try:
        over = load_yaml(config_path(configs, args.config))
        extra = parse_dotted(args.set)
        if args.workdir:
            extra["workdir"] = args.workdir
        cfg = build(LabConfig, {"experiment": experiment}, over, extra)
        from uqa_ray.lab.pipeline import run

        summary = run(cfg)
    except (InputError, ConfigError) as e:
        print(f"{experiment}: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(json.dumps({k: v for k, v in summary.items() if k not in ("analysis", "gaps")}), flush=True)
    return EXIT_INCOMPLETE if summary["gaps"] else 0
