"""`uqa-ray prepare --official`: the Kaggle files accepted as already-prepared data."""
from __future__ import annotations

import json

import pyarrow as pa
import pytest

from uqa_ray import cli
from uqa_ray.data.official import prepare_official
from uqa_ray.data.schema import ALIGN_FILES, ALIGN_SCHEMA, BPE_COLUMNS, ID_COLUMNS, PRETRAIN_FILES, PRETRAIN_SCHEMA
from uqa_ray.io import InputError


def _rows(n_users: int, offset: int) -> dict:
    """n users with 3 clicks each; ids grow with offset so the max id is known."""
    cols = {}
    for j, c in enumerate(ID_COLUMNS):
        cols[c] = [[[offset + 10 * j + u + k] for k in range(3)] for u in range(n_users)]
    for j, c in enumerate(BPE_COLUMNS):
        cols[c] = [[[offset + j, offset + u + 1] for _ in range(3)] for u in range(n_users)]
    return cols


def _write(path, table: pa.Table, batch_rows: int = 2):
    with pa.ipc.new_file(str(path), table.schema) as w:
        w.write_table(table, max_chunksize=batch_rows)


@pytest.fixture
def official(tmp_path):
    d = tmp_path / "kaggle"
    d.mkdir()
    _write(d / PRETRAIN_FILES["train"], pa.table(_rows(5, 100), schema=PRETRAIN_SCHEMA))
    _write(d / PRETRAIN_FILES["eval"], pa.table(_rows(2, 200), schema=PRETRAIN_SCHEMA))
    return d


def test_pretrain_only(official, tmp_path):
    meta = prepare_official(official, tmp_path / "data")
    # max ids: eval file (offset 200); ID column j holds 200 + 10j + u + k, u <= 1, k <= 2
    for j, c in enumerate(ID_COLUMNS):
        assert meta["vocab"][c] == 200 + 10 * j + 1 + 2 + 1
    assert meta["vocab"]["bpe"] == max(200 + 4, 200 + 2) + 1 == meta["vocab"][BPE_COLUMNS[0]]
    c = meta["counts"]
    assert (c["train_users"], c["eval_users"], c["train_clicks"], c["eval_clicks"]) == (5, 2, 15, 6)
    for name in PRETRAIN_FILES.values():
        assert pa.ipc.open_file(tmp_path / "data" / name).read_all().equals(
            pa.ipc.open_file(official / name).read_all())
    assert json.loads((tmp_path / "data" / "meta.json").read_text()) == meta


def test_with_align_files_and_int32(official, tmp_path):
    """The official files may use 32-bit ids: any integer type is accepted."""
    i32 = pa.schema([pa.field(f.name, pa.list_(pa.list_(pa.int32()))) for f in PRETRAIN_SCHEMA]
                    + [("text", pa.string())])
    for split, off in (("train", 300), ("eval", 50)):
        rows = _rows(3, off)
        rows["text"] = ['[{"role":"user","content":"Q"},{"role":"assistant","content":"A"}]'] * 3
        _write(official / ALIGN_FILES[split], pa.table(rows, schema=i32))
    meta = prepare_official(official, tmp_path / "data")
    assert meta["vocab"]["uni_seq_item_id"] == 300 + 2 + 2 + 1
    assert sorted(p.name for p in (tmp_path / "data").glob("*.arrow")) == sorted([*PRETRAIN_FILES.values(),
                                                                                 *ALIGN_FILES.values()])
    assert pa.ipc.open_file(tmp_path / "data" / ALIGN_FILES["eval"]).schema.names == ALIGN_SCHEMA.names


