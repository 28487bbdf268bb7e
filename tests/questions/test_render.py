"""Text-k rendering and prompt token counting."""
from __future__ import annotations

import shutil

import pyarrow.parquet as pq

from tests.questions.builder import EVAL_SEQS
from uqa_ray.questions.render import HistoryRenderer, count_tokens, load_tokenizer, text_k_prompts
from uqa_ray.questions.templates import route


def test_render_last_k_oldest_first(prepared):
    r = HistoryRenderer.from_folder(prepared, "zh")
    assert r.render([1, 3, 10, 8], 3).split("\n") == [
        "用户最近的3条浏览记录（从早到晚）：",
        "1. 标题：红米手机；品类：手机；品牌：小米；店铺：小米官方店",
        "2. 标题：降噪耳机；品类：耳机；品牌：小米；店铺：小米官方店",
        "3. 标题：牛肉干；品类：零食；品牌：良品铺子；店铺：良品铺子店",
    ]
    en = HistoryRenderer.from_folder(prepared, "en").render([5], 20)
    assert en == ("The user's last 1 clicks (oldest first):\n"
                  "1. title: 哑光口红; category: 口红; brand: 兰蔻; shop: 兰蔻专柜")


def test_text_k_prompts_and_tokens(prepared, gen_zh, tmp_path):
    d = tmp_path / "d"
    shutil.copytree(prepared, d)
    for f in gen_zh[0].iterdir():
        shutil.copy(f, d / f.name)
    df = pq.read_table(d / "questions_eval.parquet").to_pandas()
    renderer = HistoryRenderer.from_folder(d)
    p3, p20 = text_k_prompts(d, "eval", 3), text_k_prompts(d, "eval", 20)
    for q, a, b in zip(df.itertuples(), p3, p20):
        enc = EVAL_SEQS[q.src_row][q.seq_start : q.seq_start + q.seq_len]
        assert a == renderer.render(enc[-3:], 3) + "\n\n" + q.prompt_letter
        assert b.count(". 标题：") == min(20, len(enc))
        assert route(a) == q.subtask == route(b)  # the history does not disturb routing
    tok = load_tokenizer(d)
    n3, n20 = count_tokens(tok, p3), count_tokens(tok, p20)
    assert (n20 > n3).all() and n3[0] == len(tok(p3[0], add_special_tokens=False)["input_ids"])
