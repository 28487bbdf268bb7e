"""The eval set does not depend on the worker count; the heuristics rank as specified; sliding windows
make every click but the first a target exactly once."""
from __future__ import annotations

import types

import numpy as np
import pyarrow as pa
import pytest
import torch

from uqa_ray.config import build
from uqa_ray.data.collate import next_item_targets, collate
from uqa_ray.data.schema import ID_COLUMNS
from uqa_ray.data.windows import sliding_windows, window_bounds
from uqa_ray.encoders import preset_config
from uqa_ray.pretrain.config import PretrainConfig
from uqa_ray.pretrain.loop import evaluate
from uqa_ray.pretrain.metrics import popularity_ranks, recent_popular_ranks
from uqa_ray.pretrain.objective import PretrainObjective
from uqa_ray.pretrain.session import eval_rows

SEQ = pa.list_(pa.list_(pa.int64()))


def _table(rows: list[list[int]]) -> pa.Table:
    return pa.table({"uni_seq_item_id": pa.array([[[i] for i in r] for r in rows], SEQ)})


def test_recent_popular_matches_an_explicit_list():
    g = np.random.default_rng(0)
    n_items = 30
    counts = torch.tensor(g.integers(0, 5, n_items))
    history = torch.tensor(g.integers(0, n_items, (40, 8)))  # 0 = padding, anywhere
    target = torch.tensor(g.integers(0, n_items, 40))
    ranks = recent_popular_ranks(history, counts, target)
    pop_order = [i for i in sorted(range(1, n_items), key=lambda i: (-int(counts[i]), i))]
    for row, t, r in zip(history.tolist(), target.tolist(), ranks.tolist()):
        recent = []
        for i in reversed(row):
            if i > 0 and i not in recent:
                recent.append(i)
        full = recent + [i for i in pop_order if i not in recent]
        assert r == (full.index(t) if t > 0 else -1)
    # With no history it is the most-popular list itself.
    empty = torch.zeros_like(history)
    assert torch.equal(recent_popular_ranks(empty, counts, target), popularity_ranks(counts, target))


@pytest.mark.parametrize("n", [1, 7, 33])
@pytest.mark.parametrize("world", [1, 2, 3])
def test_eval_rows_cover_every_row_once(n, world):
    batch = pa.table({"x": list(range(n))})
    seen = []
    for rank in range(world):
        rows, keep = eval_rows(batch, rank, world)
        assert rows.num_rows >= 1  # every rank runs a forward (ZeRO-3 gathers are collectives)
        if keep:
            seen += rows.column("x").to_pylist()
    assert sorted(seen) == list(range(n))


class _Session:
    def __init__(self, table: pa.Table, rank: int, world: int, batch: int) -> None:
        self.table, self.rank, self.world, self.batch = table, rank, world, batch

    def eval_batches(self):
        step = self.batch * self.world
        return (self.table.slice(s, step) for s in range(0, self.table.num_rows, step))


def test_evaluate_is_the_same_on_one_and_two_ranks():
    g = np.random.default_rng(1)
    table = _table([list(g.integers(1, 50, g.integers(1, 12))) for _ in range(37)])
    cfg = build(PretrainConfig, {"preset": "tiny", "max_len": 12, "ks": (1, 5, 10)})
    enc = preset_config("tiny", {c: 50 for c in ID_COLUMNS}, input_mode="no_side", max_len=12)
    torch.manual_seed(0)
    engine = types.SimpleNamespace(module=PretrainObjective(enc))
    one, one_ranks = evaluate(engine, _Session(table, 0, 1, 4), cfg, enc, torch.device("cpu"))
    parts, part_ranks = zip(*[evaluate(engine, _Session(table, r, 2, 4), cfg, enc, torch.device("cpu"))
                              for r in range(2)])
    # Per user: the same rows with the same ranks, row = the user's index in the eval file.
    assert sorted(part_ranks[0] + part_ranks[1]) == sorted(one_ranks)
    assert [r for r, _ in sorted(one_ranks)] == [i for i, r in enumerate(table.column("uni_seq_item_id").to_pylist())
                                                 if len(r) >= 2]
    # Without a process group the all-reduce is the identity: combine the two ranks' means by hand.
    n = sum(p["n"] for p in parts)
    assert n == one["n"] == sum(len(r) >= 2 for r in table.column("uni_seq_item_id").to_pylist())
    for k in ("HR@1", "HR@10", "NDCG@5"):
        assert sum(p[k] * p["n"] for p in parts) / n == pytest.approx(one[k], abs=1e-12)
    positions = sum(p["positions"] for p in parts)
    assert positions == one["positions"] == sum(len(r) - 1 for r in table.column("uni_seq_item_id").to_pylist())
    assert sum(p["loss"] * p["positions"] for p in parts) / positions == pytest.approx(one["loss"], rel=1e-6)
    # The eval loss is the full next-item cross-entropy of every position, as the objective trains.
    batch = collate(table, 12)
    with torch.no_grad():
        want = engine.module.eval()(batch)["loss"]
    assert one["loss"] == pytest.approx(float(want), rel=1e-5)


@pytest.mark.parametrize("max_len", [2, 3, 5, 21])
def test_sliding_windows_target_every_click_once(max_len):
    g = np.random.default_rng(max_len)
    rows = [list(range(1000 * u + 1, 1000 * u + 1 + int(g.integers(0, 60)))) for u in range(25)]
    windows = sliding_windows(_table(rows), max_len)
    batch = collate(windows, max_len)
    assert batch["mask"].sum(1).max() <= max_len
    targets = next_item_targets(batch)
    got = sorted(int(t) for t in targets[targets > 0])
    want = sorted(i for r in rows for i in r[1:])  # every click but each user's first
    assert got == want
    # The last window of each user is what the official loader trains on: its last max_len clicks.
    last = [w for w in windows.column("uni_seq_item_id").to_pylist()]
    users_with_targets = [r for r in rows if len(r) >= 2]
    firsts = [w for w in last if w and w[-1][0] in {r[-1] for r in users_with_targets}]
    assert sorted(tuple(i[0] for i in w) for w in firsts) == sorted(tuple(r[-max_len:]) for r in users_with_targets)


def test_window_bounds_and_config():
    row, start, stop = window_bounds(np.array([7, 1, 0, 2]), 3)
    assert row.tolist() == [0, 0, 0, 3] and start.tolist() == [4, 2, 0, 0] and stop.tolist() == [7, 5, 3, 2]
    assert build(PretrainConfig, {}).windows == "last"  # the official loader by default
    with pytest.raises(Exception, match="windows"):
        build(PretrainConfig, {"windows": "crops"})
