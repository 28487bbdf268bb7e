"""Property-based bad input to question generation and scoring: a damaged prepared folder into
`generate`, damaged question sets and prediction files into `uqa-ray score` (through the CLI entry
point). Each call either succeeds with an output that checks out, or fails with an InputError / exit 2
and one line naming the file; no other exception escapes, and the folder is byte-identical afterwards.
"""
from __future__ import annotations

import contextlib
import io
import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from tests.data.malformed import (
    apply_edit, apply_file_edit, assert_no_temporaries, assert_unchanged, check_error, edit_sequences, file_edit,
    props, seq_edit, snapshot, table_edit, write_ipc,
)
from tests.questions.conftest import small_config
from uqa_ray.cli import main
from uqa_ray.data.schema import ALIGN_FILES, ALIGN_SCHEMA, ID_COLUMNS, QUESTIONS_FILES
from uqa_ray.io import InputError
from uqa_ray.questions.generate import generate
from uqa_ray.questions.spec import SPLITS
from uqa_ray.questions.templates import route

EARLIER = b"an earlier result"


# --- generate: a damaged prepared folder -------------------------------------------------------------
def _folder_edit():
    arrow = st.tuples(st.sampled_from(["pretrain_data_train.arrow", "pretrain_data_eval.arrow"]), seq_edit())
    users = st.tuples(st.just("users_eval.parquet"), table_edit(["row", "user"]))
    items = st.tuples(st.just("maps/items.parquet"), table_edit(["item", "cate", "brand", "shop", "title"]))
    brand = st.tuples(st.just("maps/brand.parquet"), table_edit(["id", "name"]))
    files = st.tuples(st.sampled_from(["pretrain_data_eval.arrow", "users_train.parquet", "maps/items.parquet",
                                       "maps/cate.parquet"]), st.one_of(file_edit(), st.just(("delete", 0.0))))
    return st.one_of(arrow, users, items, brand, files)


# Edits that leave a folder the generator must reject (the others may leave a valid, different one: a
# renamed title, an int32 column, an id in a later record batch that only the first batch's check sees).
MUST_FAIL = {"drop", "rename", "retype", "null-seq", "null-id", "negative-id", "empty-seq", "empty-table", "delete"}


def check_generated(d) -> None:
    for split in SPLITS:
        align = ipc.open_file(str(d / ALIGN_FILES[split])).read_all()
        assert align.schema == ALIGN_SCHEMA
        qs = pq.read_table(d / QUESTIONS_FILES[split]).to_pylist()
        assert len(qs) == align.num_rows and [q["row"] for q in qs] == list(range(len(qs)))
        lens = pc.list_value_length(align[ID_COLUMNS[0]]).to_pylist()
        for q, n in zip(qs, lens):
            assert n == q["seq_len"] >= 1 and q["seq_start"] + q["seq_len"] <= q["user_len"]
            assert q["labels"][q["gold"]] == q["answer_letter"] and q["options"][q["gold"]] == q["answer_content"]
            assert route(q["prompt_letter"], q["lang"]) == q["subtask"]


@props(40)
@given(edit=_folder_edit())
def test_damaged_prepared_folder(prepared, tmp_path_factory, edit):
    target, e = edit
    d = tmp_path_factory.mktemp("q") / "data"
    shutil.copytree(prepared, d)
    (d / ALIGN_FILES["eval"]).write_bytes(EARLIER)
    path = d / target
    if e[0] == "delete":
        path.unlink()
    elif e[0] in ("truncate", "garble"):
        apply_file_edit(path, e)
    elif target.endswith(".arrow"):
        # batches of 2 rows: an edit lands in the first batch (fully cross-checked) or a later one
        write_ipc(path, edit_sequences(ipc.open_file(str(path)).read_all(), e))
    else:
        pq.write_table(apply_edit(pq.read_table(path), e), path)
    before = snapshot(d)
    try:
        generate(d, small_config(), d)
    except InputError as err:
        event(f"InputError ({e[0]})")
        check_error(err, path.name)
        assert_unchanged(d, before)
        return
    event(f"generated ({e[0]})")
    assert e[0] not in MUST_FAIL, f"accepted {edit}"
    assert_no_temporaries(d)
    check_generated(d)


