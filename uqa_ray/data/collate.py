"""Official `list<list<int>>` rows -> right-padded LongTensors for the encoders.

`collate(batch, max_len)` keeps the LAST `max_len` clicks of each user (the encoder sees the most recent
history, UQABENCH.md section 2) and pads on the RIGHT with 0, so that a causal model never sees a padding
position before a valid one: valid outputs are the same whatever the padded length.

Shapes: ID columns -> (B, T) (first id of each bag; an empty bag gives 0 = unknown), BPE columns ->
(B, T, K) with K = min(longest kept bag in the batch, cap), `mask` -> (B, T) bool, and `ts` -> (B, T)
when the batch carries a `list<int>` timestamp column of that name (HSTU's time bias). T is the longest
kept sequence in the batch (<= max_len).

Everything works on Arrow offsets with numpy index arithmetic: no Python loop per click. Pass Arrow
batches (Ray Data `batch_format="pyarrow"`); numpy object columns are accepted but converted row by row.

Training view: position t predicts the item at t+1 (`next_item_targets`); because every encoder is
causal, the objective runs the encoder once on the full sequence and drops nothing. Evaluation view:
the hidden state at the second-to-last click scores the last click (`last_item_targets`); `eval_targets`
scores each of the last N clicks from the state just before it, N times the targets of the same users.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pyarrow as pa
import torch

from uqa_ray.data.schema import BPE_COLUMNS, ID_COLUMNS, SEQ_COLUMNS
from uqa_ray.io import InputError

# Longest bag kept per BPE column: titles are long, names short (longer bags are cut at the end).
DEFAULT_MAX_BAG: dict[str, int] = {c: 8 for c in BPE_COLUMNS} | {"uni_seq_title_bpe_token_ids": 16}
TS_COLUMN = "ts"
ITEM_COLUMN = "uni_seq_item_id"


def _to_arrow(name: str, col: Any) -> pa.Array:
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if isinstance(col, pa.Array):
        return col
    col = np.asarray(col, dtype=object) if not isinstance(col, np.ndarray) else col
    if col.dtype != object:  # a dense (B, T) or (B, T, K) numpy array
        return pa.array(list(col.tolist()))
    # Nested numpy object arrays (Ray Data's numpy format): pyarrow cannot convert them directly.
    try:
        rows = [None if r is None else [np.asarray(b).tolist() for b in r] for r in col]
        return pa.array(rows)
    except (TypeError, ValueError, pa.ArrowException) as e:
        raise InputError(f"column {name!r}: cannot read as a list of clicks: {e}") from e


def _columns(batch: Any) -> dict[str, pa.Array]:
    if isinstance(batch, (pa.Table, pa.RecordBatch)):
        return {n: _to_arrow(n, batch.column(n)) for n in batch.schema.names}
    if isinstance(batch, Mapping):
        return {n: _to_arrow(n, c) for n, c in batch.items()}
    raise InputError(f"collate: expected a pyarrow Table/RecordBatch or a dict of columns, got {type(batch)}")


def _outer(name: str, arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(start, length) of each row's click list, absolute into `arr.values`."""
    if not (pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type)):
        raise InputError(f"column {name!r}: expected list<list<int>>, got {arr.type}")
    off = arr.offsets.to_numpy().astype(np.int64)
    lens = off[1:] - off[:-1]
    if arr.null_count:
        lens = np.where(arr.is_null().to_numpy(zero_copy_only=False), 0, lens)
    return off[:-1], lens


def _take_ids(name: str, arr: pa.Array, clicks: np.ndarray) -> np.ndarray:
    """First id of each selected click's bag (0 for an empty bag)."""
    inner = arr.values
    if not (pa.types.is_list(inner.type) or pa.types.is_large_list(inner.type)):
        raise InputError(f"column {name!r}: expected list<list<int>>, got {arr.type}")
    if not pa.types.is_integer(inner.type.value_type):
        raise InputError(f"column {name!r}: ids must be integers, got {inner.type.value_type}")
    ioff = inner.offsets.to_numpy().astype(np.int64)
    flat = inner.values.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    start, blen = ioff[clicks], ioff[clicks + 1] - ioff[clicks]
    out = np.zeros(len(clicks), dtype=np.int64)
    has = blen > 0
    out[has] = flat[start[has]]
    return out


def _take_bags(name: str, arr: pa.Array, clicks: np.ndarray, cap: int) -> tuple[np.ndarray, int]:
    """(n_clicks, K) first-K tokens of each selected click's bag, right-padded with 0."""
    inner = arr.values
    if not (pa.types.is_list(inner.type) or pa.types.is_large_list(inner.type)):
        raise InputError(f"column {name!r}: expected list<list<int>>, got {arr.type}")
    if not pa.types.is_integer(inner.type.value_type):
        raise InputError(f"column {name!r}: ids must be integers, got {inner.type.value_type}")
    ioff = inner.offsets.to_numpy().astype(np.int64)
    flat = inner.values.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    start = ioff[clicks]
    blen = ioff[clicks + 1] - start
    k = int(max(1, min(cap, int(blen.max(initial=0)))))
    take = np.minimum(blen, k)
    total = int(take.sum())
    out = np.zeros(len(clicks) * k, dtype=np.int64)
    if total:
        first = np.repeat(np.cumsum(take) - take, take)
        within = np.arange(total, dtype=np.int64) - first
        src = np.repeat(start, take) + within
        dst = np.repeat(np.arange(len(clicks), dtype=np.int64) * k, take) + within
        out[dst] = flat[src]
    return out.reshape(len(clicks), k), k


