"""Ground-truth functions on hand-written sequences, answers worked out by hand."""
import numpy as np

from tests.questions.builder import CATES, EVAL_SEQS, ITEMS
from uqa_ray.questions import truth


def a(*v):
    return np.array(v, np.int64)


def test_direct_feature():
    v = a(5, 6, 7, 8)
    assert truth.kth(v, 1, from_end=False) == 5 and truth.kth(v, 3, from_end=False) == 7
    assert truth.kth(v, 1, from_end=True) == 8 and truth.kth(v, 4, from_end=True) == 5
    assert truth.kth(v, 5, from_end=False) is None and truth.kth(v, 0, from_end=True) is None
    assert truth.kth(a(0, 6), 1, from_end=False) is None  # unknown value: never an answer
    assert truth.last_k(v, 3) == (6, 7, 8) and truth.last_k(v, 5) is None
    assert truth.last_k(a(1, 0, 2), 2) is None


def test_match_feature_counts_and_drops_zero():
    v = a(1, 2, 1, 0, 1)
    assert truth.count(v, 1) == 3 and truth.count(v, 2) == 1
    assert truth.count(v, 3) is None and truth.count(v, 0) is None


def test_long_term_top3_strict_order():
    assert truth.top_k(a(4, 4, 4, 4, 2, 2, 2, 9, 9, 1), 3) == (4, 2, 9)
    assert truth.top_k(a(4, 4, 2, 2, 9), 3) is None  # 4 and 2 tie: the order is not unique
    assert truth.top_k(a(4, 4, 4, 2, 2, 9, 1), 3) is None  # 3rd and 4th tie
    assert truth.top_k(a(4, 4, 2), 3) is None  # fewer than 3 values
    assert truth.top_k(a(0, 0, 0, 0, 4, 4, 4, 2, 2, 9), 3) == (4, 2, 9)  # unknown never counts


def test_short_term_and_trajectory():
    assert truth.top1(a(3, 1, 1, 2)) == 1 and truth.top1(a(1, 2)) is None and truth.top1(a(0, 0)) is None
    assert truth.windows(10, 3) == [(0, 4), (4, 7), (7, 10)]
    v = a(1, 1, 2, 1, 2, 2, 3, 2, 3, 3)  # windows [1,1,2,1] [2,2,3] [2,3,3]
    assert truth.trajectory(v, 3, 3) == (1, 2, 3)
    assert truth.trajectory(v, 3, 4) is None  # windows shorter than 4
    assert truth.trajectory(a(1, 1, 1, 1, 1, 1), 3, 2) is None  # no change
    assert truth.trajectory(a(1, 2, 1, 1, 2, 2), 3, 2) is None  # first window tied


def test_user0_categories_by_hand():
    # user 0: 连衣裙 (items 1, 2, 11) x8, 手机 (3, 4) x12, 口红 x1, 零食 x1, 耳机 (9, 10) x3
    cates = a(*[ITEMS[i][1] for i in EVAL_SEQS[0]])
    assert tuple(CATES[c] for c in truth.top_k(cates, 3)) == ("手机", "连衣裙", "耳机")
    assert CATES[truth.top1(cates[-5:])] == "手机"  # last 5 clicks: 3, 4, 9, 3, 3
    assert tuple(CATES[c] for c in truth.trajectory(cates, 3, 4)) == ("连衣裙", "手机", "手机")
