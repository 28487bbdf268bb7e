"""Ray Data passes of `prepare` over the click log: validate, index densely, filter to a fixed point.

The clicks are read once and materialized as (raw user id, catalog position, ts). Every later pass
maps batches of blocks in Ray workers and returns ONE small row per task (unique ids, counts),
which the driver sums: the driver only ever holds per-id arrays (a few MB at paper scale), never
clicks.
Bad clicks are flagged as data (not raised in workers, where Ray would wrap the exception), so the
driver can raise an `InputError` that names the file and the value.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from uqa_ray.io import InputError, reason

CLICK_COLUMNS = ("user_id", "item_id", "ts")
COUNT_BATCH = 4_000_000  # clicks per counting task (80 MB of indexed clicks)


# Marks a read error of an input file inside a Ray task. Ray wraps a task's exception in its own types
# (and Ray Data in others again), but keeps the message: the driver finds the marked line there and
# raises it as an InputError, so a page that passed the footer check but cannot be decoded is bad
# input naming its file, while every other task failure stays a bug with its traceback.
BAD_FILE = "uqa-ray unreadable input: "


def _read_piece(batch: dict, columns: list[str]) -> pa.Table:
    path, group = batch["path"][0], int(batch["row_group"][0])
    try:
        return pq.ParquetFile(path).read_row_group(group, columns=columns)
    except (OSError, pa.ArrowException) as e:
        raise OSError(f"{BAD_FILE}{path}: row group {group} cannot be decoded ({reason(e)})") from None


def bad_file(e: BaseException) -> InputError | None:
    """The InputError a task's read failure stands for (see BAD_FILE), None for any other failure."""
    for line in str(e).splitlines():
        if BAD_FILE in line:
            return InputError(line.split(BAD_FILE, 1)[1].strip())
    return None


def read_parquet_pieces(files: list[Path], columns: list[str]):
    """A Ray Dataset with one block per (file, row group), read lazily in tasks.

    Replaces `ray.data.read_parquet`, whose metadata and size-sampling tasks cost 2-4 s per call on
    this 2-core machine (more than the tiny preset's whole pass); the footers were read anyway
    when the schemas were validated.
    """
    import ray

    pieces = [{"path": str(f), "row_group": g} for f in files for g in range(pq.ParquetFile(f).num_row_groups)]
    return ray.data.from_items(pieces, override_num_blocks=max(len(pieces), 1)).map_batches(
        _read_piece, batch_size=1, batch_format="numpy", fn_kwargs={"columns": list(columns)})


def _one_row(**cols) -> pa.Table:
    """A 1-row table; numpy arrays become one list cell each."""
    return pa.table({k: [v] for k, v in cols.items()})


_INDEXES: dict = {}


def positions(keys_ref, values: np.ndarray) -> np.ndarray:
    """Position of each value in the sorted unique keys behind `keys_ref`, -1 if absent.

    A hash lookup (pandas Index, built once per worker process) rather than np.searchsorted, whose binary
    search misses the cache at every level for random queries (docs/decisions.md). Every pass looks up
    every click."""
    import pandas as pd
    import ray

    key = keys_ref.hex()
    if key not in _INDEXES:
        if len(_INDEXES) >= 4:
            _INDEXES.clear()
        _INDEXES[key] = pd.Index(ray.get(keys_ref))
    return _INDEXES[key].get_indexer(values)


def _index_block(batch: pa.Table, catalog_ref) -> dict:
    """Pass A (map): raw user id, catalog position of the item (-1: not in the catalog, -2: a null
    in the row), ts. Bad rows are flagged, not raised, so the driver can name the file and value."""
    null = np.zeros(batch.num_rows, bool)
    for c in CLICK_COLUMNS:
        if batch[c].null_count:
            null |= batch[c].is_null().to_numpy(zero_copy_only=False)
    user, item, ts = (batch[c].fill_null(0).to_numpy() for c in CLICK_COLUMNS)
    pos = positions(catalog_ref, item)
    pos[null] = -2
    return {"user_id": user.astype(np.int64), "item": pos.astype(np.int32), "ts": ts.astype(np.int64)}


def _stats_block(batch: dict) -> pa.Table:
    ok = batch["item"] >= 0
    users, counts = np.unique(batch["user_id"][ok], return_counts=True)
    return _one_row(users=users, counts=counts, rows=len(ok), n_unknown=int((batch["item"] == -1).sum()),
                    n_null=int((batch["item"] == -2).sum()))


class _UniqueCounter:
    """Merges per-block (ids, counts) into sorted unique ids with total counts, in bounded memory."""

    def __init__(self):
        self.ids, self.counts, self.size = [], [], 0

    def add(self, ids: np.ndarray, counts: np.ndarray) -> None:
        self.ids.append(ids)
        self.counts.append(counts)
        self.size += len(ids)
        if self.size > 8_000_000:
            self._reduce()

    def _reduce(self) -> None:
        ids, inv = np.unique(np.concatenate(self.ids or [np.zeros(0, np.int64)]), return_inverse=True)
        counts = np.bincount(inv, weights=np.concatenate(self.counts or [np.zeros(0)]), minlength=len(ids))
        self.ids, self.counts, self.size = [ids], [counts.astype(np.int64)], len(ids)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        self._reduce()
        return self.ids[0], self.counts[0]


def _first_bad(files: list[Path], catalog_ids: np.ndarray) -> tuple[Path, str]:
    """Only on error: stream the shards again in the driver to name the first bad file and value."""
    for f in files:
        try:
            what = _first_bad_in(f, catalog_ids)
        except (OSError, pa.ArrowException) as e:  # garbled after the footer: the read error is the reason
            what = f"cannot be decoded ({reason(e)})"
        if what:
            return f, what
    raise RuntimeError("a bad click was flagged but cannot be found again")


