"""collate: hand-written official rows -> right-padded tensors, truncation to the last max_len."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from uqa_ray.data.collate import collate, eval_targets, last_item_targets, next_item_targets
from uqa_ray.data.schema import SEQ_TYPE
from uqa_ray.io import InputError

ITEM, CATE, TITLE = "uni_seq_item_id", "uni_seq_cate_id", "uni_seq_title_bpe_token_ids"


def table(**cols):
    return pa.table({k: pa.array(v, type=SEQ_TYPE) for k, v in cols.items()})


ROWS = dict(
    uni_seq_item_id=[[[1], [2], [3], [4], [5]], [[7], [8]]],
    uni_seq_cate_id=[[[11], [12], [13], [14], [15]], [[17], []]],
    uni_seq_title_bpe_token_ids=[[[10, 11], [12], [], [13, 14, 15], [16]], [[20], [21, 22]]],
)


def test_truncates_to_last_max_len_and_right_pads():
    b = collate(table(**ROWS), max_len=3, max_bag={TITLE: 2})
    assert b[ITEM].tolist() == [[3, 4, 5], [7, 8, 0]]
    assert b[CATE].tolist() == [[13, 14, 15], [17, 0, 0]]  # an empty bag is 0 (unknown)
    assert b["mask"].tolist() == [[True, True, True], [True, True, False]]
    # K = min(longest kept bag = 3, cap 2); longer bags keep their first tokens
    assert b[TITLE].tolist() == [[[0, 0], [13, 14], [16, 0]], [[20, 0], [21, 22], [0, 0]]]
    assert all(t.dtype == torch.long for k, t in b.items() if k != "mask")
    assert b["mask"].dtype == torch.bool


def test_no_truncation_and_bag_width_from_batch():
    b = collate(table(**ROWS), max_len=10)
    assert b[ITEM].tolist() == [[1, 2, 3, 4, 5], [7, 8, 0, 0, 0]]
    assert b[TITLE].shape == (2, 5, 3)  # longest bag 3 < default title cap 16
    assert b[TITLE][0, 0].tolist() == [10, 11, 0]


def test_input_forms_agree():
    t = table(**ROWS)
    ref = collate(t, 4)
    sliced = pa.concat_tables([table(**{k: v[:1] for k, v in ROWS.items()}), t]).slice(1, 2)
    forms = [t.to_batches()[0], {k: t.column(k) for k in ROWS}, sliced,
             {k: np.array([np.array([np.array(bag) for bag in row], dtype=object) for row in v], dtype=object)
              for k, v in ROWS.items()}]
    for f in forms:
        got = collate(f, 4)
        assert set(got) == set(ref)
        for k in ref:
            assert torch.equal(got[k], ref[k]), k


def test_timestamps_follow_the_same_truncation():
    t = table(**ROWS).append_column("ts", pa.array([[100, 200, 300, 400, 500], [7, 9]], pa.list_(pa.int64())))
    b = collate(t, 3)
    assert b["ts"].tolist() == [[300, 400, 500], [7, 9, 0]]


def test_empty_sequence_names_column_and_row():
    bad = dict(ROWS)
    bad[ITEM] = [[[1], [2], [3], [4], [5]], []]
    with pytest.raises(InputError, match=r"uni_seq_item_id.*row 1.*empty"):
        collate(table(**{ITEM: bad[ITEM]}), 4)


def test_length_mismatch_and_wrong_type():
    with pytest.raises(InputError, match=r"uni_seq_cate_id.*row 1"):
        collate(table(uni_seq_item_id=ROWS[ITEM], uni_seq_cate_id=[[[1]] * 5, [[1]]]), 4)
    with pytest.raises(InputError, match="list<list<int>>"):
        collate(pa.table({ITEM: pa.array([1, 2])}), 4)
    with pytest.raises(InputError, match="none of the official columns"):
        collate(pa.table({"x": pa.array([1])}), 4)


def test_training_and_eval_views():
    b = collate(table(**ROWS), max_len=4)  # items [[2,3,4,5],[7,8,0,0]]
    assert next_item_targets(b).tolist() == [[3, 4, 5, 0], [8, 0, 0, 0]]
    pos, target = last_item_targets(b)
    assert pos.tolist() == [2, 0] and target.tolist() == [5, 8]
    single = collate(table(uni_seq_item_id=[[[9]]]), 4)
    assert last_item_targets(single)[1].tolist() == [0]  # one click: nothing to predict
    # the last 3 clicks of each row, last first, each scored from the state just before it
    row, pos, target = eval_targets(b, 3)
    assert row.tolist() == [0, 0, 0, 1, 1, 1]
    assert target.tolist() == [5, 4, 3, 8, 0, 0] and pos.tolist() == [2, 1, 0, 0, 0, 0]
    assert [t.tolist() for t in eval_targets(b, 1)[1:]] == [t.tolist() for t in last_item_targets(b)]
    with pytest.raises(ValueError, match="last must be >= 1"):
        eval_targets(b, 0)
