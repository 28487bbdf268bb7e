"""`uqa-ray questions`: the alignment (train users) and evaluation (eval users) question sets.

Per split and sub-task, users are visited in a seeded random order and each gets at most
`max_per_user` questions of that sub-task until the count is met (a shortfall is reported, not padded).
Then, per sub-task, the gold positions are an exactly balanced multiset (i mod n_options) shuffled by
seed, so a constant-letter predictor scores 1/n_options on every sub-task. Rows are written in source
row order so each record batch of the sequence file is read once; every output (both splits, arrow +
parquet) is written atomically and together: on any error nothing is written.
"""
from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from uqa_ray.data.schema import ALIGN_FILES, ALIGN_SCHEMA, QUESTIONS_FILES, SEQ_COLUMNS, SEQ_TYPE
from uqa_ray.io import InputError, atomic_path
from uqa_ray.questions.makers import Context, Core, Maker
from uqa_ray.questions.source import Sequences, add_popularity, load_catalog, load_sequences, open_arrow
from uqa_ray.questions.spec import GROUP_OF, LETTERS, SPLITS, SUBTASKS, Counts, QuestionConfig
from uqa_ray.questions.templates import content_prompt, letter_prompt, route

QUESTIONS_SCHEMA = pa.schema([
    ("row", pa.int64()),  # row in align_data_{split}.arrow (and the predictions' key)
    ("user", pa.int64()), ("src_row", pa.int64()),  # user id; row in pretrain_data_{split}.arrow
    ("subtask", pa.string()), ("group", pa.string()), ("template", pa.string()), ("attr", pa.string()),
    ("param", pa.int64()), ("value", pa.string()),  # k / SI window / IT phases; MF target value
    ("lang", pa.string()), ("answer_format", pa.string()),
    ("prompt_letter", pa.string()), ("prompt_content", pa.string()),
    ("options", pa.list_(pa.string())), ("labels", pa.list_(pa.string())), ("gold", pa.int64()),
    ("answer_letter", pa.string()), ("answer_content", pa.string()),
    # the encoder input (and Text-k's history) = the user's clicks [seq_start, seq_start + seq_len)
    ("seq_start", pa.int64()), ("seq_len", pa.int64()), ("user_len", pa.int64()),
])


def split_counts(cfg: QuestionConfig, seqs: dict[str, Sequences]) -> dict[str, Counts]:
    train = cfg.train_counts or cfg.eval_counts.scaled(len(seqs["train"]) / len(seqs["eval"]))
    return {"train": train, "eval": cfg.eval_counts}


def select(ctx: Context, counts: Counts, split_index: int) -> tuple[list[Core], dict]:
    cfg, maker, n_users = ctx.cfg, Maker(ctx), len(ctx.seqs)
    cores, stats = [], {}
    for si, sub in enumerate(SUBTASKS):
        want, got, seen = getattr(counts, sub), [], set()
        rng = np.random.default_rng([cfg.seed, split_index, si])
        tried = misrouted = 0
        for _ in range(cfg.max_per_user):
            order = rng.permutation(n_users)
            for row in order:
                if len(got) >= want:
                    break
                tried += 1
                core = maker.make(sub, int(row), rng)
                if core is None or (core.src_row, core.stem) in seen:
                    continue
                # Both prompt layouts are the stem and option lines plus labels and fixed instructions
                # that hold no marker, and no marker spans a line break: routing the stem and options
                # is routing either prompt.
                if route("\n".join([core.stem, core.gold, *core.distractors]), cfg.lang) != sub:
                    misrouted += 1  # an option text happens to contain an earlier sub-task's marker
                    continue
                seen.add((core.src_row, core.stem))
                got.append(core)
        stats[sub] = {"asked": want, "made": len(got), "tried": tried, "misrouted": misrouted}
        cores.extend(got)
    return cores, stats


