"""Property-based bad input to `prepare` (raw log and --official): every call either succeeds with an
output that checks out against an independent reference, or raises an InputError whose one-line
message names the file (and the column or value); nothing else escapes, and the output folder (with an
earlier run's files in it) is byte-identical afterwards.

Schema-level damage is caught before Ray starts, so those properties run many examples; value-level
damage reaches the Ray passes (seconds per example), so that property runs a dozen.
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from tests.data.malformed import (
    apply_edit, apply_file_edit, assert_no_temporaries, assert_unchanged, check_error, edit_sequences, file_edit,
    props, seq_edit, snapshot, table_edit, write_ipc,
)
from uqa_ray.data.official import prepare_official
from uqa_ray.data.prepare import PrepareConfig, prepare
from uqa_ray.data.schema import (
    BPE_COLUMNS, CATALOG_SCHEMA, CLICK_SCHEMA, ID_COLUMNS, PRETRAIN_FILES, PRETRAIN_SCHEMA, SEQ_COLUMNS, USERS_FILES,
)
from uqa_ray.data.synthetic import TRUTH_SCHEMA
from uqa_ray.io import InputError

CFG = PrepareConfig(min_item_count=2, min_user_len=3, max_user_len=10, eval_fraction=0.25, vocab_size=300,
                    rows_per_part=7, rows_per_batch=2)  # small parts and batches: several of each
ID_FIELDS = ["item_id", "cate_id", "brand_id", "shop_id", "seller_id"]
NAME_FIELDS = ["title", "cate_name", "brand_name", "shop_name", "seller_name"]


def _distinct(n: int):
    """n sorted distinct ids anywhere in +-2^40, as a start and positive gaps (a set strategy retries
    draws until they differ, which derandomized runs often give up on)."""
    return st.tuples(st.integers(-(2**40), 2**40), st.lists(st.integers(1, 2**30), min_size=n - 1, max_size=n - 1)
                     ).map(lambda s: [int(v) for v in np.cumsum([s[0], *s[1]])])


@st.composite
def raw_logs(draw):
    """(clicks, catalog, truth): a small log that is valid as drawn (ids anywhere in int64, names any text)."""
    n_items = draw(st.integers(3, 7))
    items = draw(_distinct(n_items))
    attr = st.lists(st.integers(-5, 3), min_size=n_items, max_size=n_items)
    names = st.lists(st.text(max_size=6), min_size=n_items, max_size=n_items)
    catalog = pa.table({"item_id": items, **{c: draw(attr) for c in ID_FIELDS[1:]},
                        **{c: draw(names) for c in NAME_FIELDS}}, schema=CATALOG_SCHEMA)
    users = draw(_distinct(draw(st.integers(2, 5))))
    rows = [(u, items[k], ts) for u in users
            for k, ts in draw(st.lists(st.tuples(st.integers(0, n_items - 1), st.integers(-3, 3)), min_size=3,
                                       max_size=12))]
    clicks = pa.table({c: [r[i] for r in rows] for i, c in enumerate(CLICK_SCHEMA.names)}, schema=CLICK_SCHEMA)
    truth = pa.table({"user_id": users, "lt_top3_cate": [[1, 2, 3]] * len(users),
                      "lt_top3_share": [[0.5, 0.3, 0.2]] * len(users), "current_cate": [2] * len(users),
                      "trajectory_cate": [[1, 2]] * len(users), "phase_len": [[4, 4]] * len(users),
                      "current_brand": [0] * len(users), "lt_top3_brand": [[1, 0, 3]] * len(users)},
                     schema=TRUTH_SCHEMA)
    return clicks, catalog, truth


def write_raw(root, clicks: pa.Table, catalog: pa.Table, truth: pa.Table | None, shards: int = 2):
    raw = root / "raw"
    (raw / "clicks").mkdir(parents=True)
    step = -(-clicks.num_rows // shards) if clicks.num_rows else 0
    for s in range(shards):
        pq.write_table(clicks.slice(s * step, step), raw / "clicks" / f"part-{s:05d}.parquet")
    pq.write_table(catalog, raw / "items.parquet")
    if truth is not None:
        pq.write_table(truth, raw / "truth.parquet")
    return raw


def earlier_output(root):
    """An output folder from an earlier run: a failed run must leave it (and its parent) as it was."""
    out = root / "data"
    out.mkdir()
    (out / "meta.json").write_text("earlier run")
    (out / "pretrain_data_train.arrow").write_bytes(b"earlier bytes")
    return out


def fails_cleanly(run, root, *words) -> InputError:
    before = snapshot(root)
    with pytest.raises(InputError) as e:
        run()
    check_error(e.value, *words)
    assert_unchanged(root, before)
    return e.value


# --- Schema-level damage: caught by the footer checks, before any Ray work -----------------------------
def _target_edits():
    clicks = st.tuples(st.just("clicks"), table_edit(CLICK_SCHEMA.names, value_edits=False))
    catalog = st.tuples(st.just("catalog"), st.one_of(
        table_edit(CATALOG_SCHEMA.names, value_edits=False),
        st.tuples(st.just("null"), st.sampled_from(ID_FIELDS), st.lists(st.integers(0, 9), min_size=1, max_size=2)),
        st.tuples(st.just("duplicate"), st.just(""), st.integers(1, 2)),
        st.tuples(st.just("empty"), st.just(""), st.none())))
    truth = st.tuples(st.just("truth"), st.one_of(
        st.tuples(st.sampled_from(["drop", "retype"]), st.just("user_id"), st.just("string")),
        st.tuples(st.just("retype"), st.sampled_from(["current_cate", "lt_top3_brand"]),
                  st.sampled_from(["string", "double"]))))
    files = st.tuples(st.sampled_from(["clicks-file", "catalog-file", "truth-file"]),
                      st.tuples(st.just("truncate"), st.floats(0.0, 0.999)))
    whole = st.tuples(st.sampled_from(["no-shards", "no-catalog", "empty-log"]), st.none())
    return st.one_of(clicks, catalog, truth, files, whole)


@props(60)
@given(log=raw_logs(), edit=_target_edits())
def test_schema_damage_to_raw_log_is_named_before_ray(tmp_path_factory, log, edit):
    clicks, catalog, truth = log
    target, e = edit
    root = tmp_path_factory.mktemp("p")
    if target == "clicks":
        # the damaged shard first: the file a message names is the first bad one
        raw = write_raw(root, apply_edit(clicks, e), catalog, truth, shards=1)
        pq.write_table(clicks, raw / "clicks" / "part-00001.parquet")
    else:
        raw = write_raw(root, clicks, apply_edit(catalog, e) if target == "catalog" else catalog,
                        apply_edit(truth, e) if target == "truth" else truth)
    bad = {"clicks": "part-00000.parquet", "catalog": "items.parquet", "truth": "truth.parquet",
           "clicks-file": "part-00001.parquet", "catalog-file": "items.parquet", "truth-file": "truth.parquet",
           "no-shards": "clicks", "no-catalog": "items.parquet", "empty-log": "clicks"}[target]
    if target.endswith("-file"):
        apply_file_edit(next(raw.rglob(bad)), e)
    elif target == "no-shards":
        for p in (raw / "clicks").iterdir():
            p.unlink()
    elif target == "no-catalog":
        (raw / "items.parquet").unlink()
    elif target == "empty-log":
        for p in (raw / "clicks").iterdir():
            pq.write_table(clicks.slice(0, 0), p)
    words = [bad]
    if target in ("clicks", "catalog", "truth") and e[0] in ("drop", "rename", "retype", "null"):
        words.append(e[1])
    out = earlier_output(root)
    # no ray_local fixture: an error raised here must not depend on Ray having been started
    fails_cleanly(lambda: prepare(raw, out, CFG), root, *words)


# --- Value-level damage: reaches the Ray passes ----------------------------------------------------
def _value_edits():
    """Up to two edits; half of the lists hold only edits that leave a valid log (narrower ints, repeated
    clicks, empty names, unclicked items, an empty shard, no truth file), so that both outcomes are
    exercised: nulls and unknown items must fail, garbled bytes may go either way."""
    valid = st.one_of(
        st.tuples(st.just("narrow"), st.sampled_from(CLICK_SCHEMA.names),
                  st.sampled_from(["int32", "int16", "uint64"])),
        st.tuples(st.just("repeat-clicks"), st.integers(1, 8)),
        st.tuples(st.just("no-names"), st.sampled_from(NAME_FIELDS), st.sampled_from(["null", "empty"])),
        st.tuples(st.just("unclicked-items"), st.integers(1, 3)),
        st.tuples(st.just("empty-shard"),),
        st.tuples(st.just("no-truth"),),
    )
    bad = st.one_of(
        st.tuples(st.just("null-click"), st.sampled_from(CLICK_SCHEMA.names), st.integers(0, 60)),
        st.tuples(st.just("unknown-item"), st.integers(0, 60)),
        st.tuples(st.just("garble"), st.sampled_from(["part-00000.parquet", "items.parquet"]), st.floats(0.05, 0.6)),
    )
    return st.one_of(st.lists(valid, min_size=1, max_size=2), st.lists(st.one_of(bad, valid), min_size=1, max_size=2))


def _apply_values(clicks, catalog, truth, edits):
    for e in edits:
        if e[0] == "null-click":
            clicks = apply_edit(clicks, ("null", e[1], [e[2]]))
        elif e[0] == "unknown-item":
            known = set(catalog["item_id"].to_pylist())
            clicks = apply_edit(clicks, ("set", "item_id", (e[1], next(v for v in range(7, 10**6) if v not in known))))
        elif e[0] == "narrow":
            try:  # values that do not fit stay int64 (the edit is then a no-op)
                clicks = clicks.set_column(clicks.column_names.index(e[1]), e[1], clicks[e[1]].cast(e[2]))
            except pa.ArrowInvalid:
                pass
        elif e[0] == "repeat-clicks":
            clicks = pa.concat_tables([clicks, clicks.slice(0, e[1]).cast(clicks.schema)])
        elif e[0] == "no-names":
            col = pa.nulls(catalog.num_rows, pa.string()) if e[2] == "null" else pa.array([""] * catalog.num_rows)
            catalog = catalog.set_column(catalog.column_names.index(e[1]), e[1], col)
        elif e[0] == "unclicked-items":
            top = max(catalog["item_id"].to_pylist())
            extra = [{**catalog.slice(0, 1).to_pylist()[0], "item_id": top + 1 + k} for k in range(e[1])]
            catalog = pa.concat_tables([catalog, pa.Table.from_pylist(extra, schema=CATALOG_SCHEMA)])
        elif e[0] == "no-truth":
            truth = None
    return clicks, catalog, truth


def reference(clicks: pa.Table, catalog: pa.Table, cfg: PrepareConfig) -> dict[int, list[int]]:
    """Raw user id -> its kept raw item ids in output order, by the README's rules, in plain Python."""
    rows = list(zip(*(clicks[c].to_pylist() for c in CLICK_SCHEMA.names)))
    by_user: dict[int, list] = {}
    for u, i, t in rows:
        by_user.setdefault(u, []).append((t, i))
    users = {u for u, c in by_user.items() if len(c) <= cfg.max_user_len}
    items = set(catalog["item_id"].to_pylist())
    while True:
        count: dict[int, int] = {}
        for u in users:
            for _, i in by_user[u]:
                if i in items:
                    count[i] = count.get(i, 0) + 1
        new_items = {i for i in items if count.get(i, 0) >= cfg.min_item_count}
        new_users = {u for u in users if sum(i in new_items for _, i in by_user[u]) >= cfg.min_user_len}
        if (new_items, new_users) == (items, users):
            return {u: [i for _, i in sorted(c for c in by_user[u] if c[1] in items)] for u in sorted(users)}
        items, users = new_items, new_users


