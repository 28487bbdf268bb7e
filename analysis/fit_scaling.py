"""Fit accuracy against encoder size (dense parameters) or pretraining sequence length.

    python -m analysis.fit_scaling --results results/scale_model_size --x params --out reports/scale_model_size
    python -m analysis.fit_scaling --paper --x params --out reports/paper          # the paper's table 5 alone

For each series (overall and the three task groups) it fits a saturating power law and a log-linear law
(see analysis/fitting.py), with seeded bootstrap CIs of the exponents, a bootstrap band of each curve and
an extrapolation check (fit without the largest x, predict it). Records whose status is not `ok` are
listed and excluded from the fits; records without an encoder (text baselines, controls) have no x and
are listed as such. `--paper` adds the paper's own table (5 for params, 6 for seq_len) fitted the same
way, so both can be drawn side by side. Beside the accuracy series, `ours` holds `pretrain` (the encoders'
own next-item HR@10 x 100 against the same x, one point per encoder, fitted the same way: did pretraining
itself scale?) and `controls` (every other method: no-embedding floor, random embedding, oracle, Text-k;
overall accuracy with its CI), which the plot draws as horizontal lines.
Output: `<out>/fit_<x>.json`, written atomically.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

if not __package__:  # run as a file (python analysis/x.py): the repo root holds `analysis`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analysis import paper
from analysis.aggregate import cell
from analysis.fitting import LOGLIN, POWER, FitError, fit_series
from analysis.records import GROUPS, SCORERS, col, excluded_summary, load_records
from uqa_ray.config import ConfigError
from uqa_ray.io import InputError, write_json

SERIES = ("overall",) + GROUPS


@dataclass(frozen=True)
class XSpec:
    column: str      # record column holding x
    unit: float      # x is fitted as column / unit
    unit_name: str
    base: float      # log base of the log-linear law and of the plot axis
    label: str
    paper_table: int


X_SPECS = {
    "params": XSpec("params_dense", 1e6, "millions of dense parameters", 10.0,
                    "Encoder dense parameters", 5),
    "seq_len": XSpec("max_len", 1.0, "clicks", 2.0, "Pretraining max sequence length", 6),
}
# Controlled variables: if one varies among the fitted records, the curve mixes two effects.
_CONTROLLED = ("params_dense", "max_len", "input_mode", "loss", "adapter", "strategy")


def size_label(n: float) -> str:
    """3200000 -> '3.2M', 1.2e9 -> '1.2B' (the paper's way of naming sizes)."""
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.3g}{suffix}"
    return f"{n:.3g}"


def select(df: pd.DataFrame, x: str, scorer: str, method: str | None = None) -> tuple[pd.DataFrame, dict]:
    """The records a fit may use, and what was left out (and why)."""
    spec = X_SPECS[x]
    info: dict[str, Any] = {"n_records": int(len(df)), "excluded": excluded_summary(df), "warnings": []}
    ok = df[df["status"] == "ok"]
    no_x = ok[ok[spec.column].isna()]
    info["no_x"] = sorted(no_x["method"].unique().tolist())
    use = ok[ok[spec.column].notna()]
    if method is not None:
        use = use[use["method"] == method]
    methods = sorted(use["method"].unique().tolist())
    if len(methods) > 1:
        raise InputError(f"records of several methods {methods} have an x; pick one with --method")
    if col(scorer, "overall") not in use or use[col(scorer, "overall")].isna().all():
        have = [s for s in SCORERS if col(s, "overall") in df and df[col(s, "overall")].notna().any()]
        raise InputError(f"no usable record has scores.{scorer}; scorers present: {have or 'none'}")
    use = use[use[col(scorer, "overall")].notna()]
    for c in _CONTROLLED:
        if c != spec.column and use[c].nunique(dropna=False) > 1:
            info["warnings"].append(f"{c} varies among fitted records: {sorted(map(str, use[c].unique()))}")
    info["method"] = methods[0] if methods else method
    info["n_used"] = int(len(use))
    return use, info


def fit_frame(use: pd.DataFrame, x: str, scorer: str, *, n_boot: int, seed: int) -> dict[str, Any]:
    spec = X_SPECS[x]
    out = {}
    for key in SERIES:
        c = col(scorer, key)
        if c not in use:
            continue
        pts = use[[spec.column, c]].dropna()
        if pts.empty:
            continue
        try:
            out[key] = fit_series(pts[spec.column].to_numpy(float) / spec.unit, pts[c].to_numpy(float),
                                  base=spec.base, n_boot=n_boot, seed=seed)
        except FitError as e:
            out[key] = {"failed": str(e)}
    return out


