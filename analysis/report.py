"""Fit, figure and table of one scaling experiment in one call (what an experiment script ends with).

    python -m analysis.report --results results/scale_model_size --x params --table 5 \\
        --out reports/scale_model_size --paper

Equivalent to `analysis.fit_scaling` (fit_<x>.json), `analysis.plots` (scaling_<x>.png/.svg, drawn
from that same fit) and `analysis.tables` (table<N>.md/.csv); prints one summary line.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if not __package__:  # run as a file (python analysis/x.py): the repo root holds `analysis`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analysis.scaling import X_SPECS, run_fit, summary
from analysis.records import SCORERS, load_records
from uqa_ray.config import ConfigError
from uqa_ray.io import InputError, write_json


def build_report(results: str | Path, out: str | Path, *, x: str = "params", table: int | None = None,
                 paper: bool = False, scorer: str = "official", method: str | None = None,
                 n_boot: int = 1000, seed: int = 0, trial_ids: list[str] | None = None,
                 missing: list[dict] | None = None) -> tuple[dict, list[Path]]:
    """Write fit, plot and table under `out`; returns (fit document, written paths). `trial_ids`: only
    those records of `results` (see records.load_records); `missing`: planned trials without one
    (fit_scaling.run_fit), marked in the fit, the figure and the table."""
    from analysis.plots import plot_fit  # matplotlib only here
    from analysis.tables import write_table

    doc = run_fit(results, x, paper_mode=paper, scorer=scorer, method=method, n_boot=n_boot, seed=seed,
                  trial_ids=trial_ids, missing=missing)
    fit_path = Path(out) / f"fit_{x}.json"
    write_json(fit_path, doc)
    paths = [fit_path, *plot_fit(doc, out, results=results)]
    table = X_SPECS[x].paper_table if table is None else table
    paths += write_table(load_records(results, trial_ids), table, out, scorer=scorer, with_paper=paper,
                         missing=missing)
    return doc, paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.report", description=__doc__.split("\n")[0])
    p.add_argument("--results", required=True, help="folder of result records (results/<experiment>)")
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument("--x", choices=sorted(X_SPECS), default="params")
    p.add_argument("--table", type=int, help="paper table to render (default: 5 for params, 6 for seq_len)")
    p.add_argument("--paper", action="store_true", help="draw and list the paper's numbers beside ours")
    p.add_argument("--scorer", choices=SCORERS, default="official")
    p.add_argument("--method", help="only records of this method")
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        doc, paths = build_report(args.results, args.out, x=args.x, table=args.table, paper=args.paper,
                                  scorer=args.scorer, method=args.method, n_boot=args.n_boot, seed=args.seed)
    except (InputError, ConfigError) as e:
        print(f"report: error: {e}", file=sys.stderr)
        return 2
    print(summary(doc) + " -> " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
