"""The UQABench paper's tables 2–7 as data (Liu et al., KDD 2025, arXiv 2502.19178; Qwen2.5-3B-Instruct).

Overall / Avg. values are those quoted in shared/UQABENCH.md §6. The per-group columns of tables 3–6
and the per-sub-task columns of table 2 are transcribed from the same paper's tables (the text in
shared/seeds/), so the paper's lines can be drawn per group as in its figure 3. Paper mode turns a
table into the same flat frame as `analysis.records.load_records`, so fits, plots and tables treat the
paper's numbers and ours identically. The paper reports no n and no CIs: those columns are NaN.
"""
from __future__ import annotations

import math
from typing import Any

import pandas as pd

from analysis.records import GROUPS, META_COLUMNS, SCORE_KEYS, col

SU, ACP, INP = GROUPS

DISPLAY = {
    "text20": "Text20", "text50": "Text50", "gru4rec": "GRU4Rec", "sasrec": "SASRec",
    "mamba4rec": "Mamba4Rec", "hstu": "HSTU", "trm_pp": "Trm++",
}

# Table 2: method, DF, MF, SU avg, IP, AP, action avg, LI, SI, IT, interest avg, overall.
_T2 = [
    ("text20", 38.25, 28.91, 37.52, 44.81, 40.58, 42.45, 63.82, 79.96, 62.79, 71.10, 53.02),
    ("text50", 44.22, 32.03, 43.27, 45.58, 38.04, 41.39, 79.27, 89.80, 79.63, 84.29, 59.32),
    ("gru4rec", 33.67, 23.44, 32.86, 34.94, 30.02, 32.20, 46.98, 41.33, 45.56, 43.97, 37.15),
    ("sasrec", 40.41, 24.22, 39.14, 42.49, 35.27, 38.47, 59.20, 53.32, 56.39, 55.72, 45.66),
    ("mamba4rec", 30.54, 18.75, 29.62, 34.25, 28.10, 30.83, 38.82, 34.69, 35.64, 36.06, 32.69),
    ("hstu", 43.29, 25.00, 41.86, 47.30, 36.53, 41.31, 70.85, 60.06, 65.67, 64.45, 50.88),
    ("trm_pp", 47.28, 27.34, 45.72, 48.67, 37.35, 42.38, 75.25, 64.14, 70.10, 68.71, 53.88),
]
_T2_KEYS = ("DF", "MF", SU, "IP", "AP", ACP, "LI", "SI", "IT", INP, "overall")

# Table 3 (pretraining ablation): training (SL = cross-entropy, CL = InfoNCE), inputs, SU, AP, IP, avg.
_T3 = [
    ("ce", "full", 45.72, 42.38, 68.71, 53.88), ("ce", "no_text", 42.08, 39.27, 66.84, 51.16),
    ("ce", "no_side", 39.55, 37.83, 61.47, 47.87), ("infonce", "full", 42.41, 39.25, 62.37, 49.40),
    ("infonce", "no_text", 37.06, 35.35, 58.02, 44.99), ("infonce", "no_side", 36.50, 32.84, 51.96, 41.47),
]
# Table 4 (alignment ablation): adapter, strategy (full = LLM + adapter fine-tuned), SU, AP, IP, avg.
_T4 = [
    ("mean_pool", "full", 43.70, 38.83, 72.70, 53.75), ("mean_pool", "adapter", 45.72, 42.38, 68.71, 53.88),
    ("qformer", "full", 45.35, 44.37, 69.89, 55.00), ("qformer", "adapter", 31.15, 29.92, 31.80, 30.96),
]
# Table 5 (Trm++ size): preset label, dense params (the paper's rounded label), (layers, d, heads), SU, AP, IP, avg.
_T5 = [
    ("3.2M", 3.2e6, (4, 256, 4), 39.00, 34.74, 58.16, 45.26),
    ("13M", 13e6, (4, 512, 8), 38.62, 37.08, 67.55, 49.86),
    ("25M", 25e6, (8, 512, 8), 45.72, 42.38, 68.71, 53.88),
    ("57M", 57e6, (8, 768, 12), 45.29, 42.15, 74.74, 56.16),
    ("85M", 85e6, (12, 768, 12), 47.12, 44.32, 76.48, 58.08),
    ("303M", 303e6, (24, 1024, 8), 50.43, 46.65, 77.30, 60.01),
    ("680M", 680e6, (24, 1536, 12), 52.20, 48.67, 83.74, 63.78),
    ("1.2B", 1.2e9, (24, 2048, 16), 53.98, 49.16, 84.97, 64.86),
]
# Table 6 (pretraining max sequence length): length, SU, AP, IP, avg.
_T6 = [
    (32, 27.78, 30.83, 38.79, 33.38), (64, 37.21, 35.67, 53.75, 43.40), (128, 40.88, 38.64, 63.97, 49.49),
    (256, 42.41, 41.23, 69.33, 52.96), (512, 45.72, 42.38, 68.71, 53.88),
]
# Table 7 (efficiency): method, adapter, avg score, avg prompt tokens.
_T7 = [
    ("text20", None, 53.02, 1171.23), ("text50", None, 59.32, 2498.19),
    ("trm_pp", "mean_pool", 53.88, 133.28), ("trm_pp", "qformer", 55.00, 148.28),
]

