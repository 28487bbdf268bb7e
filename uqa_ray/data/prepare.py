"""Raw click log -> the official Arrow files + maps + tokenizer, on Ray Data (`uqa-ray prepare`:
lab/prepare_cli.py).

Stages (reindex.py, catalog.py, sequences.py): read, validate and index the clicks, materialized
once; count clicks per user; filter items and users to a fixed point (reindex.py says why);
re-index ids densely by sorted raw id (0 = padding); tokenize titles once per kept item and the
four attribute names once per distinct id; group clicks by ranges of users, order each user's
clicks by time, gather the ten columns; split users 9:1 by a seeded hash; stream both splits into
Arrow IPC files in increasing dense user order (the same seed gives byte-identical files).
The whole output folder is written atomically: bad input leaves nothing behind.
"""
from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from uqa_ray.config import to_dict
from uqa_ray.data import catalog as cat_mod
from uqa_ray.data import reindex, sequences
from uqa_ray.data.schema import (
    ATTRIBUTES, BPE_COLUMNS, BPE_VOCAB_KEY, CATALOG_SCHEMA, CLICK_SCHEMA, ID_COLUMNS, META_FILE, PRETRAIN_FILES,
    TOKENIZER_DIR, TRUTH_FILE, USERS_FILES, check_schema,
)
from uqa_ray.io import InputError, atomic_path, reason

CLICKS_DIR, CATALOG_FILE = "clicks", "items.parquet"


@dataclass(frozen=True)
class PrepareConfig:
    min_item_count: int = 3  # paper: drop items with fewer than 3 interactions
    min_user_len: int = 20  # users outside [min, max] clicks are dropped; the encoder sees the last 512
    max_user_len: int = 5000
    eval_fraction: float = 0.1  # official split 9:1
    seed: int = 0  # seeds the train/eval split
    vocab_size: int = 4096  # embedded tokenizer (trained on the catalog names)
    tokenizer_max_items: int = 200_000  # embedded tokenizer corpus: titles + names of <= this many items
    max_name_tokens: int = 32  # BPE tokens kept per name
    rows_per_part: int = 250_000  # clicks per group-by part (memory of one task)
    rows_per_batch: int = 1024  # users per Arrow record batch in the output files

    def __post_init__(self):
        if self.min_item_count < 1 or self.min_user_len < 1 or self.max_user_len < self.min_user_len:
            raise ValueError("need min_item_count >= 1 and 1 <= min_user_len <= max_user_len")
        if not 0 <= self.eval_fraction < 1:
            raise ValueError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")
        if min(self.max_name_tokens, self.rows_per_part, self.rows_per_batch, self.tokenizer_max_items) < 1:
            raise ValueError("max_name_tokens, rows_per_part, rows_per_batch, tokenizer_max_items must be >= 1")


def _open_parquet(path: Path, schema: pa.Schema) -> int:
    """Footer + schema check; returns the row count."""
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # ArrowInvalid, OSError: truncated or not parquet at all
        raise InputError(f"{path}: unreadable parquet file ({reason(e)})") from e
    check_schema(pf.schema_arrow, schema, str(path))
    return pf.metadata.num_rows


def _check_truth(path: Path) -> None:
    """truth.parquet is read only after the Ray passes: check what `reindex_truth` relies on up front, so
    a bad one fails in a second, not after minutes of work: integer `user_id`, and integer ids (or lists
    of them) in every column named after an attribute."""
    try:
        schema = pq.ParquetFile(path).schema_arrow
    except Exception as e:
        raise InputError(f"{path}: unreadable parquet file ({reason(e)})") from e
    if schema.get_field_index("user_id") < 0:
        raise InputError(f"{path}: missing column 'user_id' (have {schema.names})")
    for field in schema:
        t = field.type
        inner = t.value_type if pa.types.is_list(t) else t
        is_attr = field.name.rsplit("_", 1)[-1] in ATTRIBUTES
        if (field.name == "user_id" and not pa.types.is_integer(t)) or (is_attr and not pa.types.is_integer(inner)):
            raise InputError(f"{path}: column {field.name!r} has type {t}, expected "
                             f"{'int64' if field.name == 'user_id' else 'int64 ids or a list of them'}")


