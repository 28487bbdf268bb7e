"""One row per user, built vectorized, and the streaming writers of the official Arrow files.

Clicks are range-partitioned by dense user id into parts of about `rows_per_part` clicks and grouped
by part (Ray Data's sort shuffle keeps a group whole), so one task sees every click of its users.
Inside a part there is no per-click Python: one lexsort orders clicks by (user, ts, item), the ten
columns are gathered from the per-item lookup table with `take`, and `ListArray.from_arrays` with
per-user offsets nests them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from uqa_ray.data.schema import BPE_COLUMNS, ID_COLUMNS, PRETRAIN_SCHEMA, SEQ_COLUMNS

USERS_SCHEMA = pa.schema([("row", pa.int64()), ("user", pa.int64()), ("raw_user_id", pa.int64()),
                          ("length", pa.int64()), ("ts", pa.list_(pa.int64()))])


def _assign_block(batch: dict, maps_ref, users_ref) -> dict:
    import ray

    from uqa_ray.data.reindex import user_index

    item_dense, user_dense, user_part = ray.get(maps_ref)
    uidx = user_index(users_ref, batch["user_id"])
    item, user = item_dense[batch["item"]], user_dense[uidx]
    keep = (item > 0) & (user > 0)
    # 32-bit ids: the shuffle moves 20 bytes per click instead of 28.
    return {"part": user_part[uidx[keep]], "user": user[keep].astype(np.int32),
            "item": item[keep].astype(np.int32), "ts": batch["ts"][keep]}


def _nest(offsets: pa.Array, inner: pa.Array) -> pa.Array:
    return pa.ListArray.from_arrays(offsets, inner)


def _build_part(batch: pa.Table, lookup_ref, users_ref) -> pa.Table:
    import ray

    raw_user, is_eval = ray.get(users_ref)
    return build_part(batch, ray.get(lookup_ref), raw_user, is_eval)


def build_part(batch: pa.Table, lookup: pa.Table, raw_user: np.ndarray, is_eval: np.ndarray) -> pa.Table:
    """All clicks (user, item, ts; dense ids) of some users -> one row per user, sorted by user.
    `lookup` row i holds item i's dense attributes and token bags; raw_user / is_eval by dense user."""
    user, item, ts = (np.asarray(batch[c].to_numpy()) for c in ("user", "item", "ts"))
    order = np.lexsort((item, ts, user))  # time order; ties broken by item id (stable, deterministic)
    user, item, ts = user[order], item[order], ts[order]
    users, counts = np.unique(user, return_counts=True)
    offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
    single = pa.array(np.arange(len(item) + 1, dtype=np.int32))  # an id column's bag holds one id
    cols = {}
    for c in ID_COLUMNS:
        values = item if c == "uni_seq_item_id" else lookup[c].to_numpy()[item]
        cols[c] = _nest(offsets, pa.ListArray.from_arrays(single, pa.array(values, pa.int64())))
    idx = pa.array(item)
    for c in BPE_COLUMNS:
        cols[c] = _nest(offsets, lookup[c].chunk(0).take(idx))
    side = {"user": pa.array(users, pa.int64()), "raw_user_id": pa.array(raw_user[users]),
            "eval": pa.array(is_eval[users]), "length": pa.array(counts.astype(np.int64)),
            "ts": _nest(offsets, pa.array(ts, pa.int64()))}
    return pa.table({**cols, **side})


def build_rows(indexed, raw_users_ref, maps_ref, lookup_ref, dense_users_ref):
    """Dataset of one row per user (the ten sequence columns + user, raw_user_id, eval, length, ts),
    parts in increasing order when iterated with `preserve_order`, so users increase per split."""
    return (indexed.map_batches(_assign_block, batch_format="numpy", batch_size=None,
                                fn_kwargs={"maps_ref": maps_ref, "users_ref": raw_users_ref})
            .groupby("part")
            .map_groups(_build_part, batch_format="pyarrow",
                        fn_kwargs={"lookup_ref": lookup_ref, "users_ref": dense_users_ref}))


def part_of_users(lengths: np.ndarray, rows_per_part: int) -> np.ndarray:
    """Part id per user (in dense order): consecutive users, about `rows_per_part` clicks per part."""
    before = np.cumsum(lengths) - lengths
    return (before // max(rows_per_part, 1)).astype(np.int32)


class SplitWriter:
    """Streams rows of one split into the Arrow IPC file + users parquet, in fixed-size batches.

    Fixed batch sizes make the bytes independent of how Ray happened to cut blocks, so the same
    seed gives byte-identical files.
    """

    def __init__(self, arrow_path: Path, users_path: Path, rows_per_batch: int):
        self.arrow = pa.ipc.new_file(str(arrow_path), PRETRAIN_SCHEMA)
        self.users = pq.ParquetWriter(str(users_path), USERS_SCHEMA)
        self.rows_per_batch = rows_per_batch
        self.pending: list[pa.Table] = []
        self.n_pending = self.rows = self.clicks = 0

    def add(self, table: pa.Table) -> None:
        if table.num_rows:
            self.pending.append(table)
            self.n_pending += table.num_rows
        while self.n_pending >= self.rows_per_batch:
            self._flush(self.rows_per_batch)

    def _flush(self, k: int) -> None:
        t = pa.concat_tables(self.pending)
        head, rest = t.slice(0, k).combine_chunks(), t.slice(k)
        self.pending, self.n_pending = ([rest] if rest.num_rows else []), rest.num_rows
        self.arrow.write_table(head.select(list(SEQ_COLUMNS)).cast(PRETRAIN_SCHEMA), max_chunksize=k)
        side = pa.table({"row": np.arange(self.rows, self.rows + k, dtype=np.int64), "user": head["user"],
                         "raw_user_id": head["raw_user_id"], "length": head["length"], "ts": head["ts"]},
                        schema=USERS_SCHEMA)
        self.users.write_table(side)
        self.rows += k
        self.clicks += int(pc.sum(head["length"]).as_py() or 0)

    def close(self) -> None:
        if self.n_pending:
            self._flush(self.n_pending)
        self.arrow.close()
        self.users.close()


def write_splits(batches: Iterable[pa.Table], out: Path, arrow_files: dict, users_files: dict,
                 rows_per_batch: int) -> dict:
    """Consume row batches (in increasing user order per split) and write both splits; returns rows
    and clicks per split."""
    writers = {s: SplitWriter(out / arrow_files[s], out / users_files[s], rows_per_batch) for s in arrow_files}
    last = {s: 0 for s in writers}
    try:
        for batch in batches:
            flags = batch["eval"].to_numpy(zero_copy_only=False)
            cuts = [0, *(np.flatnonzero(flags[1:] != flags[:-1]) + 1), len(flags)]
            for lo, hi in zip(cuts[:-1], cuts[1:]):  # runs of one split: zero-copy slices
                split, rows = ("eval" if flags[lo] else "train"), batch.slice(lo, hi - lo)
                users = rows["user"].to_numpy()
                if users[0] <= last[split] or np.any(np.diff(users) <= 0):
                    raise RuntimeError("rows arrived out of user order (is preserve_order set?)")
                last[split] = users[-1]
                writers[split].add(rows)
    finally:
        for w in writers.values():
            w.close()
    return {s: {"users": w.rows, "clicks": w.clicks} for s, w in writers.items()}