TITLES = {
    2: "Overall comparison",  # the paper section of each table names its LLM; ours can be any
    3: "Pretraining ablation (Trm++)",
    4: "Alignment ablation (Trm++)",
    5: "Scaling the encoder size (Trm++)",
    6: "Scaling the pretraining sequence length (Trm++)",
    7: "Efficiency: average prompt tokens vs score",
}

# The paper's default setting (Trm++ 25M, full inputs, CE, mean-pool adapter, max length 512).
_DEFAULT = {"method": "trm_pp", "encoder": "trm_pp", "preset": "25M", "params_dense": 25e6,
            "max_len": 512, "input_mode": "full", "loss": "ce", "adapter": "mean_pool",
            "strategy": "adapter"}


def _groups(su: float, ap: float, ip: float, avg: float) -> dict[str, float]:
    return {SU: su, ACP: ap, INP: ip, "overall": avg}


def _method(m: str, adapter: str | None = "mean_pool") -> dict[str, Any]:
    """Setting of one method: text baselines have no encoder, adapter or strategy."""
    if m.startswith("text"):
        return {**dict.fromkeys(_DEFAULT), "method": m}
    return {**_DEFAULT, "method": m, "encoder": m, "adapter": adapter}


def rows(table: int) -> list[dict[str, Any]]:
    """The paper's table as rows: metadata (as in records) + `scores` {key: acc}."""
    if table == 2:
        return [{**_method(m), "scores": dict(zip(_T2_KEYS, vals))} for m, *vals in _T2]
    if table == 3:
        return [{**_DEFAULT, "loss": loss, "input_mode": mode, "scores": _groups(*v)} for loss, mode, *v in _T3]
    if table == 4:
        return [{**_DEFAULT, "adapter": a, "strategy": s, "scores": _groups(*v)} for a, s, *v in _T4]
    if table == 5:
        return [{**_DEFAULT, "preset": p, "params_dense": n, "arch": arch, "scores": _groups(*v)}
                for p, n, arch, *v in _T5]
    if table == 6:
        return [{**_DEFAULT, "max_len": L, "scores": _groups(*v)} for L, *v in _T6]
    if table == 7:
        return [{**_method(m, a), "prompt_tokens": tok, "scores": {"overall": acc}} for m, a, acc, tok in _T7]
    raise ValueError(f"the paper has no table {table}; tables 2-7 are available")


def frame(table: int, scorer: str = "official") -> pd.DataFrame:
    """The paper's table in the flat record layout (status ok; n and CIs unknown -> NaN)."""
    out = []
    for i, r in enumerate(rows(table)):
        row: dict[str, Any] = {k: r.get(k) for k in META_COLUMNS}
        row.update(file=f"paper:table{table}", experiment=f"paper_table{table}",
                   trial_id=f"paper-t{table}-{i}", status="ok", seed=0)
        for key in SCORE_KEYS:
            acc = r["scores"].get(key, math.nan)
            row[col(scorer, key)] = acc
            for field in ("n", "correct", "lo", "hi"):
                row[col(scorer, key, field)] = math.nan
        out.append(row)
    return pd.DataFrame(out)
