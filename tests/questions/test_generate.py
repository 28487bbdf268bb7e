"""Generated questions: every answer recomputed independently (also with a truncated encoder input),
distractor sources, official routing and the misrouting count, the align file."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

from tests.questions.builder import BRANDS, CATES, EVAL_SEQS, ITEMS, SHOPS, TRAIN_SEQS, text_of
from tests.questions.conftest import PER_SUBTASK, small_config
import uqa_ray.questions.generate as generate_module
from uqa_ray.data.schema import ALIGN_SCHEMA, SEQ_COLUMNS
from uqa_ray.questions.generate import generate
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


def encoder_input(q, seq, max_len):
    """(the user's clicks before the question, the encoder input = the last max_len of them): IP and AP
    hold the next click out; every other sub-task asks about the stored sequence itself."""
    full = seq[:-1] if q.subtask in ("IP", "AP") else seq
    return full, full[-max_len:]


def expected_answer(q, seq, sep_rank, max_len=512, check_span=True):
    """Recompute the answer from the hand-written sequence with plain Python."""
    full, enc = encoder_input(q, seq, max_len)
    if check_span:
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


# Below every hand-written sequence's length minus the held-out click (>= 15): every encoder input is cut.
SHORT_LEN = 13


@pytest.fixture(scope="module")
def gen_short(prepared, tmp_path_factory):
    """The encoder input = the last SHORT_LEN clicks of every user (seq_start > 0 on every question), and
    popular_pool at its minimum for 4 options, so that "from the user's history or popular" is a real
    restriction on the distractors (with 10 of 5-6 values per attribute, every value is popular)."""
    out = tmp_path_factory.mktemp("short")
    return out, generate(prepared, small_config(max_seq_len=SHORT_LEN, popular_pool=4), out)


@pytest.mark.parametrize("split", ["train", "eval"])
@pytest.mark.parametrize("fixture, max_len", [("gen_zh", 512), ("gen_short", SHORT_LEN)])
def test_every_answer_recomputed_independently(request, fixture, max_len, split):
    out, summary = request.getfixturevalue(fixture)
    df = questions(out, split)
    assert Counter(df.subtask) == {s: PER_SUBTASK for s in SUBTASKS}
    assert summary["splits"][split]["questions"] == len(df) == 7 * PER_SUBTASK
    for q in df.itertuples():
        assert q.answer_content == expected_answer(q, SEQS[split][q.src_row], "、", max_len), q.prompt_letter
        assert q.options[q.gold] == q.answer_content and q.answer_letter == "ABCD"[q.gold]
        assert list(q.labels) == list("ABCD") and len(set(q.options)) == 4
        assert q.answer_content not in q.prompt_letter.split("\n")[0]  # not given away by the stem
    assert set(df.attr) == {"title", "cate", "brand", "shop", "length"}
    assert len(set(df.template)) >= 10  # the templates are all in use, not one per sub-task


def test_truncation_is_exercised(gen_short):
    """Every encoder input of the short run is cut (IP/AP: the last SHORT_LEN clicks before the held-out
    one), and the cut changes answers: recomputed on the whole sequence, some DF (click k from the oldest),
    MF, LI and IT answers of each split differ, so the recomputation above tells a generator that honours
    max_seq_len from one that ignores it (IP/AP/SI answers do not depend on it: their span is checked)."""
    out, _ = gen_short
    for split in ("train", "eval"):
        df = questions(out, split)
        assert (df.seq_start > 0).all() and (df.seq_len == SHORT_LEN).all()
        changed = set()
        for q in df.itertuples():
            try:
                whole = expected_answer(q, SEQS[split][q.src_row], "、", 10**9, check_span=False)
            except AssertionError:  # a tie on the whole sequence
                whole = None
            if whole != q.answer_content:
                changed.add(q.subtask)
        assert {"DF", "MF", "LI", "IT"} <= changed, (split, changed)


# --- distractors ------------------------------------------------------------------------------------
VALUES = {"title": {v[0] for v in ITEMS.values()}, "cate": set(CATES.values()), "brand": set(BRANDS.values()),
          "shop": set(SHOPS.values())}
ITEM_OF_TITLE = {v[0]: i for i, v in ITEMS.items()}


def popular(attr, pool):
    """Names of the `pool` most clicked values of `attr` over the train split's clicks (values are names:
    the two 小米 brand ids are one value); at a tie across the cut, every tied value."""
    counts = Counter(text_of(i, attr) for seq in TRAIN_SEQS for i in seq)
    cut = sorted(counts.values(), reverse=True)[min(pool, len(counts)) - 1]
    return {n for n, c in counts.items() if c >= cut}


def distractor_sources(q, seq, max_len, pool, sep_rank) -> list[str]:
    """Check every distractor of q against the generator's rule (makers.py) and return where each came from.

    * single values (DF k-th / k-th last, AP, SI): a value of the gold's attribute that the user clicked in
      the encoder input, or one of the `pool` most clicked values of that attribute;
    * IP: the title of a catalog item of a category the user clicked in the encoder input (the held-out
      click excluded), or of one of the `pool` most clicked items;
    * MF: the options are consecutive multiples of step = max(1, round(gold / 5)), all >= 1;
    * lists and paths (DF last-k, LI, IT): a re-ordering of the gold values, or the gold with exactly one
      position replaced by a value from the user's encoder input or a popular value (LI: one not in the
      gold, so the three stay distinct)."""
    _, enc = encoder_input(q, seq, max_len)
    gold, ds = q.answer_content, [o for i, o in enumerate(q.options) if i != q.gold]
    assert gold not in ds and len(set(ds)) == len(ds) == 3
    if q.subtask == "MF":
        nums = sorted(int(o) for o in q.options)
        step = max(1, round(int(gold) / 5))
        assert nums[0] >= 1 and nums == [nums[0] + i * step for i in range(4)], (gold, nums)
        return ["step"] * 3
    attr = q.attr
    hist, pop = {text_of(i, attr) for i in enc}, popular(attr, pool)
    out = []
    if q.template in ("DF.last_k", "IT.path", "IT.changed") or q.subtask == "LI":
        sep = sep_rank if q.subtask == "LI" else " → "
        g = gold.split(sep)
        for d in ds:
            parts = d.split(sep)
            assert len(parts) == len(g) and set(parts) <= VALUES[attr], (q.template, d)
            diff = [i for i, (a, b) in enumerate(zip(parts, g)) if a != b]
            if sorted(parts) == sorted(g):
                out.append("reorder")
            else:
                assert len(diff) == 1 and parts[diff[0]] in hist | pop, (q.template, gold, d)
                if q.subtask == "LI":
                    assert parts[diff[0]] not in g
                out.append("swap")
        return out
    for d in ds:
        if q.subtask == "IP":
            assert attr == "title" and d in VALUES["title"]
            own = ITEMS[ITEM_OF_TITLE[d]][1] in {ITEMS[i][1] for i in enc}
            assert own or d in pop, (gold, d)
            out.append("own" if own and d not in pop else "popular" if not own else "both")
        else:
            assert q.template in ("DF.kth", "DF.kth_last") or q.subtask in ("AP", "SI"), q.template
            assert d in VALUES[attr] and (d in hist or d in pop), (q.template, attr, d)
            out.append("history" if d not in pop else "popular" if d not in hist else "both")
    return out


@pytest.mark.parametrize("fixture, max_len, pool, sep_rank", [
    ("gen_zh", 512, 10, "、"), ("gen_en", 512, 10, ", "), ("gen_short", SHORT_LEN, 4, "、")])
def test_distractors_follow_the_generator_rule(request, fixture, max_len, pool, sep_rank):
    """Every distractor of every question: of the gold's kind, from the sources makers.py draws from."""
    out, _ = request.getfixturevalue(fixture)
    used = {}
    for split in ("train", "eval"):
        for q in questions(out, split).itertuples():
            for src in distractor_sources(q, SEQS[split][q.src_row], max_len, pool, sep_rank):
                used.setdefault(q.subtask, Counter())[src] += 1
    assert set(used) == set(SUBTASKS)
    if fixture == "gen_short":  # both sources in use, where popular_pool makes them differ
        for sub in ("DF", "AP", "SI"):
            assert used[sub]["history"] and used[sub]["popular"], (sub, used[sub])
        assert used["IP"]["own"] and used["IP"]["popular"], used["IP"]
        for sub in ("LI", "IT"):
            assert used[sub]["reorder"] and used[sub]["swap"], (sub, used[sub])


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