def validate_raw(raw: Path) -> tuple[list[Path], Path, int]:
    clicks_dir, catalog = raw / CLICKS_DIR, raw / CATALOG_FILE
    files = sorted(clicks_dir.glob("*.parquet")) if clicks_dir.is_dir() else []
    if not files:
        raise InputError(f"{clicks_dir}: no click shards (*.parquet) found")
    if not catalog.is_file():
        raise InputError(f"{catalog}: the item catalog is missing")
    n = sum(_open_parquet(f, CLICK_SCHEMA) for f in files)
    if n == 0:
        raise InputError(f"{clicks_dir}: the click log is empty")
    _open_parquet(catalog, CATALOG_SCHEMA)
    if (raw / TRUTH_FILE).is_file():
        _check_truth(raw / TRUTH_FILE)
    return files, catalog, n


@contextlib.contextmanager
def _task_errors():
    """A Ray task that failed reading a file (one that passed the footer check but does not decode) is
    bad input naming that file (reindex.BAD_FILE); any other failure is a bug and keeps its traceback."""
    try:
        yield
    except InputError:
        raise
    except Exception as e:
        bad = reindex.bad_file(e)
        if bad is None:
            raise
        raise bad from e


class _Clock:
    """Seconds per stage into `timings` (bench/ reads them; never written to meta.json, which must
    stay byte-identical across runs)."""

    def __init__(self, timings: dict | None):
        self.timings, self.t = timings, time.perf_counter()

    def __call__(self, stage: str) -> None:
        now = time.perf_counter()
        if self.timings is not None:
            self.timings[stage] = round(now - self.t, 3)
        self.t = now


@contextlib.contextmanager
def _preserve_order():
    """Ray Data yields blocks in dataset order: output rows come out sorted by dense user id."""
    import ray

    ctx = ray.data.DataContext.get_current()
    old, ctx.execution_options.preserve_order = ctx.execution_options.preserve_order, True
    try:
        yield
    finally:
        ctx.execution_options.preserve_order = old


def prepare(raw: str | Path, out: str | Path, cfg: PrepareConfig = PrepareConfig(),
            tokenizer: str | None = None, timings: dict | None = None, prompt_text: Sequence[str] = ()) -> dict:
    """Returns meta.json's content; `timings`, if given, receives seconds per stage (bench/).
    `prompt_text`: the prompts' fixed text, which the embedded tokenizer learns beside the catalog names
    (questions/render.prompt_text; ignored when `tokenizer` is given)."""
    import ray

    from uqa_ray.raysetup import init_ray

    clock = _Clock(timings)
    raw, out = Path(raw), Path(out)
    files, catalog, _ = validate_raw(raw)
    catalog_ids = cat_mod.catalog_keys(catalog)
    clock("validate")
    init_ray()
    clock("ray_init")
    with _preserve_order(), _task_errors():
        clicks = reindex.read_parquet_pieces(files, list(reindex.CLICK_COLUMNS))
        cat_ref = ray.put(catalog_ids)
        indexed, users, raw_len, n_raw = reindex.index(clicks, files, catalog_ids, cat_ref, catalog)
        clock("index")
        users_ref = ray.put(users)
        flt = reindex.filter_fixed_point(indexed, users_ref, raw_len, len(catalog_ids), cfg.min_item_count,
                                         cfg.min_user_len, cfg.max_user_len)
        if not flt.keep_user.any():
            raise InputError(f"{raw}: all {len(users)} users were filtered away (min_item_count="
                             f"{cfg.min_item_count}, min_user_len={cfg.min_user_len}, max_user_len={cfg.max_user_len})")
        # Dense ids by sorted raw id (users and catalog positions are already sorted): 1..n, 0 = dropped.
        item_dense = (np.cumsum(flt.keep_item) * flt.keep_item).astype(np.int64)
        user_dense = (np.cumsum(flt.keep_user) * flt.keep_user).astype(np.int64)
        kept_raw, lengths = users[flt.keep_user], flt.user_len[flt.keep_user]
        is_eval = reindex.eval_users(kept_raw, cfg.eval_fraction, cfg.seed)
        user_part = np.zeros(len(users), np.int32)
        user_part[flt.keep_user] = sequences.part_of_users(lengths, cfg.rows_per_part)
        clock("filter")
        with atomic_path(out) as tmp:
            tmp.mkdir()
            tok, tok_source, lookup_ref, info = _catalog_stage(
                catalog, cat_ref, item_dense, int(flt.keep_item.sum()), tokenizer, cfg, tmp, clock, prompt_text)
            rows = sequences.build_rows(
                indexed, users_ref, ray.put((item_dense, user_dense, user_part)), lookup_ref,
                ray.put((np.concatenate([[0], kept_raw]), np.concatenate([[False], is_eval]))))
            counts = sequences.write_splits(rows.iter_batches(batch_size=None, batch_format="pyarrow"), tmp,
                                            PRETRAIN_FILES, USERS_FILES, cfg.rows_per_batch)
            clock("rows")
            has_truth = (raw / TRUTH_FILE).is_file()
            if has_truth:
                reindex_truth(raw / TRUTH_FILE, tmp / TRUTH_FILE, kept_raw, is_eval, info["raw"])
            meta = _meta(raw, files, cfg, tok, tok_source, info, flt, counts, n_raw, len(users),
                         len(catalog_ids), has_truth)
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
        clock("sidecars")
    return meta


