"""Figure-3-style plots: accuracy against encoder size (log10 x) or sequence length (log2 x).

    python -m analysis.plots --results results/scale_model_size --x params --out reports/scale_model_size --paper

One colour per series (overall and the three task groups), markers at the measured points with
per-point 95% CI bars (the scorer's CI, or over seeds), the fitted curve and its 95% bootstrap band.
The controls of the same run (methods without an x: no-embedding floor, random embedding, oracle, Text-k)
are horizontal lines with their CI as a band. The paper's numbers (when the fit holds them, `--paper`)
are drawn beside ours as hollow markers and dashed curves. When the records carry the encoders'
pretraining metrics, a second panel shows pretraining HR@10 against the same x with its own fit.
Writes `<out>/scaling_<x>.png` and `.svg` atomically.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on cluster nodes or CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: E402

if not __package__:  # run as a file (python analysis/x.py): the repo root holds `analysis`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analysis.aggregate import aggregate  # noqa: E402
from analysis.paper import DISPLAY  # noqa: E402
from analysis.scaling import SERIES, X_SPECS, run_fit, select, size_label  # noqa: E402
from analysis.fitting import LOGLIN, POWER  # noqa: E402
from analysis.records import SCORERS, load_records  # noqa: E402
from uqa_ray.config import ConfigError  # noqa: E402
from uqa_ray.io import InputError, atomic_path  # noqa: E402

STYLE = {  # series -> (label, colour, marker)
    "overall": ("Overall", "black", "o"),
    "sequence_understanding": ("Sequence understanding", "tab:blue", "s"),
    "action_prediction": ("Action prediction", "tab:orange", "^"),
    "interest_perception": ("Interest perception", "tab:green", "D"),
}
CONTROLS = {  # method -> (label, colour, line style)
    "no_embedding": ("No embedding (floor)", "tab:gray", ":"),
    "random_embedding": ("Random embedding", "tab:purple", ":"),
    "oracle": ("Oracle", "goldenrod", "-."),
    "text20": ("Text20", "tab:brown", "--"),
    "text50": ("Text50", "tab:pink", "--"),
}
TITLES = {"params": "Accuracy vs encoder size", "seq_len": "Accuracy vs pretraining sequence length"}


def _point_cis(results: str | Path | None, doc: dict[str, Any]) -> dict[str, Any] | None:
    """Per-x means and CIs of our records (for error bars), from the records the fit used."""
    if results is None or "ours" not in doc:
        return None
    spec = X_SPECS[doc["x"]]
    use, _ = select(load_records(results, doc["ours"].get("trial_ids")), doc["x"], doc["scorer"],
                    doc["ours"].get("method"))
    table = aggregate(use, [spec.column], doc["scorer"], keys=SERIES)
    table = table.sort_values(spec.column)
    table["x"] = table[spec.column].astype(float) / spec.unit
    return {"table": table}


def _draw(ax, src: dict[str, Any], *, primary: bool, model: str, cis: dict | None, tag: str) -> list:
    handles = []
    for key in SERIES:
        s = src["series"].get(key)
        if not s or "points" not in s:
            continue
        label, colour, marker = STYLE[key]
        px, py = np.asarray(s["points"]["x"]), np.asarray(s["points"]["mean"])
        fit = s.get(model) if "params" in s.get(model, {}) else s.get(LOGLIN if model == POWER else POWER)
        grid = np.asarray(s["grid"])
        lw = 2.0 if key == "overall" else 1.4
        if primary:
            if cis is not None:
                t = cis["table"]
                yerr = np.vstack([t[key] - t[f"{key}_lo"], t[f"{key}_hi"] - t[key]])
                ax.errorbar(t["x"], t[key], yerr=np.where(np.isfinite(yerr), yerr, 0), fmt="none",
                            ecolor=colour, elinewidth=1, capsize=3, alpha=0.8, zorder=3)
            ax.plot(px, py, marker, color=colour, ms=6, zorder=4)
            if fit and "params" in fit:
                ax.plot(grid, fit["curve"]["fit"], "-", color=colour, lw=lw, zorder=2)
                if fit["curve"]["lo"] is not None:
                    ax.fill_between(grid, fit["curve"]["lo"], fit["curve"]["hi"], color=colour, alpha=0.15,
                                    lw=0, zorder=1)
        else:
            ax.plot(px, py, marker, mfc="white", mec=colour, color=colour, ms=6, zorder=4)
            if fit and "params" in fit:
                ax.plot(grid, fit["curve"]["fit"], "--", color=colour, lw=lw * 0.8, zorder=2)
        r2 = f", R²={fit['r2']:.2f}" if fit and "r2" in fit else ""
        handles.append(Line2D([], [], color=colour, marker=marker, ls="-" if primary else "--",
                              mfc=colour if primary else "white", label=f"{label} ({tag}{r2})"))
    return handles


def _draw_controls(ax, controls: dict[str, dict[str, float]]) -> list:
    handles = []
    for method, c in sorted(controls.items(), key=lambda kv: -kv[1]["acc"]):
        label, colour, ls = CONTROLS.get(method, (DISPLAY.get(method, method), "tab:olive", ":"))
        ax.axhline(c["acc"], color=colour, ls=ls, lw=1.3, zorder=1)
        if np.isfinite(c["lo"]) and np.isfinite(c["hi"]):
            ax.axhspan(c["lo"], c["hi"], color=colour, alpha=0.10, lw=0, zorder=0)
        handles.append(Line2D([], [], color=colour, ls=ls, label=f"{label}: {c['acc']:.1f}%"))
    return handles


def _draw_pretrain(ax, s: dict[str, Any], model: str, spec) -> None:
    """Panel 2: the encoders' own next-item HR@10 (x 100) against the same x, with its fit."""
    px, py = np.asarray(s["points"]["x"]), np.asarray(s["points"]["mean"])
    ax.plot(px, py, "o", color="tab:red", ms=6, zorder=4)
    fit = s.get(model) if "params" in s.get(model, {}) else s.get(LOGLIN if model == POWER else POWER)
    r2 = ""
    if fit and "params" in fit:
        grid = np.asarray(s["grid"])
        ax.plot(grid, fit["curve"]["fit"], "-", color="tab:red", lw=1.6, zorder=2)
        if fit["curve"]["lo"] is not None:
            ax.fill_between(grid, fit["curve"]["lo"], fit["curve"]["hi"], color="tab:red", alpha=0.15, lw=0)
        r2 = f", R²={fit['r2']:.2f}"
    ax.set_xscale("log", base=spec.base)
    ax.set_ylabel("Pretraining HR@10 (%), eval users' last click")
    ax.set_title(f"Next-item pretraining metric{r2}", fontsize=11)
    ax.grid(True, which="major", alpha=0.3)


