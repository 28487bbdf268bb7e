"""Bad input to `uqa-ray prepare`: a clear InputError naming the file/column/value, CLI exit 2, no
partial output, and an existing output folder left untouched."""
from __future__ import annotations

import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from uqa_ray import cli
from uqa_ray.data.prepare import PrepareConfig, prepare
from uqa_ray.data.schema import CATALOG_SCHEMA, CLICK_SCHEMA
from uqa_ray.io import InputError

N_ITEMS, N_USERS, LEN = 6, 4, 24


def _catalog(n=N_ITEMS) -> pa.Table:
    ids = [1000 + 7 * i for i in range(n)]
    return pa.table({"item_id": ids, "cate_id": [5, 5, 9, 9, 5, 9][:n], "brand_id": [1, 2, 3, 4, 1, 3][:n],
                     "shop_id": [11, 12, 13, 14, 11, 13][:n], "seller_id": [21, 22, 23, 24, 21, 23][:n],
                     "title": [f"t{i}" for i in range(n)], "cate_name": ["c"] * n, "brand_name": ["b"] * n,
                     "shop_name": ["s"] * n, "seller_name": ["x"] * n}, schema=CATALOG_SCHEMA)


def _clicks() -> pa.Table:
    rows = [(500 + u, 1000 + 7 * ((u + k) % N_ITEMS), 100 * k) for u in range(N_USERS) for k in range(LEN)]
    return pa.table({c: [r[i] for r in rows] for i, c in enumerate(CLICK_SCHEMA.names)}, schema=CLICK_SCHEMA)