def _catalog_stage(catalog: Path, cat_ref, item_dense, n_items, tokenizer, cfg, tmp: Path, clock, prompt_text):
    """Kept catalog rows -> tokenizer (given or trained) -> tokens once per item -> lookup + maps/."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    catalog_ds = reindex.read_parquet_pieces([catalog], list(CATALOG_SCHEMA.names))
    kept = cat_mod.kept_items(catalog_ds, cat_ref, ray.put(item_dense), n_items)
    tok, tok_source = _tokenizer(tokenizer, kept, n_items, cfg, tmp / TOKENIZER_DIR, prompt_text)
    clock("tokenizer")
    tok_ref = ray.put(tok.backend_tokenizer.to_str())
    toks = cat_mod.tokenize(kept, tok_ref, cfg.max_name_tokens)
    # The lookup task writes maps/ into `tmp`, so it runs on this (the driver's) node; it asks for no CPU,
    # as the driver's own work does: a cluster's head has none to give (cluster/*.yaml: CPU 0).
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    lookup_ref, info_ref = ray.remote(cat_mod.build_lookup).options(num_returns=2, num_cpus=0,
                                                                    scheduling_strategy=here).remote(
        str(tmp), tok_ref, cfg.max_name_tokens, *toks.to_arrow_refs())
    info = ray.get(info_ref)
    clock("catalog")
    return tok, tok_source, lookup_ref, info


def _tokenizer(path: str | None, kept, n_items: int, cfg: PrepareConfig, dest: Path, prompt_text: Sequence[str]):
    """The given HF tokenizer (copied into the output), or the embedded default trained on the catalog
    names and the prompts' fixed text."""
    from uqa_ray.data.tokenizer import load_tokenizer, train_tokenizer

    if path:
        tok = load_tokenizer(path)
        tok.save_pretrained(dest)
        return tok, str(path)
    texts = cat_mod.name_texts(kept, n_items, cfg.tokenizer_max_items)
    source = f"trained on the catalog names and {len(prompt_text)} fixed prompt texts"
    return train_tokenizer(texts, cfg.vocab_size, dest, prompt_text=prompt_text), source


def reindex_truth(src: Path, dst: Path, kept_raw: np.ndarray, is_eval: np.ndarray, raw_attr: dict) -> None:
    """Planted truth with dense ids: `user`, `split` added; a column whose name ends in _cate, _brand,
    _shop or _seller (an id or a list of ids) is mapped through maps/ (0 = not in the prepared data)."""
    try:
        _reindex_truth(src, dst, kept_raw, is_eval, raw_attr)
    except (OSError, pa.ArrowException) as e:  # a page garbled behind the footer _check_truth read
        raise InputError(f"{src}: cannot be decoded ({reason(e)})") from e