def check_prepared(out, meta: dict, cfg: PrepareConfig, want: dict[int, list[int]] | None) -> None:
    """Structure (schema, one bag per click in every column, ids in the vocabularies, lengths in the
    bounds, sidecars agree) and, when the input was not garbled, exactly the reference's users/clicks."""
    raw_item = dict(zip(*pq.read_table(out / "maps" / "items.parquet", columns=["item", "raw_item_id"])
                        .to_pydict().values()))
    got: dict[int, list[int]] = {}
    for split in ("train", "eval"):
        t = ipc.open_file(str(out / PRETRAIN_FILES[split])).read_all()
        assert t.schema == PRETRAIN_SCHEMA
        users = pq.read_table(out / USERS_FILES[split]).to_pydict()
        assert users["row"] == list(range(t.num_rows)) and meta["counts"][f"{split}_users"] == t.num_rows
        cols = {c: t[c].to_pylist() for c in SEQ_COLUMNS}
        for r in range(t.num_rows):
            n = len(cols["uni_seq_item_id"][r])
            assert cfg.min_user_len <= n <= cfg.max_user_len and users["length"][r] == n == len(users["ts"][r])
            for c in SEQ_COLUMNS:
                assert len(cols[c][r]) == n and all(len(bag) >= 1 for bag in cols[c][r]), (c, r)
                vocab = meta["vocab"][c]
                assert all(0 <= v < vocab for bag in cols[c][r] for v in bag), (c, r)
            for c in ID_COLUMNS:
                assert all(len(bag) == 1 and bag[0] >= 1 for bag in cols[c][r]), (c, r)
            got[users["raw_user_id"][r]] = [raw_item[b[0]] for b in cols["uni_seq_item_id"][r]]
    assert meta["counts"]["users"] == len(got) and meta["counts"]["clicks"] == sum(map(len, got.values()))
    assert meta["vocab"]["bpe"] == meta["vocab"][BPE_COLUMNS[0]]
    if want is not None:
        assert got == want
        assert meta["counts"]["items"] == len({i for s in want.values() for i in s})


