"""Training windows: which stretch of each user's history a training row holds.

`last` is the official loader (UQABENCH.md section 3: `ids[-max_len:]`, the rest of a long history is
never trained on). `sliding` cuts each history into windows of `max_len` clicks that overlap by one,
aligned to the end: windows end at n, n - (max_len - 1), ..., so every click but the first is a
next-item target exactly once per epoch (the click a window starts with is the previous window's last
target), as sequential-recommendation libraries train on whole histories. Rows are Arrow tables in the
official schema; list columns (`list<list<int>>` and `list<int>`) are windowed, the others repeated.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import pyarrow as pa

from uqa_ray.data.collate import ITEM_COLUMN
from uqa_ray.data.stream import open_ipc

Window = Literal["last", "sliding"]  # the one home of the window kinds (PretrainConfig.windows)


def window_bounds(lengths: np.ndarray, max_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, start, stop) of every sliding window: rows with fewer than 2 clicks give none (no target)."""
    if max_len < 2:
        raise ValueError(f"max_len must be >= 2 for windows, got {max_len}")
    lengths = np.asarray(lengths, dtype=np.int64)
    counts = np.where(lengths >= 2, -(-(lengths - 1) // (max_len - 1)), 0)  # ceil((n - 1) / (L - 1))
    row = np.repeat(np.arange(len(lengths)), counts)
    k = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)  # window index from the end
    stop = lengths[row] - k * (max_len - 1)
    return row, np.maximum(stop - max_len, 0), stop


def count_windows(path: str, max_len: int, window: Window) -> int:
    """Training rows that `window` makes of the users of an Arrow file (reads the item offsets only)."""
    reader = open_ipc(path)
    lengths = []
    for i in range(reader.num_record_batches):
        off = reader.get_record_batch(i).column(ITEM_COLUMN).offsets.to_numpy()
        lengths.append(off[1:] - off[:-1])
    lengths = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
    return len(lengths) if window == "last" else len(window_bounds(lengths, max_len)[0])


def _slice_lists(arr: pa.Array, row: np.ndarray, start: np.ndarray, stop: np.ndarray) -> pa.Array:
    """Elements [start, stop) of list `row` of `arr`, one output list per window."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    off = arr.offsets.to_numpy().astype(np.int64)
    n = stop - start
    idx = np.repeat(off[row] + start - np.cumsum(n) + n, n) + np.arange(n.sum())
    values = arr.values.take(pa.array(idx, type=pa.int64()))
    out_off = np.concatenate([[0], np.cumsum(n)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(out_off), values)


def sliding_windows(table: pa.Table, max_len: int) -> pa.Table:
    """One row per sliding window of every user of `table` (see the module docstring)."""
    if ITEM_COLUMN not in table.column_names:
        raise ValueError(f"sliding windows need the {ITEM_COLUMN!r} column")
    items = table.column(ITEM_COLUMN).combine_chunks()
    off = items.offsets.to_numpy().astype(np.int64)
    row, start, stop = window_bounds(off[1:] - off[:-1], max_len)
    cols = {}
    for name in table.column_names:
        col = table.column(name).combine_chunks()
        if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
            cols[name] = _slice_lists(col, row, start, stop).cast(col.type)
        else:
            cols[name] = col.take(pa.array(row, type=pa.int64()))
    return pa.table(cols, schema=table.schema)