def collate(
    batch: Any, max_len: int, max_bag: Mapping[str, int] | None = None
) -> dict[str, torch.Tensor]:
    """Official rows -> {column: LongTensor, "mask": BoolTensor[, "ts": LongTensor]} (module docstring)."""
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    caps = dict(DEFAULT_MAX_BAG)
    caps.update(max_bag or {})
    cols = _columns(batch)
    present = [c for c in SEQ_COLUMNS if c in cols]
    if not present:
        raise InputError(f"collate: none of the official columns {SEQ_COLUMNS} in batch ({sorted(cols)})")
    ref = present[0]
    start, lens = _outer(ref, cols[ref])
    empty = np.flatnonzero(lens == 0)
    if len(empty):
        raise InputError(f"column {ref!r}: row {int(empty[0])} has an empty sequence (0 clicks)")
    for name in present[1:] + ([TS_COLUMN] if TS_COLUMN in cols else []):
        _, other = _outer(name, cols[name])
        bad = np.flatnonzero(other != lens)
        if len(bad):
            r = int(bad[0])
            raise InputError(
                f"column {name!r}: row {r} has {int(other[r])} clicks but {ref!r} has {int(lens[r])}"
            )

    b = len(lens)
    keep = np.minimum(lens, max_len)
    t = int(keep.max())
    # Flat index of every kept click (oldest kept first), and where it lands in the (B, T) grid.
    total = int(keep.sum())
    within = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(keep) - keep, keep)
    row = np.repeat(np.arange(b, dtype=np.int64), keep)
    dst = row * t + within
    out: dict[str, torch.Tensor] = {}
    for name in present:
        arr = cols[name]
        o, _ = _outer(name, arr)
        clicks = np.repeat(o + lens - keep, keep) + within
        if name in ID_COLUMNS:
            grid = np.zeros(b * t, dtype=np.int64)
            grid[dst] = _take_ids(name, arr, clicks)
            out[name] = torch.from_numpy(grid.reshape(b, t))
        else:
            bags, k = _take_bags(name, arr, clicks, int(caps[name]))
            grid = np.zeros((b * t, k), dtype=np.int64)
            grid[dst] = bags
            out[name] = torch.from_numpy(grid.reshape(b, t, k))
    if TS_COLUMN in cols:
        arr = cols[TS_COLUMN]
        o = arr.offsets.to_numpy().astype(np.int64)[:-1]
        flat = arr.values.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        grid = np.zeros(b * t, dtype=np.int64)
        grid[dst] = flat[np.repeat(o + lens - keep, keep) + within]
        out[TS_COLUMN] = torch.from_numpy(grid.reshape(b, t))
    mask = np.zeros(b * t, dtype=bool)
    mask[dst] = True
    out["mask"] = torch.from_numpy(mask.reshape(b, t))
    return out


def next_item_targets(batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """(B, T) targets: the item id clicked at t+1 where t+1 is valid, else 0 (ignored by the losses)."""
    items, mask = batch[ITEM_COLUMN], batch["mask"]
    nxt = torch.zeros_like(items)
    nxt[:, :-1] = torch.where(mask[:, 1:], items[:, 1:], torch.zeros_like(items[:, 1:]))
    return nxt


def eval_targets(batch: Mapping[str, torch.Tensor], last: int = 1
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(row, position, target), flat over rows x `last`, row-major, each row's last click first: the state
    at position t (which, the encoders being causal, never sees click t + 1) scores click t + 1, for the
    last `last` clicks of every row. A click with no click before it gets target 0 (excluded from the
    metrics) and position 0. `last` = 1 is the official protocol (the last click alone); more targets
    per user measure the same held-out next-click accuracy with less noise when eval users are few."""
    if last < 1:
        raise ValueError(f"last must be >= 1, got {last}")
    lengths = batch["mask"].sum(1)
    items = batch[ITEM_COLUMN]
    at = lengths[:, None] - 1 - torch.arange(last, device=lengths.device)[None, :]  # (B, last) target positions
    target = items.gather(1, at.clamp(min=0))
    target = torch.where(at >= 1, target, torch.zeros_like(target))
    row = torch.arange(items.shape[0], device=items.device)[:, None].expand_as(at)
    return row.reshape(-1), (at - 1).clamp(min=0).reshape(-1), target.reshape(-1)


def last_item_targets(batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(position, target) per row: `eval_targets` with the last click alone."""
    _, pos, target = eval_targets(batch, 1)
    return pos, target
