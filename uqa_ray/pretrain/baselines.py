"""Heuristic baselines, scored on exactly the eval users and targets the model is scored on.

`most_popular`: every user gets the training click counts' ranking. `recent_popular`: the user's own
distinct history items, most recent first, then the most popular others. The history is the model's own
input window (the last `max_len` clicks, of which the last is the target), so the two heuristics and the
model see the same clicks. Read straight from the prepared Arrow files (memory-mapped, batch by batch),
in file order, so that eval row i here is eval row i of the model's per-user ranks (`loop.evaluate`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

import pyarrow as pa
import torch

from uqa_ray.data.collate import ITEM_COLUMN, collate, eval_targets
from uqa_ray.data.stream import open_ipc
from uqa_ray.pretrain.metrics import hr_ndcg, item_counts, popularity_ranks, recent_popular_ranks

BASELINES = ("most_popular", "recent_popular")


def _batches(path: str | Path, limit: int = 0) -> Iterator[pa.RecordBatch]:
    reader, seen = open_ipc(path), 0
    for i in range(reader.num_record_batches):
        batch = reader.get_record_batch(i).select([ITEM_COLUMN])
        if limit:
            batch = batch.slice(0, max(0, limit - seen))
        seen += batch.num_rows
        if batch.num_rows:
            yield batch


def train_counts(train_file: str | Path, n_items: int) -> torch.Tensor:
    """Click count per item id over every training click."""
    counts = torch.zeros(n_items, dtype=torch.long)
    for b in _batches(train_file):
        counts += item_counts(b.column(ITEM_COLUMN), n_items)
    return counts


def heuristic_baselines(train_file: str | Path, eval_file: str | Path, n_items: int, max_len: int,
                        ks: Iterable[int], eval_users: int = 0, last: int = 1
                        ) -> tuple[dict[str, dict[str, float]], dict[str, list]]:
    """({baseline: HR@k / NDCG@k / n}, per-target {"row": eval row x `last` + j of each scored target, baseline:
    ranks}) for every name in `BASELINES`, over the first `eval_users` eval rows (0 = all) and the last
    `last` clicks of each (`data.collate.eval_targets`, the model's order)."""
    counts = train_counts(train_file, n_items)
    ranks: dict[str, list[torch.Tensor]] = {b: [] for b in BASELINES}
    rows, offset = [], 0
    for b in _batches(eval_file, eval_users):
        batch = collate(b, max_len)
        row, pos, target = eval_targets(batch, last)
        ids = batch[ITEM_COLUMN][row]
        history = torch.where(torch.arange(ids.shape[1])[None, :] <= pos[:, None], ids, torch.zeros_like(ids))
        ranks["most_popular"].append(popularity_ranks(counts, target))
        ranks["recent_popular"].append(recent_popular_ranks(history, counts, target))
        j = torch.arange(len(row)) % last  # the key of loop.evaluate's pairs: eval row x last + j
        rows.append(((offset + row) * last + j)[target > 0])
        offset += b.num_rows
    ks = tuple(ks)
    cat = {name: torch.cat(r) for name, r in ranks.items()}
    metrics = {name: hr_ndcg(r, ks) for name, r in cat.items()}
    per_user = {"row": torch.cat(rows).tolist()} | {name: r[r >= 0].tolist() for name, r in cat.items()}
    return metrics, per_user
