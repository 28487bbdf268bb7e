"""HR@k / NDCG@k by hand, chunked ranking == dense ranking, most-popular baseline, a tiny learner."""
from __future__ import annotations

import math

import pyarrow as pa
import pytest
import torch

from uqa_ray.data.collate import collate
from uqa_ray.data.schema import SEQ_TYPE
from uqa_ray.encoders import preset_config
from uqa_ray.pretrain.losses import LossConfig
from uqa_ray.pretrain.metrics import (
    finalize, hr_ndcg, item_counts, metric_sums, popularity_ranks, ranks_from_scores, target_ranks,
)
from uqa_ray.pretrain.objective import PretrainObjective


def test_ranks_and_metrics_by_hand():
    #                    pad   1    2    3    4    5
    scores = torch.tensor([[9.0, 0.1, 0.9, 0.5, 0.7, 0.2],   # target 4: beaten by item 2 -> rank 1
                           [9.0, 0.3, 0.3, 0.3, 0.1, 0.0],   # target 3: ties with 1, 2 (smaller ids) -> 2
                           [0.0, 0.5, 0.1, 0.1, 0.1, 0.1],   # target 1: rank 0 (padding never ranked)
                           [0.0, 0.5, 0.1, 0.1, 0.1, 0.1]])  # target 0: no target
    target = torch.tensor([4, 3, 1, 0])
    ranks = ranks_from_scores(scores, target)
    assert ranks.tolist() == [1, 2, 0, -1]
    m = hr_ndcg(ranks, ks=(1, 2, 5))
    assert m["n"] == 3
    assert m["HR@1"] == pytest.approx(1 / 3) and m["HR@2"] == pytest.approx(2 / 3) and m["HR@5"] == 1
    assert m["NDCG@1"] == pytest.approx(1 / 3)
    assert m["NDCG@2"] == pytest.approx((1 + 1 / math.log2(3)) / 3)
    assert m["NDCG@5"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(4)) / 3)
    # sums from two shards add up to the whole (data-parallel evaluation)
    a, b = metric_sums(ranks[:2], (1, 2, 5)), metric_sums(ranks[2:], (1, 2, 5))
    assert finalize({k: a[k] + b[k] for k in a}) == pytest.approx(m)


@pytest.mark.parametrize("chunk", [1, 3, 7, 100])
def test_chunked_target_ranks_equal_dense_with_ties(chunk):
    g = torch.Generator().manual_seed(0)
    q = torch.randint(-2, 3, (6, 3), generator=g).float()  # small integers: many exact ties
    items = torch.randint(-2, 3, (20, 3), generator=g).float()
    target = torch.tensor([1, 5, 19, 0, 7, 7])
    dense = ranks_from_scores(q @ items.T, target)
    assert torch.equal(target_ranks(q, items, target, chunk), dense)
    assert dense[3] == -1


def test_most_popular_baseline_by_hand():
    counts = item_counts(pa.array([[[1], [3]], [[1], [2], [3], [1]], [[4], [3]], [[1], [3], [0]]], SEQ_TYPE), 6)
    assert counts.tolist() == [0, 4, 1, 4, 1, 0]
    ranks = popularity_ranks(counts, torch.tensor([3, 1, 5, 2, 0]))
    # order: 1 (4), 3 (4, larger id), 2 (1), 4 (1), 5 (0)
    assert ranks.tolist() == [1, 0, 4, 2, -1]
    assert item_counts(torch.tensor([[1, 1], [0, 2]]), 3).tolist() == [0, 2, 1]
    with pytest.raises(ValueError, match="outside"):
        item_counts(torch.tensor([5]), 3)


def test_tiny_encoder_learns_and_beats_most_popular():
    # Users walk a fixed item cycle, so the next item is determined by the current one; popularity is flat.
    n_items = 12
    starts = torch.arange(24) % n_items + 1
    rows = [[[int((s - 1 + j) % n_items) + 1] for j in range(8)] for s in starts]
    batch = collate(pa.table({"uni_seq_item_id": pa.array(rows, SEQ_TYPE)}), 8)
    vocab = {"uni_seq_item_id": n_items + 1}
    torch.manual_seed(0)
    enc = preset_config("tiny", vocab, input_mode="no_side", d_model=32, n_heads=2, dropout=0.0, item_dim=16)
    obj = PretrainObjective(enc, LossConfig(chunk_size=5))
    opt = torch.optim.AdamW(obj.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        loss = obj(batch)["loss"]
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 * first
    with torch.no_grad():
        q, target = obj.last_queries(batch)
        model = hr_ndcg(target_ranks(q, obj.encoder.item_input.item_embedding.weight, target, 5))
    pop = hr_ndcg(popularity_ranks(item_counts(batch["uni_seq_item_id"], n_items + 1), target))
    assert model["HR@1"] > 0.9 > pop["HR@1"] + 0.5