def test_bad_official_inputs(official, tmp_path):
    out = tmp_path / "data"
    (official / PRETRAIN_FILES["eval"]).write_bytes(b"not arrow")
    with pytest.raises(InputError, match="pretrain_data_eval.arrow: not a readable Arrow IPC file"):
        prepare_official(official, out)
    _write(official / PRETRAIN_FILES["eval"],
           pa.table(_rows(2, 0), schema=PRETRAIN_SCHEMA).drop_columns(["uni_seq_shop_id"]))
    with pytest.raises(InputError, match="missing column 'uni_seq_shop_id'"):
        prepare_official(official, out)
    bad = _rows(2, 0)
    bad["uni_seq_cate_id"][1][0] = [-4]
    _write(official / PRETRAIN_FILES["eval"], pa.table(bad, schema=PRETRAIN_SCHEMA))
    with pytest.raises(InputError, match="'uni_seq_cate_id' has a negative or null id"):
        prepare_official(official, out)
    _write(official / PRETRAIN_FILES["eval"], pa.table(_rows(2, 0), schema=PRETRAIN_SCHEMA))
    _write(official / ALIGN_FILES["train"], pa.table(_rows(2, 0), schema=PRETRAIN_SCHEMA))
    with pytest.raises(InputError, match="only align_data_train.arrow"):
        prepare_official(official, out)
    (official / ALIGN_FILES["train"]).unlink()
    (official / PRETRAIN_FILES["train"]).unlink()
    with pytest.raises(InputError, match="pretrain_data_train.arrow: missing"):
        prepare_official(official, out)
    assert not out.exists()


def test_cli_official(official, tmp_path, capsys):
    assert cli.main(["prepare", "--official", str(official), "--out", str(tmp_path / "d")]) == 0
    assert (tmp_path / "d" / "meta.json").is_file()
    assert cli.main(["prepare", "--official", str(tmp_path / "nowhere"), "--out", str(tmp_path / "e")]) == 2
    assert "missing" in capsys.readouterr().err and not (tmp_path / "e").exists()


def _align(official, eval_texts, eval_rows=None):
    """Both align files; the eval one with the given `text` cells (and sequences, when given)."""
    schema = pa.schema([*PRETRAIN_SCHEMA, ("text", pa.string())])
    good = '[{"role":"user","content":"Q"},{"role":"assistant","content":"A"}]'
    train = _rows(2, 0)
    train["text"] = [good] * 2
    _write(official / ALIGN_FILES["train"], pa.table(train, schema=schema))
    rows = eval_rows or _rows(len(eval_texts), 0)
    rows["text"] = eval_texts
    _write(official / ALIGN_FILES["eval"], pa.table(rows, schema=schema))


def test_users_without_clicks_and_bad_chats_are_refused(official, tmp_path, capsys):
    """A user with no clicks has nothing to encode; a `text` that is not a user/assistant JSON chat has no
    question. Both are refused at prepare time with the file, the row and the column; exit 2, no output."""
    good = '[{"role":"user","content":"Q"},{"role":"assistant","content":"A"}]'
    out = tmp_path / "data"
    empty = _rows(3, 0)
    for c in empty:
        empty[c][2] = []
    _write(official / PRETRAIN_FILES["train"], pa.table(empty, schema=PRETRAIN_SCHEMA), batch_rows=2)
    with pytest.raises(InputError, match=r"pretrain_data_train.arrow: row 2: column 'uni_seq_item_id' holds a user "
                                         r"with no clicks"):
        prepare_official(official, out)
    _write(official / PRETRAIN_FILES["train"], pa.table(_rows(5, 100), schema=PRETRAIN_SCHEMA))
    cases = {"not a JSON chat": "Q: what? A: B",
             "must have string 'role' and 'content'": '[{"role": "user"}]',
             "needs a user and an assistant turn": '[{"role":"user","content":"Q"}]'}
    for words, text in cases.items():
        _align(official, [good, good, text])
        with pytest.raises(InputError, match=rf"align_data_eval.arrow: row 2, column 'text': .*{words}"):
            prepare_official(official, out)
        assert cli.main(["prepare", "--official", str(official), "--out", str(out)]) == 2
        assert "align_data_eval.arrow: row 2" in capsys.readouterr().err and not out.exists()
    _align(official, [good] * 3)
    assert cli.main(["prepare", "--official", str(official), "--out", str(out)]) == 0