def finalize(cores: list[Core], seqs: Sequences, cfg: QuestionConfig, split_index: int) -> pa.Table:
    """Order options (balanced gold positions), build both prompts, sort rows by source row."""
    rng = np.random.default_rng([cfg.seed, split_index, len(SUBTASKS)])
    n_opt, labels = cfg.n_options, list(LETTERS[: cfg.n_options])
    gold_pos = np.zeros(len(cores), np.int64)
    subs = np.array([c.subtask for c in cores])
    for sub in SUBTASKS:
        idx = np.flatnonzero(subs == sub)
        gold_pos[idx] = rng.permutation(np.arange(len(idx)) % n_opt)
    rows = []
    for c, g in zip(cores, gold_pos):
        d = [c.distractors[i] for i in rng.permutation(len(c.distractors))]
        opts = d[:g] + [c.gold] + d[g:]
        rows.append((c, int(g), opts))
    rows.sort(key=lambda r: (r[0].src_row, SUBTASKS.index(r[0].subtask)))
    lens = np.diff(seqs.offsets)
    cols = {f.name: [] for f in QUESTIONS_SCHEMA}
    for i, (c, g, opts) in enumerate(rows):
        for name, v in (
            ("row", i), ("user", int(seqs.users[c.src_row])), ("src_row", c.src_row),
            ("subtask", c.subtask), ("group", GROUP_OF[c.subtask]), ("template", c.template),
            ("attr", c.attr), ("param", c.param), ("value", c.value), ("lang", cfg.lang),
            ("answer_format", cfg.answer_format),
            ("prompt_letter", letter_prompt(c.stem, opts, cfg.lang)),
            ("prompt_content", content_prompt(c.stem, opts, cfg.lang)),
            ("options", opts), ("labels", labels), ("gold", g), ("answer_letter", labels[g]),
            ("answer_content", c.gold), ("seq_start", c.start), ("seq_len", c.end - c.start),
            ("user_len", int(lens[c.src_row])),
        ):
            cols[name].append(v)
    return pa.table(cols, schema=QUESTIONS_SCHEMA)


def take_slices(col: pa.Array, rows: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> pa.Array:
    """Row rows[i] of a list<list<int>> column cut to its clicks [starts[i], ends[i])."""
    off = col.offsets.to_numpy().astype(np.int64)
    lens = (ends - starts).astype(np.int64)
    first = off[rows] + starts
    new_off = np.concatenate([[0], np.cumsum(lens)])
    idx = np.repeat(first - new_off[:-1], lens) + np.arange(new_off[-1])
    inner = col.values.take(pa.array(idx, pa.int64()))
    return pa.ListArray.from_arrays(pa.array(new_off, pa.int32()), inner).cast(SEQ_TYPE)


def write_align(seqs: Sequences, table: pa.Table, path: Path, answer_format: str) -> None:
    reader = open_arrow(seqs.path)
    src = table["src_row"].to_numpy()
    starts, ends = table["seq_start"].to_numpy(), (table["seq_start"].to_numpy() + table["seq_len"].to_numpy())
    prompts = table["prompt_letter" if answer_format == "letter" else "prompt_content"].to_pylist()
    answers = table["answer_letter" if answer_format == "letter" else "answer_content"].to_pylist()
    bounds = np.searchsorted(src, seqs.batch_rows)
    with pa.OSFile(str(path), "wb") as sink, ipc.new_file(sink, ALIGN_SCHEMA) as writer:
        for b in range(len(seqs.batch_rows) - 1):
            lo, hi = int(bounds[b]), int(bounds[b + 1])
            if lo == hi:
                continue
            batch = reader.get_batch(b)
            local = src[lo:hi] - seqs.batch_rows[b]
            cols = [take_slices(batch.column(c), local, starts[lo:hi], ends[lo:hi]) for c in SEQ_COLUMNS]
            text = [json.dumps([{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                               ensure_ascii=False) for q, a in zip(prompts[lo:hi], answers[lo:hi])]
            cols.append(pa.array(text, pa.string()))
            writer.write_batch(pa.record_batch(cols, schema=ALIGN_SCHEMA))


def generate(data: str | Path, cfg: QuestionConfig, out: str | Path | None = None) -> dict:
    """Write align_data_{split}.arrow + questions_{split}.parquet for both splits; return a summary."""
    data, t0 = Path(data), time.perf_counter()
    out = Path(out) if out is not None else data
    if not data.is_dir():
        raise InputError(f"{data}: data folder not found")
    catalog = load_catalog(data)
    seqs = {s: load_sequences(data, s, catalog) for s in SPLITS}
    add_popularity(catalog, seqs["train"], cfg.popular_pool)
    counts = split_counts(cfg, seqs)
    summary = {"data": str(data), "out": str(out), "load_s": time.perf_counter() - t0, "splits": {}}
    with contextlib.ExitStack() as stack:
        for si, split in enumerate(SPLITS):
            t1 = time.perf_counter()
            cores, stats = select(Context(cfg, catalog, seqs[split]), counts[split], si)
            table = finalize(cores, seqs[split], cfg, si)
            t2 = time.perf_counter()
            arrow_tmp = stack.enter_context(atomic_path(out / ALIGN_FILES[split]))
            write_align(seqs[split], table, arrow_tmp, cfg.answer_format)
            pq.write_table(table, stack.enter_context(atomic_path(out / QUESTIONS_FILES[split])))
            summary["splits"][split] = {
                "users": len(seqs[split]), "questions": table.num_rows, "subtasks": stats,
                "generate_s": t2 - t1, "write_s": time.perf_counter() - t2,
            }
    summary["wall_s"] = time.perf_counter() - t0
    return summary