def pretrain_series(use: pd.DataFrame, x: str, *, n_boot: int, seed: int) -> dict[str, Any] | None:
    """The encoders' pretraining HR@10 (x 100) against x, one point per distinct encoder (its records share it)."""
    spec, c = X_SPECS[x], "pretrain.HR@10"
    if c not in use or use[c].isna().all():
        return None
    pts = use[[spec.column, c]].dropna().drop_duplicates()
    try:
        return fit_series(pts[spec.column].to_numpy(float) / spec.unit, 100.0 * pts[c].to_numpy(float),
                          base=spec.base, n_boot=n_boot, seed=seed)
    except FitError as e:
        return {"failed": str(e)}


def controls(df: pd.DataFrame, fitted: str | None, scorer: str) -> dict[str, dict[str, float]]:
    """Overall accuracy and CI of every other ok method: those without an x, and the random-embedding
    control (which has its encoder's x); mean and t-interval when a method has several records."""
    ok = df[(df["status"] == "ok") & (df["method"] != fitted)]
    return {m: cell(g, scorer, "overall") for m, g in ok.groupby("method")}


def run_fit(results: str | Path | None, x: str, *, paper_mode: bool = False, scorer: str = "official",
            method: str | None = None, n_boot: int = 1000, seed: int = 0,
            trial_ids: list[str] | None = None, missing: list[dict] | None = None) -> dict[str, Any]:
    """The fit document (ours and/or the paper's); nothing is written. `trial_ids`: fit only those
    records of `results` (see records.load_records). `missing`: planned trials the run has no record for
    (the lab's honest end: each {trial_id, method, reason, log}), listed in the document and its summary."""
    if results is None and not paper_mode:
        raise InputError("give --results and/or --paper")
    spec = X_SPECS[x]
    doc: dict[str, Any] = {
        "x": x, "x_column": spec.column, "x_unit": spec.unit, "x_unit_name": spec.unit_name,
        "log_base": spec.base, "scorer": scorer,
        "models": {POWER: f"acc = c - a * x^(-b), x = {spec.column} / {spec.unit:g}, 0 <= c <= 100, a >= 0",
                   LOGLIN: f"acc = alpha + beta * log{spec.base:g}(x)"},
    }
    if results is not None:
        df = load_records(results, trial_ids)
        use, info = select(df, x, scorer, method)
        if info["n_used"] == 0:
            raise InputError(f"{results}: no ok record with an encoder to fit against {x}")
        doc["ours"] = {"source": str(results), **info,
                       **({"trial_ids": sorted(trial_ids)} if trial_ids is not None else {}),
                       "missing": [{k: m[k] for k in ("trial_id", "method", "reason", "log")} for m in missing or ()],
                       "series": fit_frame(use, x, scorer, n_boot=n_boot, seed=seed),
                       "pretrain": pretrain_series(use, x, n_boot=n_boot, seed=seed),
                       "controls": controls(df, info["method"], scorer)}
    if paper_mode:
        pdf = paper.frame(spec.paper_table)
        doc["paper"] = {"source": f"paper table {spec.paper_table}", "method": "trm_pp",
                        "n_records": len(pdf), "n_used": len(pdf), "excluded": [], "no_x": [], "warnings": [],
                        "series": fit_frame(pdf, x, "official", n_boot=n_boot, seed=seed)}
    return doc


def summary(doc: dict[str, Any], path: Path | None = None) -> str:
    """One line: the headline (overall) numbers of each source."""
    parts = []
    for src in ("ours", "paper"):
        if src not in doc:
            continue
        s = doc[src]["series"].get("overall", {})
        pl, ll, ex = s.get(POWER, {}), s.get(LOGLIN, {}), s.get("extrapolation", {})
        txt = f"{src}:"
        if "params" in pl:
            ci = pl["ci95"]["b"] if pl.get("ci95") else None
            txt += f" power b={pl['params']['b']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
            txt += f" R2={pl['r2']:.3f};"
        if "params" in ll:
            txt += f" log-linear slope={ll['params']['beta']:.2f}/log{doc['log_base']:g} R2={ll['r2']:.3f};"
        errs = [f"{name} err {ex[m]['error']:+.2f}" for m, name in ((POWER, "power"), (LOGLIN, "log-linear"))
                if "error" in ex.get(m, {})]
        if errs:
            txt += f" extrapolation to x={ex['held_out_x']:g}: " + ", ".join(errs) + ";"
        if src == "ours":
            txt += f" {doc[src]['n_used']} records fitted, {len(doc[src]['excluded'])} excluded"
            if doc[src].get("missing"):
                txt += f", {len(doc[src]['missing'])} planned trial(s) MISSING (no record)"
        parts.append(txt.rstrip(";"))
    where = f" -> {path}" if path else ""
    return f"fit_scaling {doc['x']} ({doc['scorer']}): " + " | ".join(parts) + where


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
            from analysis.plots import plot_fit  # matplotlib only when asked
            for f in plot_fit(doc, args.out, results=args.results):
                print(f"wrote {f}")
    except (InputError, ConfigError) as e:
        print(f"fit_scaling: error: {e}", file=sys.stderr)
        return 2
    print(summary(doc, path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
