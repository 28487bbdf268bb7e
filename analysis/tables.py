"""Paper-style tables 2–7 (Markdown and CSV) from result records, optionally beside the paper's rows.

    python -m analysis.tables --results results/scale_model_size --table 5 --out reports/scale_model_size
    python -m analysis.tables --results results/compare_encoders --table 2 --out reports/x --paper

Rows are the settings the paper's table varies (methods, ablation cells, sizes, lengths); columns are
the sub-tasks, the three task groups and overall (micro averages, as the official scorer computes them).
A cell is one record's accuracy with its scorer CI, or the mean over seeds with a t-interval
(analysis/aggregate.py). Settings whose trials diverged or failed keep their row with the status.
Writes `<out>/table<N>.md` and `<out>/table<N>.csv` atomically.
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

if not __package__:  # run as a file (python analysis/x.py): the repo root holds `analysis`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analysis import paper
from analysis.aggregate import aggregate
from analysis.scaling import size_label
from analysis.records import GROUPS, SCORERS, load_records
from uqa_ray.align.registry import ADAPTERS
from uqa_ray.config import ConfigError
from uqa_ray.io import InputError, atomic_path
from uqa_ray.vocab import INPUT_MODES, LOSS_KINDS, STRATEGIES

VOCABULARIES = {"loss": LOSS_KINDS, "input_mode": INPUT_MODES, "strategy": STRATEGIES}  # record column -> registry

SU, ACP, INP = GROUPS
# Paper table 2's column order: each group's sub-tasks, then its average; overall last.
SCORE_COLUMNS = ("DF", "MF", SU, "IP", "AP", ACP, "LI", "SI", "IT", INP, "overall")
HEADERS = {SU: "SeqU", ACP: "ActP", INP: "IntP", "overall": "Overall"}
LEGEND = ("SeqU / ActP / IntP = the task groups sequence understanding, action prediction, interest "
          "perception (the paper's SU / AP / IP columns); groups and overall are micro averages. "
          "Cells: accuracy % [95% CI] - the scorer's CI for one record, mean ± t-interval over k seeds "
          "otherwise; n = overall questions scored.")
# Category orders follow the paper's row order; unknown values sort last, alphabetically.
ORDER = {
    "method": ("text20", "text50", "gru4rec", "sasrec", "mamba4rec", "hstu", "trm_pp",
               "no_embedding", "random_embedding", "oracle"),
    **{k: tuple(v) for k, v in VOCABULARIES.items()},
}
LABELS = {
    **VOCABULARIES,
    "method": paper.DISPLAY,
}


@dataclass(frozen=True)
class TableSpec:
    rows: tuple[str, ...]          # record columns identifying a row
    needs_encoder: bool            # rows only make sense for encoder records
    scores: tuple[str, ...] = SCORE_COLUMNS
    tokens: bool = False           # add the average prompt tokens (table 7)


TABLES = {
    2: TableSpec(("method",), False),
    3: TableSpec(("loss", "input_mode"), True),
    4: TableSpec(("adapter", "strategy"), True),
    5: TableSpec(("preset", "params_dense"), True),
    6: TableSpec(("max_len",), True),
    7: TableSpec(("method", "adapter"), False, ("overall",), tokens=True),
}


def _order(column: str) -> tuple[str, ...] | None:
    """Row order of a category column; adapters in the registry's order, read now (a registered plug-in
    included)."""
    return tuple(ADAPTERS) if column == "adapter" else ORDER.get(column)


def _labels(column: str) -> dict[str, str]:
    return {n: e.label for n, e in ADAPTERS.items()} if column == "adapter" else LABELS.get(column, {})


def _sort_key(column: str):
    order = _order(column)

    def key(s: pd.Series) -> pd.Series:
        if order is None:
            return pd.to_numeric(s, errors="coerce")
        unknown = sorted({str(v) for v in s if v not in order})
        return s.map(lambda v: order.index(v) if v in order else len(order) + unknown.index(str(v)))
    return key


def build(df: pd.DataFrame, table: int, scorer: str) -> tuple[pd.DataFrame, list[str]]:
    """Aggregated rows of one table and notes on records left out."""
    spec = TABLES[table]
    notes = []
    if spec.needs_encoder:
        no_enc = df[df["encoder"].isna()]
        if len(no_enc):
            notes.append(f"{len(no_enc)} record(s) without an encoder left out: "
                         + ", ".join(sorted(no_enc["method"].unique())))
        # The random control carries its encoder's settings but measures no encoder: pooled into that
        # encoder's row it would halve the row's accuracy gain and double its n.
        control = df[df["encoder"].notna() & (df["method"] == "random_embedding")]
        if len(control):
            notes.append(f"{len(control)} random-embedding control record(s) left out of the encoder rows")
        df = df[df["encoder"].notna() & (df["method"] != "random_embedding")]
    if df.empty:
        raise InputError(f"no record fits table {table}")
    agg = aggregate(df, spec.rows, scorer, keys=spec.scores)
    for c in reversed(spec.rows):
        agg = agg.sort_values(c, key=_sort_key(c), kind="stable")
    return agg.reset_index(drop=True), notes


def _fmt_row_value(column: str, v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if column == "params_dense":
        return size_label(float(v))
    if column == "max_len":
        return str(int(v))
    return _labels(column).get(v, str(v))


def _fmt_cell(row: pd.Series, key: str) -> str:
    acc = row[key]
    if isinstance(acc, float) and math.isnan(acc):
        return "-"  # not scored, or no ok trial (the status column says which)
    lo, hi = row[f"{key}_lo"], row[f"{key}_hi"]
    return f"{acc:.2f}" + ("" if math.isnan(lo) or math.isnan(hi) else f" [{lo:.2f}, {hi:.2f}]")


def markdown(agg: pd.DataFrame, table: int, title: str) -> str:
    spec = TABLES[table]
    keys = [k for k in spec.scores if agg[k].notna().any()] or list(spec.scores)
    head = ([{"params_dense": "params"}.get(c, c.replace("_", " ")) for c in spec.rows]
            + [HEADERS.get(k, k) for k in keys])
    head += (["Avg. tokens"] if spec.tokens else []) + ["n", "k", "status"]
    lines = [f"**{title}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in agg.iterrows():
        cells = [_fmt_row_value(c, r[c]) for c in spec.rows] + [_fmt_cell(r, k) for k in keys]
        if spec.tokens:
            cells.append("-" if math.isnan(r["prompt_tokens"]) else f"{r['prompt_tokens']:.2f}")
        n = r["overall_n"]
        status = r["status"] + (f" ({r['reason']})" if isinstance(r["reason"], str) else "")
        cells += ["-" if math.isnan(n) else str(int(n)), str(r["k"]), status]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_table(df: pd.DataFrame | None, table: int, out: str | Path, *, scorer: str = "official",
                with_paper: bool = False, missing: list[dict] | None = None) -> list[Path]:
    """Render table N from records (and/or the paper) to Markdown + CSV under `out`; `missing` planned
    trials (fit_scaling.run_fit) are named under the table."""
    if table not in TABLES:
        raise InputError(f"no table {table}; tables {sorted(TABLES)} exist")
    parts, csvs, notes = [f"# Table {table}: {paper.TITLES[table]}", ""], [], []
    if df is not None:
        agg, notes = build(df, table, scorer)
        parts.append(markdown(agg, table, f"Ours ({scorer} scorer)"))
        csvs.append(agg.assign(source="ours"))
    if with_paper:
        pagg, _ = build(paper.frame(table), table, "official")
        parts.append(markdown(pagg, table, "Paper (Qwen2.5-3B-Instruct, official scorer)"))
        csvs.append(pagg.assign(source="paper"))
    if not csvs:
        raise InputError("give --results and/or --paper")
    parts += [LEGEND] + [f"Note: {n}" for n in notes]
    parts += [f"MISSING (planned, no record): {m['trial_id']} - {m['reason']} (log: {m['log']})" for m in missing or ()]
    csv = pd.concat(csvs, ignore_index=True)
    csv = csv[["source"] + [c for c in csv.columns if c != "source"]]
    out = Path(out)
    paths = [out / f"table{table}.md", out / f"table{table}.csv"]
    with atomic_path(paths[0]) as tmp:
        tmp.write_text("\n".join(parts) + "\n")
    with atomic_path(paths[1]) as tmp:
        csv.to_csv(tmp, index=False, float_format="%.4f")
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.tables", description=__doc__.split("\n")[0])
    p.add_argument("--results", help="folder of result records (results/<experiment>)")
    p.add_argument("--table", type=int, choices=sorted(TABLES), required=True)
    p.add_argument("--out", required=True, help="report folder; writes table<N>.md and .csv there")
    p.add_argument("--paper", action="store_true", help="add the paper's own rows")
    p.add_argument("--scorer", choices=SCORERS, default="official")
    args = p.parse_args(argv)
    try:
        df = load_records(args.results) if args.results else None
        paths = write_table(df, args.table, args.out, scorer=args.scorer, with_paper=args.paper)
    except (InputError, ConfigError) as e:
        print(f"tables: error: {e}", file=sys.stderr)
        return 2
    src = "the paper" if df is None else (
        f"{len(df)} records ({int((df['status'] != 'ok').sum())} not ok, listed with their status)"
        + (" + the paper" if args.paper else ""))
    print(f"tables: table {args.table} from {src} -> {paths[0]}, {paths[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
