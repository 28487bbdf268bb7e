"""Fit accuracy against encoder size (dense parameters) or pretraining sequence length.

    python -m analysis.fit_scaling --results results/scale_model_size --x params --out reports/scale_model_size
    python -m analysis.fit_scaling --paper --x params --out reports/paper          # the paper's table 5 alone

For each series (overall and the three task groups) it fits a saturating power law and a log-linear law
(see analysis/fitting.py), with seeded bootstrap CIs of the exponents, a bootstrap band of each curve and
an extrapolation check (fit without the largest x, predict it); analysis/scaling.py is the library,
this file the command line. `--paper` adds the paper's own table (5 for params, 6 for seq_len) fitted the same
way, so both can be drawn side by side. Beside the accuracy series, `ours` holds `pretrain` (the encoders'
own next-item HR@10 x 100 against the same x, one point per encoder, fitted the same way: did pretraining
itself scale?) and `controls` (every other method: no-embedding floor, random embedding, oracle, Text-k;
overall accuracy with its CI), which the plot draws as horizontal lines.
Output: `<out>/fit_<x>.json`, written atomically.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if not __package__:  # run as a file (python analysis/x.py): the repo root holds `analysis`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analysis.plots import plot_fit
from analysis.records import SCORERS
from analysis.scaling import X_SPECS, run_fit, summary
from uqa_ray.config import ConfigError
from uqa_ray.io import InputError, write_json


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", help="folder of result records (results/<experiment>)")
    p.add_argument("--x", choices=sorted(X_SPECS), default="params", help="what accuracy is fitted against")
    p.add_argument("--out", required=True, help="report folder; writes fit_<x>.json there")
    p.add_argument("--paper", action="store_true", help="also fit the paper's own table (5 or 6)")
    p.add_argument("--scorer", choices=SCORERS, default="official")
    p.add_argument("--method", help="only records of this method (needed if several encoders are present)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--plot", action="store_true", help="also draw the figure (PNG + SVG) from this fit")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.fit_scaling", description=__doc__.split("\n")[0])
    configure(p)
    args = p.parse_args(argv)
    try:
        doc = run_fit(args.results, args.x, paper_mode=args.paper, scorer=args.scorer, method=args.method,
                      n_boot=args.n_boot, seed=args.seed)
        for src in ("ours", "paper"):
            for w in doc.get(src, {}).get("warnings", []):
                print(f"fit_scaling: warning: {w}", file=sys.stderr)
        path = Path(args.out) / f"fit_{args.x}.json"
        write_json(path, doc)
        if args.plot:
            for f in plot_fit(doc, args.out, results=args.results):
                print(f"wrote {f}")
    except (InputError, ConfigError) as e:
        print(f"fit_scaling: error: {e}", file=sys.stderr)
        return 2
    print(summary(doc, path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