# --- score: damaged question sets and prediction files, through the CLI -----------------------------
@st.composite
def predictions(draw, n_rows: int):
    """(records, line edits): one record per question with a prediction and/or option log-probabilities."""
    fields = draw(st.sampled_from(["prediction", "option_logprobs", "both"]))
    recs = []
    for r in range(n_rows):
        rec: dict = {"row": r}
        if fields != "option_logprobs":
            rec["prediction"] = draw(st.sampled_from(["A", "B", "C", "D", "A.", " A", "b"]))
        if fields != "prediction":
            rec["option_logprobs"] = draw(st.lists(st.floats(-20, 0), min_size=4, max_size=4))
        recs.append(rec)
    idx = st.integers(0, n_rows - 1)
    edits = st.lists(st.one_of(
        st.tuples(st.sampled_from(["drop-line", "dup-line"]), idx),
        st.tuples(st.just("unknown-row"), st.sampled_from([-1, n_rows, 10**30])),
        st.tuples(st.just("row-type"), idx, st.sampled_from(["1", 1.0, True, None])),
        st.tuples(st.just("pred-type"), idx, st.sampled_from([1, ["A"], None])),
        st.tuples(st.just("lp-len"), idx, st.integers(0, 6)),
        st.tuples(st.just("lp-value"), idx, st.sampled_from(["nan", "inf", "-inf", "x", True, "big"])),
        st.tuples(st.just("line"), st.sampled_from(["not json", "[1, 2]", "{}", '"row"', "[" * 100_000])),
        st.tuples(st.sampled_from(["bad-utf8", "empty"]),),
    ), min_size=1, max_size=2)
    return recs, draw(st.one_of(st.just([]), edits))  # half of the files are left intact


def pred_must_fail(edits) -> bool:
    """Whether scoring must reject predictions after these edits (4 log-probabilities, or a -inf among
    them, are still valid predictions)."""
    return any(e[0] not in ("lp-len", "lp-value") or (e[0] == "lp-len" and e[2] != 4)
               or (e[0] == "lp-value" and e[2] != "-inf") for e in edits)


def write_predictions(path, recs: list[dict], edits) -> None:
    recs = [dict(r) for r in recs]
    extra: list[bytes] = []
    for e in edits:
        kind, i = e[0], (e[1] if len(e) > 1 else 0)
        if not recs and kind in ("pred-type", "lp-len", "lp-value"):
            continue  # an earlier edit emptied the file
        if kind == "drop-line":
            recs = [r for r in recs if r["row"] != i]
        elif kind == "dup-line":
            recs += [dict(r) for r in recs if r["row"] == i]
        elif kind == "unknown-row":
            recs.append({"row": i, "prediction": "A"})
        elif kind == "row-type":
            for r in recs[:1]:
                r["row"] = e[2]
        elif kind == "pred-type":
            recs[i % len(recs)]["prediction"] = e[2]
        elif kind == "lp-len":
            recs[i % len(recs)]["option_logprobs"] = [-1.0] * e[2]
        elif kind == "lp-value":
            lp = list(recs[i % len(recs)].get("option_logprobs", [-1.0] * 4))
            lp[0] = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf"), "big": 10**400}.get(e[2], e[2])
            recs[i % len(recs)]["option_logprobs"] = lp
        elif kind == "line":
            extra.append(e[1].encode())
        elif kind == "bad-utf8":
            extra.append(b'{"row": 0, "prediction": "\xff\xfe"}')
        elif kind == "empty":
            recs, extra = [], []
    lines = [json.dumps(r, ensure_ascii=False).encode() for r in recs] + extra
    path.write_bytes(b"\n".join(lines) + (b"\n" if lines else b""))


def _questions_edit():
    cols = ["row", "subtask", "gold", "options", "answer_letter", "answer_content", "answer_format"]
    return st.one_of(st.none(), st.none(), table_edit(cols), file_edit(),
                     st.tuples(st.just("gold-out-of-range"), st.integers(0, 9), st.sampled_from([-1, 4, 99])))


