"""`uqa-ray prepare` on the tiny synthetic log, checked against an independent pandas reference."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from uqa_ray import cli
from uqa_ray.data.prepare import PrepareConfig, prepare
from uqa_ray.questions.render import prompt_text
from uqa_ray.data.reindex import eval_users
from uqa_ray.data.schema import BPE_COLUMNS, BPE_SOURCE, ID_COLUMNS, PRETRAIN_FILES, PRETRAIN_SCHEMA, SEQ_COLUMNS
from uqa_ray.data.synthetic import generate, preset
from uqa_ray.data.tokenizer import load_tokenizer

# Tiny users have 45-110 raw clicks: these bounds make both length filters drop users.
CFG = PrepareConfig(min_user_len=50, max_user_len=90)
SETS = ["min_user_len=50", "max_user_len=90"]


def _reference(clicks: pd.DataFrame) -> pd.DataFrame:
    """The documented filters, written plainly: raw max length once, then both minimums to a fixed point."""
    lens = clicks.user_id.map(clicks.user_id.value_counts())
    df = clicks[lens <= CFG.max_user_len]
    while True:
        n = len(df)
        df = df[df.item_id.map(df.item_id.value_counts()) >= CFG.min_item_count]
        df = df[df.user_id.map(df.user_id.value_counts()) >= CFG.min_user_len]
        if len(df) == n:
            return df


@pytest.fixture(scope="module")
def prepared(ray_local, tmp_path_factory):
    root = tmp_path_factory.mktemp("prep")
    generate(preset("tiny"), root / "raw", seed=0)
    # the prompts' text as `uqa-ray prepare` gives it (test_cli_rerun_is_byte_identical compares the two)
    meta = prepare(root / "raw", root / "data", CFG, prompt_text=prompt_text())
    data = root / "data"
    tables = {s: pa.ipc.open_file(data / f).read_all() for s, f in PRETRAIN_FILES.items()}
    users = {s: pq.read_table(data / f"users_{s}.parquet").to_pandas() for s in PRETRAIN_FILES}
    clicks = pq.read_table(root / "raw" / "clicks").to_pandas()
    return root, meta, tables, users, clicks


def _flat(col: pa.ChunkedArray) -> np.ndarray:
    return col.combine_chunks().flatten().flatten().to_numpy()


def test_official_schema_and_file_format(prepared):
    root, meta, tables, users, _ = prepared
    for split, name in PRETRAIN_FILES.items():
        reader = pa.ipc.open_file(root / "data" / name)  # IPC *file* format (Feather v2)
        assert reader.schema.equals(PRETRAIN_SCHEMA)
        assert tables[split].num_rows == meta["counts"][f"{split}_users"] == len(users[split]) > 0
        # every click is a non-empty bag; id bags hold exactly one id
        for c in SEQ_COLUMNS:
            inner = tables[split][c].combine_chunks().flatten()
            assert pa.compute.min(pa.compute.list_value_length(inner)).as_py() >= 1
        for c in ID_COLUMNS:
            assert len(_flat(tables[split][c])) == meta["counts"][f"{split}_clicks"]


def test_filters_hold_and_match_reference(prepared):
    root, meta, tables, users, clicks = prepared
    items = np.concatenate([_flat(t["uni_seq_item_id"]) for t in tables.values()])
    assert items.min() >= 1  # 0 is padding
    assert (np.bincount(items)[1:] >= CFG.min_item_count).all()  # both splits together
    lens = pd.concat(users.values()).length
    assert lens.between(CFG.min_user_len, CFG.max_user_len).all()
    ref = _reference(clicks)
    kept_users = set(pd.concat(users.values()).raw_user_id)
    assert kept_users == set(ref.user_id)
    kept_items = set(pq.read_table(root / "data" / "maps" / "items.parquet")["raw_item_id"].to_pylist())
    assert kept_items == set(ref.item_id)
    assert meta["counts"]["clicks"] == len(ref) == len(items)
    # both filters actually removed something in this fixture
    assert meta["filters"]["dropped_too_long_users"] > 0
    assert meta["counts"]["users"] < clicks.user_id.nunique() - meta["filters"]["dropped_too_long_users"]
    assert meta["counts"]["items"] < clicks.item_id.nunique()


def test_split_disjoint_seeded_nine_to_one(prepared):
    _, meta, _, users, _ = prepared
    tr, ev = users["train"], users["eval"]
    assert not set(tr.user) & set(ev.user) and not set(tr.raw_user_id) & set(ev.raw_user_id)
    n = len(tr) + len(ev)
    assert len(ev) == round(0.1 * n)
    assert sorted(pd.concat([tr.user, ev.user])) == list(range(1, n + 1))  # dense 1..n, 0 = padding
    raw = np.sort(pd.concat([tr.raw_user_id, ev.raw_user_id]).to_numpy())
    assert set(raw[eval_users(raw, 0.1, CFG.seed)]) == set(ev.raw_user_id)
    assert set(raw[eval_users(raw, 0.1, CFG.seed + 1)]) != set(ev.raw_user_id)  # the seed matters


def test_rows_in_user_and_time_order(prepared):
    _, _, tables, users, _ = prepared
    for split, u in users.items():
        assert list(u.row) == list(range(len(u))) and u.user.is_monotonic_increasing
        assert all((np.diff(ts) >= 0).all() for ts in u.ts)
        assert list(u.length) == [len(x) for x in u.ts]
        assert list(u.length) == pa.compute.list_value_length(tables[split]["uni_seq_item_id"]).to_pylist()


def test_maps_round_trip_to_raw_log(prepared):
    """Map every output row back to raw ids through maps/ and compare with the raw log."""
    root, meta, tables, users, clicks = prepared
    maps = root / "data" / "maps"
    items = pq.read_table(maps / "items.parquet").to_pandas().set_index("item")
    attr = {a: pq.read_table(maps / f"{a}.parquet").to_pandas().set_index("id")
            for a in ("cate", "brand", "shop", "seller")}
    catalog = pq.read_table(root / "raw" / "items.parquet").to_pandas().set_index("item_id")
    ref = _reference(clicks)
    tok = load_tokenizer(root / "data" / "tokenizer")
    for split in PRETRAIN_FILES:
        rows = tables[split].to_pylist()
        for (_, u), row in zip(users[split].iterrows(), rows):
            raw = ref[ref.user_id == u.raw_user_id].sort_values(["ts", "item_id"], kind="stable")
            dense = [b[0] for b in row["uni_seq_item_id"]]
            raw_items = items.loc[dense, "raw_item_id"].to_numpy()
            assert list(raw.ts) == list(u.ts)
            # ties in ts are ordered by dense item id = by raw item id (dense ids follow sorted raw ids)
            assert list(raw_items) == list(raw.item_id)
            cat = catalog.loc[raw_items]
            for a in attr:
                got = [b[0] for b in row[f"uni_seq_{a}_id"]]
                assert list(attr[a].loc[got, "raw_id"]) == list(cat[f"{a}_id"])
                assert list(attr[a].loc[got, "name"]) == list(cat[f"{a}_name"])
            for col, src in BPE_SOURCE.items():
                assert [tok.decode(b) for b in row[col]] == list(cat[src])
    assert meta["tokenizer"]["pad_id"] == 0


def test_meta_vocab_is_max_id_plus_one(prepared):
    _, meta, tables, _, _ = prepared
    for c in ID_COLUMNS:
        assert meta["vocab"][c] == max(_flat(t[c]).max() for t in tables.values()) + 1
    bpe_max = max(_flat(t[c]).max() for t in tables.values() for c in BPE_COLUMNS)
    assert bpe_max < meta["vocab"]["bpe"] == meta["tokenizer"]["vocab_size"]
    assert meta["vocab"]["uni_seq_cate_id"] - 1 == meta["counts"]["cate"] <= preset("tiny").n_cates


def test_planted_truth_recoverable(prepared):
    """The top category of a user's recent clicks is the planted current interest, etc. (>= 90%)."""
    root, _, tables, users, _ = prepared
    truth = pq.read_table(root / "data" / "truth.parquet").to_pandas().set_index("user")
    recent = preset("tiny").recent
    hits = {"current": 0, "top3": 0, "brand": 0}
    n = 0
    for split in PRETRAIN_FILES:
        cates = [[b[0] for b in r] for r in tables[split]["uni_seq_cate_id"].to_pylist()]
        brands = [[b[0] for b in r] for r in tables[split]["uni_seq_brand_id"].to_pylist()]
        for user, cs, bs in zip(users[split].user, cates, brands):
            t = truth.loc[user]
            assert t.split == split
            cs, bs = np.array(cs), np.array(bs)
            hits["current"] += np.bincount(cs[-recent:]).argmax() == t.current_cate
            hits["top3"] += set(np.argsort(-np.bincount(cs), kind="stable")[:3]) == set(t.lt_top3_cate)
            hits["brand"] += np.bincount(bs[-recent:][cs[-recent:] == t.current_cate]).argmax() == t.current_brand
            n += 1
    assert n == len(truth)
    assert all(h / n >= 0.9 for h in hits.values()), (hits, n)


def test_cli_rerun_is_byte_identical(prepared, tmp_path):
    root = prepared[0]
    out = tmp_path / "again"
    assert cli.main(["prepare", "--raw", str(root / "raw"), "--out", str(out), "--set", *SETS]) == 0
    first = {p.relative_to(root / "data"): p.read_bytes() for p in (root / "data").rglob("*") if p.is_file()}
    again = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert first.keys() == again.keys()
    changed = [str(k) for k in first if hashlib.sha256(first[k]).digest() != hashlib.sha256(again[k]).digest()]
    assert changed == []
    assert json.loads((out / "meta.json").read_text())["config"]["min_user_len"] == 50
