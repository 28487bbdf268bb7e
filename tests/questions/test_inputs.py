"""Bad input -> InputError naming the file/column/row; nothing written, nothing existing lost."""
from __future__ import annotations

import shutil

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

from tests.questions.builder import EVAL_SEQS, build_prepared, write_arrow
from tests.questions.conftest import small_config
from uqa_ray.cli import main
from uqa_ray.io import InputError
from uqa_ray.questions.generate import generate

OUTPUTS = ("align_data_train.arrow", "align_data_eval.arrow", "questions_train.parquet", "questions_eval.parquet")


@pytest.fixture
def folder(prepared, tmp_path):
    d = tmp_path / "data"
    shutil.copytree(prepared, d)
    (d / "align_data_eval.arrow").write_bytes(b"an earlier result")  # must survive a failed run
    return d


def rewrite_eval(d, fn):
    path = d / "pretrain_data_eval.arrow"
    with pa.memory_map(str(path)) as f:
        table = ipc.open_file(f).read_all()
    cols = fn({c: table[c].to_pylist() for c in table.column_names})
    schema = pa.schema([table.schema.field(c) for c in cols])
    write_arrow(path, cols, schema=schema)


def check_fails(d, *words):
    with pytest.raises(InputError) as e:
        generate(d, small_config(), d)
    for w in words:
        assert w in str(e.value), str(e.value)
    assert (d / "align_data_eval.arrow").read_bytes() == b"an earlier result"
    assert not any((d / o).exists() for o in OUTPUTS if o != "align_data_eval.arrow")
    assert not [p for p in d.iterdir() if p.name.startswith(".")], "temporary files left behind"


def test_missing_column(folder):
    rewrite_eval(folder, lambda c: {k: v for k, v in c.items() if k != "uni_seq_brand_id"})
    check_fails(folder, "pretrain_data_eval.arrow", "uni_seq_brand_id")


def test_empty_sequence(folder):
    def empty_row_4(c):
        return {k: v[:4] + [[]] + v[5:] for k, v in c.items()}
    rewrite_eval(folder, empty_row_4)
    check_fails(folder, "row 4", "empty sequence")


def test_item_outside_catalog(folder):
    def oov(c):
        c["uni_seq_item_id"][2][3] = [99]
        return c
    rewrite_eval(folder, oov)
    check_fails(folder, "uni_seq_item_id", "99")


def test_columns_of_different_lengths(folder):
    def short_title(c):
        c["uni_seq_title_bpe_token_ids"][7] = c["uni_seq_title_bpe_token_ids"][7][:-1]
        return c
    rewrite_eval(folder, short_title)
    check_fails(folder, "row 7", "uni_seq_title_bpe_token_ids")


def test_maps_disagree_with_sequences(folder):
    def wrong_cate(c):
        c["uni_seq_cate_id"][0][1] = [3]
        return c
    rewrite_eval(folder, wrong_cate)
    check_fails(folder, "uni_seq_cate_id", "disagrees")


def test_missing_map_column(folder):
    t = pq.read_table(folder / "maps" / "brand.parquet").drop_columns(["name"])
    pq.write_table(t, folder / "maps" / "brand.parquet")
    check_fails(folder, "brand.parquet", "'name'")


def test_missing_users_file(folder):
    (folder / "users_eval.parquet").unlink()
    check_fails(folder, "users_eval.parquet", "not found")


def test_cli_exit_codes(prepared, tmp_path, capsys):
    args = ["questions", "--data", str(prepared), "--out", str(tmp_path), "--set", "si_window=5",
            "it_min_window=4", "popular_pool=10"] + [f"eval_counts.{s}=3"
                                                     for s in ("DF", "MF", "IP", "AP", "LI", "SI", "IT")]
    assert main(args) == 0
    assert all((tmp_path / o).exists() for o in OUTPUTS)
    assert main(["questions", "--data", str(prepared), "--set", "n_options=1"]) == 2
    assert main(["questions", "--data", str(tmp_path / "nowhere")]) == 2
    assert "n_options" in capsys.readouterr().err


def test_short_folder_built_from_few_users(tmp_path):
    d = build_prepared(tmp_path / "d", train=EVAL_SEQS[:3], eval_=EVAL_SEQS[3:5])
    s = generate(d, small_config(), d)
    assert s["splits"]["eval"]["questions"] <= 7 * 2 * 3  # at most max_per_user per user, reported short
    assert s["splits"]["eval"]["subtasks"]["DF"]["made"] < s["splits"]["eval"]["subtasks"]["DF"]["asked"]