def _arrow_text_edit():
    bad = st.sampled_from([None, "not json", "{}", "[1]", '[{"role": "user", "content": 5}]',
                           '[{"role": "user", "content": "你好吗？"}, {"role": "assistant", "content": "A"}]',
                           '[{"role": "user", "content": "用户近期最感兴趣的品类是什么？"}, '
                           '{"role": "assistant", "content": ""}]'])
    return st.one_of(st.none(), st.none(), st.tuples(st.just("text"), st.integers(0, 9), bad), file_edit())


def run_cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["score", *args])
    return rc, out.getvalue(), err.getvalue()


def reference(golds: list[str], gold_idx: list[int], recs: list[dict]) -> int:
    """Correct answers by the rule `auto` picks, in plain Python (score.py documents the rules)."""
    if all("prediction" in r for r in recs):
        return sum(r["prediction"].startswith(g) for r, g in zip(recs, golds))
    return sum(int(np.argmax(r["option_logprobs"])) == g for r, g in zip(recs, gold_idx))


@pytest.fixture(scope="module")
def question_sets(gen_zh):
    out, _ = gen_zh
    t = pq.read_table(out / QUESTIONS_FILES["eval"])
    return out, t


@props(40)
@given(data=st.data(), source=st.sampled_from(["parquet", "arrow"]))
def test_damaged_scoring_inputs(question_sets, tmp_path_factory, data, source):
    out, table = question_sets
    n = table.num_rows
    recs, pred_edits = data.draw(predictions(n))
    q_edit = data.draw(_questions_edit() if source == "parquet" else _arrow_text_edit())
    d = tmp_path_factory.mktemp("s")
    if source == "parquet":
        qpath = d / "questions_eval.parquet"
        pq.write_table(table if q_edit is None or q_edit[0] in ("truncate", "garble")
                       else _edit_questions(table, q_edit),
                       qpath)
    else:
        qpath = d / "align_data_eval.arrow"
        shutil.copy(out / ALIGN_FILES["eval"], qpath)
        if q_edit is not None and q_edit[0] == "text":
            t = ipc.open_file(str(qpath)).read_all()
            text = t["text"].to_pylist()
            text[q_edit[1] % n] = q_edit[2]
            write_ipc(qpath, t.set_column(t.column_names.index("text"), "text", pa.array(text, pa.string())))
    if q_edit is not None and q_edit[0] in ("truncate", "garble"):
        apply_file_edit(qpath, q_edit)
    ppath = d / "preds.jsonl"
    write_predictions(ppath, recs, pred_edits)
    (d / "score.json").write_text("earlier")
    before = snapshot(d)
    rc, stdout, stderr = run_cli("--questions", str(qpath), "--predictions", str(ppath), "--out", str(d / "score.json"))
    if rc != 0:
        event(f"exit {rc} ({source})")
        assert rc == 2 and "Traceback" not in stderr, stderr
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("uqa-ray score: error: "), stderr
        assert qpath.name in lines[0] or ppath.name in lines[0], lines[0]
        assert_unchanged(d, before)
        return
    event(f"scored ({source})")
    assert not pred_must_fail(pred_edits), f"accepted predictions edited by {pred_edits}"
    if source == "parquet" and q_edit is not None:  # a null content is unused by letter-format scoring
        assert q_edit[0] not in {"drop", "rename", "retype", "null", "duplicate", "empty", "gold-out-of-range"} or (
            q_edit[:2] == ("null", "answer_content")), q_edit
    assert_no_temporaries(d)
    res = json.loads((d / "score.json").read_text())
    assert res == json.loads(stdout) and res["overall"]["n"] == n
    if not pred_edits and q_edit is None:
        golds = table["answer_letter"].to_pylist()
        assert res["overall"]["correct"] == reference(golds, table["gold"].to_pylist(), recs)


def _edit_questions(t: pa.Table, e) -> pa.Table:
    if e[0] == "gold-out-of-range":
        gold = t["gold"].to_pylist()
        gold[e[1] % t.num_rows] = e[2]
        return t.set_column(t.column_names.index("gold"), "gold", pa.array(gold, pa.int64()))
    return apply_edit(t, e)
