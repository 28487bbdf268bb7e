"""Generated questions: every answer recomputed independently, official routing, the align file."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

from tests.questions.builder import EVAL_SEQS, ITEMS, TRAIN_SEQS, text_of
from tests.questions.conftest import PER_SUBTASK, small_config
from uqa_ray.data.schema import ALIGN_SCHEMA, SEQ_COLUMNS
from uqa_ray.questions.spec import SUBTASKS
from uqa_ray.questions.templates import TEMPLATES, route, stem

# The official routing table, copied from UQABENCH.md section 5 (checked in this order).
OFFICIAL = [("DF", ["次浏览的商品的", "次（从1开始计数）浏览的"]), ("MF", ["长度是多少？", "的商品有多少个"]),
            ("IP", ["下一个可能点击的商品的标题是什么"]), ("AP", ["用户下一个可能点击的商品的"]),
            ("LI", ["用户最感兴趣的3个"]), ("SI", ["用户近期最感兴趣的"]), ("IT", ["偏好的转移路径是什么"])]
SEQS = {"train": TRAIN_SEQS, "eval": EVAL_SEQS}


def official_route(q: str):
    return next((s for s, keys in OFFICIAL if any(k in q for k in keys)), None)


def questions(out, split):
    return pq.read_table(out / f"questions_{split}.parquet").to_pandas()


def strict_top(names, k):
    ranked = Counter(names).most_common()
    counts = [c for _, c in ranked] + [0]
    assert len(ranked) >= k and all(counts[i] > counts[i + 1] for i in range(k)), "a tie must be filtered"
    return [n for n, _ in ranked[:k]]


def expected_answer(q, seq, sep_rank):
    """Recompute the answer from the hand-written sequence with plain Python."""
    full = seq[:-1] if q.subtask in ("IP", "AP") else seq
    enc = full[-512:]
    assert (q.seq_start, q.seq_len, q.user_len) == (len(full) - len(enc), len(enc), len(seq))
    names = [text_of(i, q.attr) for i in enc] if q.attr != "length" else []
    t, k = q.template, q.param
    if t == "DF.kth":
        return names[k - 1]
    if t == "DF.kth_last":
        return names[-k]
    if t == "DF.last_k":
        return " → ".join(names[-k:])
    if t == "MF.count":
        return str(sum(n == q.value for n in names))
    if t == "MF.length":
        return str(len(enc))
    if q.subtask in ("IP", "AP"):
        return text_of(seq[-1], q.attr)
    if q.subtask == "LI":
        return sep_rank.join(strict_top(names, 3))
    if q.subtask == "SI":
        return strict_top(names[-k:], 1)[0]
    if q.subtask == "IT":
        path = [strict_top(list(w), 1)[0] for w in np.array_split(np.array(names, object), k)]
        assert len(set(path)) > 1
        return " → ".join(path)
    raise AssertionError(t)


@pytest.mark.parametrize("split", ["train", "eval"])
def test_every_answer_recomputed_independently(gen_zh, split):
    out, summary = gen_zh
    df = questions(out, split)
    assert Counter(df.subtask) == {s: PER_SUBTASK for s in SUBTASKS}
    assert summary["splits"][split]["questions"] == len(df) == 7 * PER_SUBTASK
    for q in df.itertuples():
        assert q.answer_content == expected_answer(q, SEQS[split][q.src_row], "、"), q.prompt_letter
        assert q.options[q.gold] == q.answer_content and q.answer_letter == "ABCD"[q.gold]
        assert list(q.labels) == list("ABCD") and len(set(q.options)) == 4
        assert q.answer_content not in q.prompt_letter.split("\n")[0]  # not given away by the stem
    assert set(df.attr) == {"title", "cate", "brand", "shop", "length"}
    assert len(set(df.template)) >= 10  # the templates are all in use, not one per sub-task


def test_en_answers_and_content_format(gen_en):
    out, _ = gen_en
    for split in ("train", "eval"):
        for q in questions(out, split).itertuples():
            assert q.answer_content == expected_answer(q, SEQS[split][q.src_row], ", ")
            assert q.lang == "en" and q.answer_format == "content"


def test_routing_official_order_zh_and_en(gen_zh, gen_en):
    for split in ("train", "eval"):
        for q in questions(gen_zh[0], split).itertuples():
            assert official_route(q.prompt_letter) == q.subtask == official_route(q.prompt_content)
        for q in questions(gen_en[0], split).itertuples():
            assert route(q.prompt_letter, "en") == q.subtask == route(q.prompt_content, "en")
    # every template and attribute, including those a small set may not draw
    for name, (sub, attrs, *_) in TEMPLATES.items():
        for a in attrs:
            kw = dict(k=2, value="某值", w=20, p=3)
            assert official_route(stem(name, "zh", a, **kw)) == sub, name
            assert route(stem(name, "en", a, **kw), "en") == sub, name


def test_gold_positions_balanced(gen_zh):
    for split in ("train", "eval"):
        df = questions(gen_zh[0], split)
        for sub, g in df.groupby("subtask"):
            counts = np.bincount(g.gold, minlength=4)
            assert counts.max() - counts.min() <= 1, (split, sub, counts)


def read_arrow(path):
    with pa.memory_map(str(path)) as f:
        return ipc.open_file(f).read_all()


def test_align_file_is_the_encoder_input(gen_zh):
    out, _ = gen_zh
    for split in ("train", "eval"):
        table, df = read_arrow(out / f"align_data_{split}.arrow"), questions(out, split)
        assert table.schema.equals(ALIGN_SCHEMA) and table.num_rows == len(df)
        for q in df.itertuples():
            seq = SEQS[split][q.src_row]
            want = seq[q.seq_start : q.seq_start + q.seq_len]
            row = {c: table[c][q.row].as_py() for c in table.column_names}
            assert row["uni_seq_item_id"] == [[i] for i in want]
            assert row["uni_seq_cate_id"] == [[ITEMS[i][1]] for i in want]
            assert len(row["uni_seq_title_bpe_token_ids"]) == len(want)
            chat = json.loads(row["text"])
            assert chat == [{"role": "user", "content": q.prompt_letter}, {"role": "assistant", "content": q.answer_letter}]
            if q.subtask in ("IP", "AP"):
                assert len(want) == len(seq) - 1  # the next click is held out of the encoder input


def test_bpe_columns_sliced_from_source(gen_zh, prepared):
    out, _ = gen_zh
    src, table = read_arrow(prepared / "pretrain_data_eval.arrow"), read_arrow(out / "align_data_eval.arrow")
    df = questions(out, "eval")
    for q in df.itertuples():
        for c in SEQ_COLUMNS:
            full = src[c][q.src_row].as_py()
            assert table[c][q.row].as_py() == full[q.seq_start : q.seq_start + q.seq_len], c


def test_deterministic_by_seed(prepared, gen_zh, tmp_path):
    from uqa_ray.questions.generate import generate

    generate(prepared, small_config(), tmp_path / "again")
    generate(prepared, small_config(seed=1), tmp_path / "other")
    for split in ("train", "eval"):
        a = questions(gen_zh[0], split)
        assert a.equals(questions(tmp_path / "again", split))
        assert (gen_zh[0] / f"align_data_{split}.arrow").read_bytes() == \
            (tmp_path / "again" / f"align_data_{split}.arrow").read_bytes()
        assert not a.prompt_letter.equals(questions(tmp_path / "other", split).prompt_letter)


def test_default_train_counts_follow_users(prepared, tmp_path):
    """train_counts=None: eval counts x (train users / eval users) = x2 here, same proportions."""
    import dataclasses

    from uqa_ray.questions.generate import generate

    cfg = dataclasses.replace(small_config(), train_counts=None)
    s = generate(prepared, cfg, tmp_path)
    asked = {k: v["asked"] for k, v in s["splits"]["train"]["subtasks"].items()}
    assert asked == {k: 2 * PER_SUBTASK for k in SUBTASKS}
