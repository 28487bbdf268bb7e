"""`uqa-ray plan`: memory per GPU from DeepSpeed's own estimators, and what it implies."""
from __future__ import annotations

import pytest

from uqa_ray.pretrain.planner import GIB, markdown, model_state_bytes, plan


def test_zero_stages_partition_model_states():
    p = 100_000_000
    # ZeRO paper accounting with Adam in mixed precision: 16 bytes/param unpartitioned...
    assert model_state_bytes(p, 10**6, 0, 8) == 16 * p
    # ...ZeRO-1 partitions the 12 optimizer bytes, ZeRO-2 also the gradients, ZeRO-3 everything.
    s1, s2, s3 = (model_state_bytes(p, 10**6, s, 8) for s in (1, 2, 3))
    assert 16 * p > s1 > s2 > s3
    assert model_state_bytes(p, 10**6, 3, 8) < model_state_bytes(p, 10**6, 3, 1)


def test_presets_scale_and_the_1_2b_fits_on_h100s():
    small, big = plan("3.2M", 2, 8), plan("1.2B", 3, 8)
    assert big.params_dense > 300 * small.params_dense
    assert big.model_states > small.model_states and big.total < 80 * GIB
    assert plan("1.2B", 3, 8).model_states < plan("1.2B", 3, 1).model_states
    table = markdown([small, big])
    assert "| 1.2B |" in table and table.count("\n") == 3


def test_row_sparse_tables_leave_zero_and_are_counted_whole():
    from uqa_ray.pretrain.planner import SPARSE_TABLE_BYTES

    dense, ce, sampled = plan("85M", 2, 8), plan("85M", 2, 8, tables="sparse"), plan("85M", 2, 8, tables="sparse",
                                                                                      loss="sampled")
    assert dense.params_total == ce.params_total == sampled.params_total
    # Under the full CE the item table (994,447 x 128) stays with the engine; the sampled loss moves it out too.
    item = 994_447 * 128
    side = (9_330 + 149_750 + 2 * 268_446 + 151_936) * 64  # the four side columns and the BPE bag
    assert ce.model_states == model_state_bytes(dense.params_total - side, item, 2, 8) + SPARSE_TABLE_BYTES * side
    assert sampled.model_states > ce.model_states  # 8 GPUs: ZeRO-2 partitions what the sparse tables hold whole
    assert "| sparse |" in markdown([ce])
    with pytest.raises(ValueError, match="stage 1 or 2"):
        plan("85M", 3, 8, tables="sparse")