def _raw(tmp_path, clicks=None, catalog=None, shards=2):
    raw = tmp_path / "raw"
    (raw / "clicks").mkdir(parents=True)
    clicks = _clicks() if clicks is None else clicks
    step = -(-clicks.num_rows // shards) if clicks.num_rows else 0
    for s in range(shards):
        pq.write_table(clicks.slice(s * step, step), raw / "clicks" / f"part-{s:05d}.parquet")
    pq.write_table(_catalog() if catalog is None else catalog, raw / "items.parquet")
    return raw


@pytest.fixture
def existing(tmp_path):
    """An output folder from an earlier run that a failed run must not touch."""
    out = tmp_path / "data"
    out.mkdir()
    (out / "meta.json").write_text("earlier run")
    return out


def _fails(raw, out, match, cfg=PrepareConfig(min_user_len=10)):
    with pytest.raises(InputError, match=match):
        prepare(raw, out, cfg)
    assert (out / "meta.json").read_text() == "earlier run" and sorted(p.name for p in out.iterdir()) == ["meta.json"]
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []  # no temp leftovers


def test_missing_click_column(tmp_path, existing):
    raw = _raw(tmp_path, clicks=_clicks().drop_columns(["ts"]))
    _fails(raw, existing, r"part-00000\.parquet: missing column 'ts'")


def test_mistyped_click_column(tmp_path, existing):
    c = _clicks()
    c = c.set_column(2, "ts", pa.array([str(v) for v in c["ts"].to_pylist()]))
    _fails(_raw(tmp_path, clicks=c), existing, r"part-00000\.parquet: column 'ts' has type string")


def test_missing_catalog_column(tmp_path, existing):
    _fails(_raw(tmp_path, catalog=_catalog().drop_columns(["brand_name"])), existing,
           r"items\.parquet: missing column 'brand_name'")


def test_mistyped_catalog_column(tmp_path, existing):
    cat = _catalog()
    cat = cat.set_column(1, "cate_id", pa.array([1.5] * N_ITEMS))
    _fails(_raw(tmp_path, catalog=cat), existing, r"items\.parquet: column 'cate_id' has type double")


def test_empty_log(tmp_path, existing):
    _fails(_raw(tmp_path, clicks=_clicks().slice(0, 0)), existing, "click log is empty")


def test_no_shards(tmp_path, existing):
    raw = _raw(tmp_path)
    shutil.rmtree(raw / "clicks")
    _fails(raw, existing, "no click shards")


def test_corrupt_parquet(tmp_path, existing):
    raw = _raw(tmp_path)
    (raw / "clicks" / "part-00001.parquet").write_bytes(b"PAR1 this is not parquet")
    _fails(raw, existing, r"part-00001\.parquet: unreadable parquet")


def test_duplicate_catalog_item(tmp_path, existing):
    cat = pa.concat_tables([_catalog(), _catalog(1)])
    _fails(_raw(tmp_path, catalog=cat), existing, "item_id 1000 appears more than once")


def test_click_on_unknown_item(ray_local, tmp_path, existing):
    c = _clicks()
    items = c["item_id"].to_pylist()
    items[-5] = 424242
    raw = _raw(tmp_path, clicks=c.set_column(1, "item_id", pa.array(items)))
    _fails(raw, existing, r"part-00001\.parquet: item_id 424242 is not in the catalog")


def test_null_in_clicks(ray_local, tmp_path, existing):
    c = _clicks()
    ts = c["ts"].to_pylist()
    ts[3] = None
    _fails(_raw(tmp_path, clicks=c.set_column(2, "ts", pa.array(ts, pa.int64()))), existing,
           r"part-00000\.parquet: column 'ts' has null values")


def test_all_users_filtered(ray_local, tmp_path, existing):
    _fails(_raw(tmp_path), existing, r"all 4 users were filtered away \(min_item_count=3, min_user_len=100",
           cfg=PrepareConfig(min_user_len=100, max_user_len=200))


def test_cli_exit_code_and_message(ray_local, tmp_path, existing, capsys):
    raw = _raw(tmp_path, catalog=_catalog().drop_columns(["title"]))
    assert cli.main(["prepare", "--raw", str(raw), "--out", str(existing)]) == 2
    err = capsys.readouterr().err
    assert "uqa-ray prepare: error:" in err and "missing column 'title'" in err
    assert (existing / "meta.json").read_text() == "earlier run"
    assert cli.main(["prepare", "--raw", str(raw), "--out", str(existing), "--set", "min_user_len=0"]) == 2
    assert "min_user_len" in capsys.readouterr().err
    assert cli.main(["prepare", "--raw", str(raw), "--out", str(existing), "--set", "min_users=3"]) == 2


def test_small_valid_log_succeeds(ray_local, tmp_path, existing):
    """The same hand-made log, unbroken, prepares and replaces the earlier output."""
    meta = prepare(_raw(tmp_path), existing, PrepareConfig(min_user_len=10, eval_fraction=0.25))
    assert meta["counts"] == {**meta["counts"], "users": N_USERS, "clicks": N_USERS * LEN, "items": N_ITEMS,
                              "train_users": 3, "eval_users": 1, "cate": 2, "brand": 4, "shop": 4, "seller": 4}
    assert (existing / "pretrain_data_train.arrow").is_file() and (existing / "meta.json").read_text() != "earlier run"


def test_given_tokenizer_is_used_and_copied(ray_local, tmp_path):
    """--tokenizer PATH: names are tokenized with that tokenizer, which is saved into the output."""
    from uqa_ray.data.tokenizer import load_tokenizer, train_tokenizer

    given = tmp_path / "llm_tokenizer"
    train_tokenizer(["alpha beta gamma t0 t1 t2 t3 t4 t5"] * 5, 300, given)
    out = tmp_path / "data"
    meta = prepare(_raw(tmp_path), out, PrepareConfig(min_user_len=10), tokenizer=str(given))
    assert meta["tokenizer"]["source"] == str(given)
    assert (out / "tokenizer" / "tokenizer.json").read_bytes() == (given / "tokenizer.json").read_bytes()
    tok = load_tokenizer(given)
    row = pa.ipc.open_file(out / "pretrain_data_train.arrow").read_all().slice(0, 1).to_pylist()[0]
    titles = [tok.decode(b) for b in row["uni_seq_title_bpe_token_ids"]]
    assert set(titles) <= {f"t{i}" for i in range(N_ITEMS)} and meta["vocab"]["bpe"] == len(tok)