@props(12, shrink=False)
@given(log=raw_logs(), edits=_value_edits())
def test_value_damage_to_raw_log(ray_local, tmp_path_factory, log, edits):
    clicks, catalog, truth = _apply_values(*log, edits)
    root = tmp_path_factory.mktemp("v")
    raw = write_raw(root, clicks, catalog, truth)
    kinds = {e[0] for e in edits}
    if "empty-shard" in kinds:
        pq.write_table(clicks.slice(0, 0), raw / "clicks" / "part-00002.parquet")
    for e in edits:
        if e[0] == "garble":
            apply_file_edit(next(raw.rglob(e[1])), ("garble", e[2]))
    out = earlier_output(root)
    before = snapshot(root)
    try:
        meta = prepare(raw, out, CFG)
    except InputError as err:
        event(f"InputError ({sorted(kinds)})")
        check_error(err)
        assert any(w in str(err) for w in ("part-0000", "items.parquet", "truth.parquet", str(raw))), str(err)
        assert_unchanged(root, before)
        if kinds & {"null-click", "unknown-item", "garble"}:
            return
        assert "filtered away" in str(err) and not reference(clicks, catalog, CFG), str(err)
        return
    event(f"prepared ({sorted(kinds)})")
    assert not kinds & {"null-click", "unknown-item"}, "a null or unknown item was accepted"
    assert_no_temporaries(root)
    check_prepared(out, meta, CFG, None if "garble" in kinds else reference(clicks, catalog, CFG))
    if truth is not None:
        t = pq.read_table(out / "truth.parquet").to_pydict()
        assert sorted(t["raw_user_id"]) == sorted(set(truth["user_id"].to_pylist()) & set(
            pq.read_table(out / USERS_FILES["train"])["raw_user_id"].to_pylist()
            + pq.read_table(out / USERS_FILES["eval"])["raw_user_id"].to_pylist()))