def test_misrouting_count_recorded_and_zero(gen_zh, gen_en, gen_short):
    """The summary records, per split and sub-task, the questions dropped because the official routing
    put them in another sub-task; on the test sets (zh, en, truncated) it is 0 everywhere."""
    for _, summary in (gen_zh, gen_en, gen_short):
        for split in ("train", "eval"):
            subs = summary["splits"][split]["subtasks"]
            assert {s: v["misrouted"] for s, v in subs.items()} == {s: 0 for s in SUBTASKS}


def test_misrouted_questions_counted_and_dropped(prepared, tmp_path, monkeypatch):
    """With a router that sends every question mentioning 手机 nowhere, exactly the questions it
    rejected are counted as misrouted (per sub-task), and none of them is kept: the count is real."""
    real, rejected = generate_module.route, Counter()

    def bad_route(text, lang="zh"):
        sub = real(text, lang)
        if "手机" in text:
            rejected[sub] += 1
            return None
        return sub

    monkeypatch.setattr(generate_module, "route", bad_route)
    summary = generate(prepared, small_config(), tmp_path)
    counted = Counter()
    for split in ("train", "eval"):
        for sub, v in summary["splits"][split]["subtasks"].items():
            counted[sub] += v["misrouted"]
        df = questions(tmp_path, split)
        assert not any("手机" in q.prompt_letter for q in df.itertuples())
    assert +counted == +rejected and sum(rejected.values()) > 0, (counted, rejected)


