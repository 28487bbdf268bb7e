"""Aggregate records into table rows / plot points: one row per setting, over seeds.

A cell is the record's own accuracy and scorer CI (ci95) when one `ok` record has that setting, and the
mean over k seeds with a t-interval (mean ± t₀.₉₇₅,k−1 · sd/√k, seed-to-seed variation) when several
do. Records that are not `ok` are never averaged in; a setting with none `ok` keeps its row with the
status and reason, so a diverged trial shows in the table instead of disappearing.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np
import pandas as pd
from scipy import stats

from analysis.records import SCORE_KEYS, col


def cell(ok: pd.DataFrame, scorer: str, key: str) -> dict[str, float]:
    """acc / lo / hi / n for one score key over the ok records of one setting."""
    c = col(scorer, key)
    nan = {"acc": math.nan, "lo": math.nan, "hi": math.nan, "n": math.nan}
    if c not in ok:
        return nan
    sub = ok[ok[c].notna()]
    k = len(sub)
    if k == 0:
        return nan
    n_col = col(scorer, key, "n")
    n = float(sub[n_col].sum()) if n_col in sub and sub[n_col].notna().all() else math.nan
    if k == 1:
        r = sub.iloc[0]
        return {"acc": float(r[c]), "lo": float(r.get(col(scorer, key, "lo"), math.nan)),
                "hi": float(r.get(col(scorer, key, "hi"), math.nan)), "n": n}
    v = sub[c].to_numpy(float)
    half = float(stats.t.ppf(0.975, k - 1) * v.std(ddof=1) / math.sqrt(k))
    return {"acc": float(v.mean()), "lo": float(v.mean() - half), "hi": float(v.mean() + half), "n": n}


def _status(group: pd.DataFrame) -> tuple[str, str | None]:
    counts = group["status"].value_counts()
    if set(counts.index) == {"ok"}:
        return "ok", None
    text = ", ".join(f"{int(counts[s])} {s}" for s in ("ok", "diverged", "failed") if s in counts)
    reasons = sorted({str(r) for r in group.loc[group["status"] != "ok", "reason"] if r})
    return text, "; ".join(reasons) or None


def aggregate(df: pd.DataFrame, by: Iterable[str], scorer: str,
              keys: Iterable[str] = SCORE_KEYS) -> pd.DataFrame:
    """One row per distinct value of `by` with `<key>`, `<key>_lo`, `<key>_hi`, `<key>_n` columns,
    `k` (ok records averaged), `status`, `reason` and `prompt_tokens` (mean over ok records)."""
    by = list(by)
    rows: list[dict[str, Any]] = []
    for values, group in df.groupby(by, dropna=False, sort=False):
        values = values if isinstance(values, tuple) else (values,)
        row: dict[str, Any] = {b: (None if (isinstance(v, float) and math.isnan(v)) else v)
                               for b, v in zip(by, values)}
        ok = group[group["status"] == "ok"]
        for key in keys:
            c = cell(ok, scorer, key)
            row.update({key: c["acc"], f"{key}_lo": c["lo"], f"{key}_hi": c["hi"], f"{key}_n": c["n"]})
        pt = ok["prompt_tokens"].dropna() if "prompt_tokens" in ok else pd.Series(dtype=float)
        row["prompt_tokens"] = float(pt.astype(float).mean()) if len(pt) else math.nan
        row["k"] = int(len(ok))
        row["status"], row["reason"] = _status(group)
        rows.append(row)
    return pd.DataFrame(rows)


def has_values(table: pd.DataFrame, key: str) -> bool:
    return key in table and bool(np.isfinite(table[key].to_numpy(float)).any())