# --- The official files (prepare --official): no Ray ------------------------------------------------
@st.composite
def official_tables(draw):
    """A pretrain table: one row per user, ids >= 0, one bag per click in every column."""
    n_users = draw(st.integers(1, 4))
    lens = draw(st.lists(st.integers(1, 4), min_size=n_users, max_size=n_users))
    ident = st.integers(0, 50)
    cols = {c: [[[draw(ident)] for _ in range(n)] for n in lens] for c in ID_COLUMNS}
    cols.update({c: [[draw(st.lists(ident, min_size=1, max_size=3)) for _ in range(n)] for n in lens]
                 for c in BPE_COLUMNS})
    return pa.table(cols, schema=PRETRAIN_SCHEMA)


@props(60)
@given(train=official_tables(), eval_=official_tables(), edit=st.one_of(
    st.tuples(st.just("table"), seq_edit()), st.tuples(st.just("file"), file_edit())),
    which=st.sampled_from(["train", "eval"]))
def test_damaged_official_files(tmp_path_factory, train, eval_, edit, which):
    root = tmp_path_factory.mktemp("o")
    src = root / "kaggle"
    src.mkdir()
    tables = {"train": train, "eval": eval_}
    if edit[0] == "table":
        tables[which] = edit_sequences(tables[which], edit[1])
    for s, t in tables.items():
        write_ipc(src / PRETRAIN_FILES[s], t)
    if edit[0] == "file":
        apply_file_edit(src / PRETRAIN_FILES[which], edit[1])
    out = earlier_output(root)
    before = snapshot(root)
    try:
        meta = prepare_official(src, out)
    except InputError as err:
        event(f"InputError ({edit[1][0]})")
        check_error(err, PRETRAIN_FILES[which])
        assert_unchanged(root, before)
        return
    event(f"prepared ({edit[1][0]})")
    assert_no_temporaries(root)
    # accepted: only edits that leave a valid file (int32 ids, a huge id, an empty sequence in every
    # column at once cannot happen here, so only these two) or garbling that hit nothing checked
    assert edit[0] == "file" or edit[1][0] in ("int32", "huge-id"), edit
    for s in tables:
        got = ipc.open_file(str(out / PRETRAIN_FILES[s])).read_all()
        assert meta["counts"][f"{s}_users"] == got.num_rows
        for c in SEQ_COLUMNS:
            ids = [v for seq in got[c].to_pylist() for bag in seq for v in bag]
            assert all(v is not None and 0 <= v < meta["vocab"][c] for v in ids)


def test_cli_prints_one_line_and_no_traceback(tmp_path):
    """Through a real process: exit 2, one line on stderr naming the file and column, no traceback."""
    clicks, catalog, truth = _fixed_log()
    raw = write_raw(tmp_path, clicks.drop_columns(["ts"]), catalog, truth)
    out = earlier_output(tmp_path)
    before = snapshot(tmp_path)
    p = subprocess.run([sys.executable, "-m", "uqa_ray.cli", "prepare", "--raw", str(raw), "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    assert "uqa-ray prepare: error:" in lines[0] and "part-00000.parquet" in lines[0] and "'ts'" in lines[0]
    assert_unchanged(tmp_path, before)


def _fixed_log():
    items = [10, 20, 30]
    catalog = pa.table({"item_id": items, **{c: [1, 2, 1] for c in ID_FIELDS[1:]},
                        **{c: ["a", "b", "c"] for c in NAME_FIELDS}}, schema=CATALOG_SCHEMA)
    rows = [(u, items[k % 3], k) for u in (1, 2) for k in range(6)]
    clicks = pa.table({c: [r[i] for r in rows] for i, c in enumerate(CLICK_SCHEMA.names)}, schema=CLICK_SCHEMA)
    return clicks, catalog, None