def plot_fit(doc: dict[str, Any], out: str | Path, *, results: str | Path | None = None,
             model: str = POWER) -> list[Path]:
    """Draw a fit document (from `run_fit`) to `<out>/scaling_<x>.png|svg`; returns the paths."""
    x = doc["x"]
    spec = X_SPECS[x]
    cis = _point_cis(results, doc)
    pre = doc.get("ours", {}).get("pretrain")
    pre = pre if pre and "points" in pre else None
    if pre:
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(15.0, 5.0), gridspec_kw={"width_ratios": [3, 2]})
    else:
        fig, ax = plt.subplots(figsize=(10.0, 5.0))
        ax2 = None
    handles = []
    if "ours" in doc:
        handles += _draw(ax, doc["ours"], primary=True, model=model, cis=cis, tag="ours")
        handles += _draw_controls(ax, doc["ours"].get("controls", {}))
    if "paper" in doc:
        handles += _draw(ax, doc["paper"], primary="ours" not in doc, model=model, cis=None, tag="paper")
    if not handles:
        raise InputError("the fit holds no series to draw")
    ax.set_xscale("log", base=spec.base)
    if x == "params":
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: size_label(v * spec.unit)))
        ax.set_xlabel("Encoder dense parameters (log scale)")
    else:
        xs = sorted({v for src in ("ours", "paper") if src in doc
                     for s in doc[src]["series"].values() if "points" in s for v in s["points"]["x"]})
        ax.set_xticks(xs)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g}"))
        ax.set_xlabel("Pretraining max sequence length (log₂ scale)")
    ax.xaxis.set_minor_formatter(NullFormatter())
    if ax2 is not None:
        _draw_pretrain(ax2, pre, model, spec)
        ax2.xaxis.set_major_formatter(ax.xaxis.get_major_formatter())
        ax2.xaxis.set_minor_formatter(NullFormatter())
        ax2.set_xlabel(ax.get_xlabel())
    ax.set_ylabel(f"Accuracy (%), {doc['scorer']} scorer")
    who = doc.get("ours", doc.get("paper", {})).get("method") or ""
    who = DISPLAY.get(who, who)
    gap = len(doc.get("ours", {}).get("missing", []))
    ax.set_title(f"{TITLES[x]}{' (' + who + ')' if who else ''}\n"
                 f"{'power-law' if model == POWER else 'log-linear'} fit with 95% bootstrap band"
                 + (f"\nINCOMPLETE: {gap} planned trial(s) missing, see fit_{x}.json" if gap else ""),
                 fontsize=11, **({"color": "firebrick"} if gap else {}))
    ax.grid(True, which="major", alpha=0.3)
    handles.append(Patch(color="grey", alpha=0.25, label="95% bootstrap band of the fit"))
    # outside the axes: with eight series and bands, any inside spot hides points
    if ax2 is None:
        ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        fig.tight_layout()
    else:  # below both panels
        fig.tight_layout(rect=(0, 0.2, 1, 1))
        fig.legend(handles=handles, fontsize=8, loc="lower center", ncol=3, frameon=False)
    out = Path(out)
    paths = []
    for fmt in ("png", "svg"):
        path = out / f"scaling_{x}.{fmt}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=150)
        paths.append(path)
    plt.close(fig)
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.plots", description=__doc__.split("\n")[0])
    p.add_argument("--results", help="folder of result records (results/<experiment>)")
    p.add_argument("--x", choices=sorted(X_SPECS), default="params")
    p.add_argument("--out", required=True, help="report folder; writes scaling_<x>.png and .svg")
    p.add_argument("--paper", action="store_true", help="draw the paper's numbers beside ours")
    p.add_argument("--fit", help="reuse this fit JSON (from analysis.fit_scaling) instead of refitting")
    p.add_argument("--model", choices=(POWER, LOGLIN), default=POWER, help="which fitted curve to draw")
    p.add_argument("--scorer", choices=SCORERS, default="official")
    p.add_argument("--method", help="only records of this method")
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        if args.fit:
            try:
                doc = json.loads(Path(args.fit).read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise InputError(f"cannot read fit {args.fit}: {e}") from e
        else:
            doc = run_fit(args.results, args.x, paper_mode=args.paper, scorer=args.scorer,
                          method=args.method, n_boot=args.n_boot, seed=args.seed)
        paths = plot_fit(doc, args.out, results=args.results, model=args.model)
    except (InputError, ConfigError) as e:
        print(f"plots: error: {e}", file=sys.stderr)
        return 2
    print(f"plots: {doc['x']} ({doc['scorer']}): " + ", ".join(map(str, paths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