def _reindex_truth(src: Path, dst: Path, kept_raw: np.ndarray, is_eval: np.ndarray, raw_attr: dict) -> None:
    pf = pq.ParquetFile(src)
    writer = None
    for batch in pf.iter_batches(batch_size=65536):
        for name in batch.schema.names:  # a null id has no dense id to map to
            col = batch.column(name)
            if (name == "user_id" or name.rsplit("_", 1)[-1] in ATTRIBUTES) and (
                    col.null_count or (pa.types.is_list(col.type) and col.flatten().null_count)):
                raise InputError(f"{src}: column {name!r} has null values")
        raw_u = batch.column("user_id").to_numpy()
        pos = np.minimum(np.searchsorted(kept_raw, raw_u), len(kept_raw) - 1)
        found = kept_raw[pos] == raw_u
        t = pa.Table.from_batches([batch]).filter(pa.array(found))
        pos = pos[found]
        cols = {"user": pa.array(pos + 1, pa.int64()),
                "split": pa.array(np.where(is_eval[pos], "eval", "train")),
                "raw_user_id": t["user_id"]}
        for name in t.column_names:
            if name == "user_id":
                continue
            attr = name.rsplit("_", 1)[-1]
            cols[name] = _map_ids(t[name].combine_chunks(), raw_attr[attr]) if attr in ATTRIBUTES else t[name]
        out = pa.table(cols)
        writer = writer or pq.ParquetWriter(dst, out.schema)
        writer.write_table(out)
    if writer:
        writer.close()


def _map_ids(arr: pa.Array, raw_sorted: np.ndarray) -> pa.Array:
    if pa.types.is_list(arr.type):
        offsets = arr.offsets.to_numpy()
        return pa.ListArray.from_arrays(pa.array(offsets - offsets[0]), _map_ids(arr.flatten(), raw_sorted))
    v = arr.to_numpy()
    pos = np.minimum(np.searchsorted(raw_sorted, v), len(raw_sorted) - 1)
    return pa.array(np.where(raw_sorted[pos] == v, pos + 1, 0).astype(np.int64))


def _meta(raw, files, cfg, tok, tok_source, info, flt, counts, n_raw, n_raw_users, n_catalog, has_truth) -> dict:
    from uqa_ray.data.tokenizer import vocab_size

    bpe = vocab_size(tok)
    vocab = {"uni_seq_item_id": info["n_items"] + 1,
             **{cat_mod.ATTR_COLUMN[a]: v for a, v in info["vocab"].items()},
             **{c: bpe for c in BPE_COLUMNS}, BPE_VOCAB_KEY: bpe}
    assert set(ID_COLUMNS) <= set(vocab)
    return {
        "format": "uqa-ray prepared v1 (official UQABench pretrain schema)",
        "source": {"kind": "raw", "raw": str(raw.resolve()), "click_files": len(files), "catalog": CATALOG_FILE},
        "seed": cfg.seed, "config": to_dict(cfg), "vocab": vocab,
        "counts": {"raw_clicks": n_raw, "raw_users": n_raw_users, "catalog_items": n_catalog,
                   "clicks": int(flt.user_len[flt.keep_user].sum()), "users": int(flt.keep_user.sum()),
                   "items": info["n_items"], **{a: v - 1 for a, v in info["vocab"].items()},
                   "train_users": counts["train"]["users"], "eval_users": counts["eval"]["users"],
                   "train_clicks": counts["train"]["clicks"], "eval_clicks": counts["eval"]["clicks"]},
        "filters": {"min_item_count": cfg.min_item_count, "min_user_len": cfg.min_user_len,
                    "max_user_len": cfg.max_user_len, "dropped_too_long_users": flt.too_long,
                    "rounds": flt.rounds,
                    "order": "users with raw length > max_user_len dropped once; then items with < min_item_count "
                             "clicks and users with < min_user_len clicks dropped repeatedly until nothing changes"},
        "split": {"eval_fraction": cfg.eval_fraction, "method": "eval = the round(f*n) users with the smallest "
                  "splitmix64(raw_user_id ^ seed) hash"},
        "tokenizer": {"dir": TOKENIZER_DIR, "source": tok_source, "vocab_size": bpe,
                      "max_name_tokens": cfg.max_name_tokens, "pad_id": tok.pad_token_id},
        "order": "rows sorted by dense user id; clicks by (ts, item id)",
        "truth": TRUTH_FILE if has_truth else None,
    }
