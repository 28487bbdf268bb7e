"""HR@k and NDCG@k of the last click, by full ranking over every item (UQABENCH.md section 3).

Rank rule (0-based): the number of real items (id >= 1) that score strictly higher than the target,
plus those that tie with it and have a smaller id. Ties are thus broken by id, deterministically and
identically for the model and the most-popular baseline (whose scores, click counts, tie a lot).
HR@k = mean(rank < k); NDCG@k = mean(1/log2(rank + 2) if rank < k else 0) (one relevant item).

Ranks are computed in item chunks (`target_ranks`), so B x V scores are never materialized. For
data-parallel evaluation, all-reduce `metric_sums` across ranks and then call `finalize`.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping

import numpy as np
import pyarrow as pa
import torch

DEFAULT_KS = (1, 5, 10, 20, 50)
OFFICIAL_KS = (1, 5, 10, 20, 50, 100)


def _rank_chunk(scores: torch.Tensor, ids: torch.Tensor, tscore: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    other = ids[None, :] != target[:, None]
    above = scores > tscore[:, None]
    tie = (scores == tscore[:, None]) & (ids[None, :] < target[:, None])
    return ((above | tie) & other).sum(1)


def target_ranks(
    query: torch.Tensor, items: torch.Tensor, target: torch.Tensor, chunk_size: int = 65536
) -> torch.Tensor:
    """Rank of each row's target among items 1..V-1 scored by query (B, D) . items (V, D) (row 0 =
    padding, never ranked). Rows with target 0 get rank -1 (no target; left out of the metrics).

    The target's own score is read from the same chunked matmul that scores the other items (a first
    pass over the chunks holding targets), so ties compare bitwise-identical numbers.
    """
    q, w = query.float(), items.float()
    tgt = target.clamp(min=0)
    starts = range(1, w.shape[0], chunk_size)
    tscore = torch.zeros(len(target), device=query.device)
    for s in starts:
        here = (tgt >= s) & (tgt < s + chunk_size)
        if bool(here.any()):
            sc = q @ w[s : s + chunk_size].T
            tscore = torch.where(here, sc.gather(1, (tgt - s).clamp(0, sc.shape[1] - 1)[:, None])[:, 0], tscore)
    rank = torch.zeros(len(target), dtype=torch.long, device=query.device)
    for s in starts:
        wc = w[s : s + chunk_size]
        ids = torch.arange(s, s + wc.shape[0], device=query.device)
        rank += _rank_chunk(q @ wc.T, ids, tscore, tgt)
    return torch.where(target > 0, rank, torch.full_like(rank, -1))


def ranks_from_scores(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Same rule from a dense (B, V) score matrix (column 0 ignored)."""
    tgt = target.clamp(min=0)
    tscore = scores.gather(1, tgt[:, None])[:, 0]
    ids = torch.arange(scores.shape[1], device=scores.device)
    rank = _rank_chunk(scores[:, 1:], ids[1:], tscore, tgt)
    return torch.where(target > 0, rank, torch.full_like(rank, -1))


def _popularity_order(counts: torch.Tensor) -> torch.Tensor:
    """Rank of every item id in the most-popular list (id 0 last)."""
    c = counts.double().clone()
    c[0] = float("-inf")
    # Stable sort by descending count keeps ids ascending within a tie: exactly the rank rule above.
    order = torch.sort(-c, stable=True).indices
    rank_of = torch.empty_like(order)
    rank_of[order] = torch.arange(len(order), device=order.device)
    return rank_of


def popularity_ranks(counts: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Most-popular baseline: every user gets the same list, items by training click count."""
    rank = _popularity_order(counts).to(target.device)[target.clamp(min=0)]
    return torch.where(target > 0, rank, torch.full_like(rank, -1))


def recent_popular_ranks(history: torch.Tensor, counts: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Recent-items-then-popular baseline: the distinct items of each row's `history` (B, T), most recent
    (highest position) first, then every other item in most-popular order. 0 in `history` is padding.
    On repeat-heavy logs this is a strong floor (docs/encoders.md)."""
    pop = _popularity_order(counts).numpy()
    hist, tgt = history.cpu().numpy(), target.cpu().numpy()
    rank = np.full(len(tgt), -1, dtype=np.int64)
    for r, (row, t) in enumerate(zip(hist, tgt)):
        if t <= 0:
            continue
        ids = row[::-1][row[::-1] > 0]
        recent = ids[np.sort(np.unique(ids, return_index=True)[1])]  # distinct, most recent first
        hit = np.flatnonzero(recent == t)
        if len(hit):
            rank[r] = hit[0]
        else:  # after the recent items, the popular ones that are not among them
            rank[r] = len(recent) + pop[t] - int((pop[recent] < pop[t]).sum())
    return torch.from_numpy(rank).to(target.device)


def item_counts(ids: torch.Tensor | np.ndarray | pa.Array | pa.ChunkedArray, n_items: int) -> torch.Tensor:
    """Click count per item id (length n_items = the item vocabulary, id 0 = padding counts 0), from a
    tensor/array of ids or an official `list<list<int>>` item column (all clicks of all rows)."""
    if isinstance(ids, (pa.Array, pa.ChunkedArray)):
        flat = ids
        while pa.types.is_list(flat.type) or pa.types.is_large_list(flat.type):
            flat = flat.flatten()
        ids = flat.to_numpy(zero_copy_only=False) if isinstance(flat, pa.Array) else np.concatenate(
            [c.to_numpy(zero_copy_only=False) for c in flat.chunks] or [np.zeros(0, np.int64)])
    t = ids if isinstance(ids, torch.Tensor) else torch.from_numpy(np.array(ids, dtype=np.int64))
    t = t.reshape(-1).long()
    if len(t) and (int(t.max()) >= n_items or int(t.min()) < 0):
        raise ValueError(f"item id {int(t.max()) if int(t.max()) >= n_items else int(t.min())} outside [0, {n_items})")
    counts = torch.bincount(t, minlength=n_items)
    counts[0] = 0
    return counts


def metric_sums(ranks: torch.Tensor, ks: Iterable[int] = DEFAULT_KS) -> dict[str, float]:
    """Sums (not means) of HR@k and NDCG@k over rows with a target, plus their number `n`."""
    r = ranks[ranks >= 0].double()
    out = {"n": float(len(r))}
    gain = 1.0 / torch.log2(r + 2.0)
    for k in ks:
        hit = r < k
        out[f"HR@{k}"] = float(hit.sum())
        out[f"NDCG@{k}"] = float((gain * hit).sum())
    return out


def finalize(sums: Mapping[str, float]) -> dict[str, float]:
    n = sums["n"]
    return {k: (v / n if n else math.nan) for k, v in sums.items() if k != "n"} | {"n": n}


def hr_ndcg(ranks: torch.Tensor, ks: Iterable[int] = DEFAULT_KS) -> dict[str, float]:
    return finalize(metric_sums(ranks, ks))