def test_gold_positions_balanced(gen_zh):
    for split in ("train", "eval"):
        df = questions(gen_zh[0], split)
        for sub, g in df.groupby("subtask"):
            counts = np.bincount(g.gold, minlength=4)
            assert counts.max() - counts.min() <= 1, (split, sub, counts)


def read_arrow(path):
    with pa.memory_map(str(path)) as f:
        return ipc.open_file(f).read_all()


@pytest.mark.parametrize("fixture, max_len", [("gen_zh", 512), ("gen_short", SHORT_LEN)])
def test_align_file_is_the_encoder_input(request, fixture, max_len):
    out, _ = request.getfixturevalue(fixture)
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
            assert chat == [{"role": "user", "content": q.prompt_letter},
                            {"role": "assistant", "content": q.answer_letter}]
            # the last max_len clicks; for IP/AP those before the held-out next click
            assert want == encoder_input(q, seq, max_len)[1]
            if q.subtask in ("IP", "AP"):
                assert seq[q.seq_start + q.seq_len] == seq[-1]  # the next click is held out of the input


def test_bpe_columns_sliced_from_source(gen_zh, prepared):
    out, _ = gen_zh
    src, table = read_arrow(prepared / "pretrain_data_eval.arrow"), read_arrow(out / "align_data_eval.arrow")
    df = questions(out, "eval")
    for q in df.itertuples():
        for c in SEQ_COLUMNS:
            full = src[c][q.src_row].as_py()
            assert table[c][q.row].as_py() == full[q.seq_start : q.seq_start + q.seq_len], c


def test_deterministic_by_seed(prepared, gen_zh, tmp_path):
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

    cfg = dataclasses.replace(small_config(), train_counts=None)
    s = generate(prepared, cfg, tmp_path)
    asked = {k: v["asked"] for k, v in s["splits"]["train"]["subtasks"].items()}
    assert asked == {k: 2 * PER_SUBTASK for k in SUBTASKS}
