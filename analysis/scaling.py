"""The scaling fit as a library: what x can be (`X_SPECS`), which records a fit may use (`select`), the fit
document (`run_fit`) and its one-line summary. The command line is analysis/fit_scaling.py; the figure
analysis/plots.py. Records whose status is not `ok` are listed and excluded from the fits; records
without an encoder (text baselines, controls) have no x and are listed as such.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from analysis import paper
from analysis.aggregate import cell
from analysis.fitting import LOGLIN, POWER, FitError, fit_series
from analysis.records import GROUPS, SCORERS, col, excluded_summary, load_records
from uqa_ray.io import InputError

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
