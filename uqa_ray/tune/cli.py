"""`uqa-ray tune`: align + evaluate a grid as Ray Tune trials; one record per trial; reruns restore.

    uqa-ray tune --experiment table4 --data data --config grid.yaml \\
        --set "encoders=[{dir: runs/pretrain/<run>/encoder}]" adapters=[mean_pool,qformer] align_preset=embedded

Keys of --set / the YAML file are the fields of `GridSpec` (tune/grid.py), dotted for nested ones
(e.g. `align.max_steps=300`, `instruct.steps=800`, `resources.CPU=2`). Records go to
`<results>/<experiment>/<trial-id>.json`; rerunning the same command after an interruption restores
the experiment and runs only the trials without a record. Prints one line per record.
"""
from __future__ import annotations

import argparse

from uqa_ray.config import build, load_yaml, parse_dotted
from uqa_ray.io import EXIT_INCOMPLETE


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--experiment", required=True, help="experiment name (records: <results>/<experiment>/)")
    p.add_argument("--data", required=True, help="prepared data folder with generated questions")
    p.add_argument("--config", default=None, help="YAML file of GridSpec fields")
    p.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="GridSpec overrides, dotted keys")
    p.add_argument("--results", default="results", help="results root (default: results)")
    p.add_argument("--storage", default="runs/tune", help="Tune experiments, cached LLM and alignments")
    p.add_argument("--stop-after", type=int, default=0, help="end this run after N finished trials (0 = all)")


def run(args: argparse.Namespace) -> int:
    from uqa_ray.tune.grid import GridSpec, run_grid

    spec = build(GridSpec, load_yaml(args.config) if args.config else None, parse_dotted(args.set))
    records, missing = run_grid(args.experiment, spec, args.data, args.results, args.storage, args.stop_after)
    for r in records:
        s = r["scores"]
        acc = " ".join(f"{k}={v['overall']['acc']:.2f}" for k, v in s.items()) or r["reason"]
        print(f"{r['trial_id']:<28} {r['status']:<9} prompt_tokens={r['prompt_tokens'] or 0:.0f} {acc}")
    for m in missing:
        print(f"{m['trial_id']:<28} {'missing':<9} {m['reason']} (log: {m['log']})")
    return 0 if all(r["status"] == "ok" for r in records) and not missing else EXIT_INCOMPLETE