def _first_bad_in(f: Path, catalog_ids: np.ndarray) -> str | None:
    for batch in pq.ParquetFile(f).iter_batches(columns=list(CLICK_COLUMNS), batch_size=1 << 20):
        for c in CLICK_COLUMNS:
            if batch.column(c).null_count:
                return f"column {c!r} has null values"
        item = batch.column("item_id").to_numpy()
        pos = np.minimum(np.searchsorted(catalog_ids, item), len(catalog_ids) - 1)
        bad = catalog_ids[pos] != item
        if bad.any():
            return f"item_id {item[bad][0]} is not in the catalog"
    return None


def index(clicks_ds, files: list[Path], catalog_ids: np.ndarray, catalog_ref, catalog_path: Path):
    """Pass A: index clicks (materialized once, 20 bytes per click) and validate them; pass B: count
    raw clicks per user. Returns (indexed dataset, sorted raw user ids, raw lengths, raw click count)."""
    indexed = clicks_ds.map_batches(_index_block, batch_format="pyarrow", batch_size=None,
                                    fn_kwargs={"catalog_ref": catalog_ref}).materialize()
    users = _UniqueCounter()
    n_rows = n_bad = 0
    out = indexed.map_batches(_stats_block, batch_format="numpy", batch_size=COUNT_BATCH)
    for b in out.iter_batches(batch_size=None, batch_format="pyarrow"):
        for i in range(b.num_rows):
            users.add(b["users"][i].values.to_numpy(), b["counts"][i].values.to_numpy())
            n_rows += b["rows"][i].as_py()
            n_bad += b["n_unknown"][i].as_py() + b["n_null"][i].as_py()
    if n_bad:
        f, what = _first_bad(files, catalog_ids)
        raise InputError(f"{f}: {what} ({n_bad} bad clicks in {f.parent}; catalog {catalog_path})")
    ids, counts = users.result()
    return indexed, ids, counts, n_rows


def user_index(users_ref, raw_user_ids: np.ndarray) -> np.ndarray:
    """Index of each click's raw user id in the sorted unique users (a hash lookup per pass is
    cheaper than materializing the clicks a second time)."""
    return positions(users_ref, raw_user_ids)


def _count_block(batch: dict, masks_ref, users_ref) -> pa.Table:
    import ray

    keep_item, keep_user = ray.get(masks_ref)
    user = user_index(users_ref, batch["user_id"])
    m = keep_item[batch["item"]] & keep_user[user]
    return _one_row(items=np.bincount(batch["item"][m], minlength=len(keep_item)).astype(np.int32),
                    users=np.bincount(user[m], minlength=len(keep_user)).astype(np.int32))


@dataclass
class Filtered:
    keep_item: np.ndarray  # bool per catalog position
    keep_user: np.ndarray  # bool per raw user index
    item_count: np.ndarray  # clicks per catalog position after filtering
    user_len: np.ndarray  # clicks per raw user index after filtering
    rounds: int
    too_long: int  # users dropped by the raw max-length filter


def filter_fixed_point(indexed, users_ref, raw_len: np.ndarray, n_catalog: int, min_item_count: int,
                       min_user_len: int, max_user_len: int) -> Filtered:
    """Drop users with raw length > max_user_len once, then repeat {drop items with < min_item_count
    clicks; drop users with < min_user_len clicks} until nothing changes.

    Why this order: the max bound is a spam/crawler filter on the raw log, and lengths only shrink
    afterwards, so it still holds on the output. The two min bounds interact (dropping items shortens
    users, dropping users lowers item counts); iterating to the fixed point makes BOTH hold on the
    output, and the result does not depend on the order (it is the largest such sub-log).
    """
    import ray

    keep_item = np.ones(n_catalog, bool)
    keep_user = raw_len <= max_user_len
    too_long = int((~keep_user).sum())
    for rounds in range(1, 1000):
        ref = ray.put((keep_item, keep_user))
        items = np.zeros(n_catalog, np.int64)
        users = np.zeros(len(raw_len), np.int64)
        # Big batches (several blocks per task): fewer per-id count arrays travel to the driver.
        out = indexed.map_batches(_count_block, batch_size=COUNT_BATCH, batch_format="numpy",
                                  fn_kwargs={"masks_ref": ref, "users_ref": users_ref})
        for b in out.iter_batches(batch_size=None, batch_format="pyarrow"):
            for i in range(b.num_rows):
                items += b["items"][i].values.to_numpy()
                users += b["users"][i].values.to_numpy()
        new_item = keep_item & (items >= min_item_count)
        new_user = keep_user & (users >= min_user_len)
        if np.array_equal(new_item, keep_item) and np.array_equal(new_user, keep_user):
            return Filtered(keep_item, keep_user, items, users, rounds, too_long)
        keep_item, keep_user = new_item, new_user
    raise RuntimeError("filtering did not converge")


def split_hash(raw_ids: np.ndarray, seed: int) -> np.ndarray:
    """splitmix64 of (raw id, seed): the seeded, order-free key of the train/eval split."""
    x = raw_ids.astype(np.uint64) ^ np.uint64((seed * 0x9E3779B97F4A7C15) % 2**64)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def eval_users(raw_ids: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Bool per user: the round(fraction * n) users with the smallest seeded hash are eval users."""
    n = len(raw_ids)
    n_eval = int(round(fraction * n))
    if fraction > 0 and n >= 2:
        n_eval = min(max(n_eval, 1), n - 1)
    is_eval = np.zeros(n, bool)
    is_eval[np.argsort(split_hash(raw_ids, seed), kind="stable")[:n_eval]] = True
    return is_eval
