"""Evaluation of every method on the tiny log: batched == batch 1, both scorers, controls, baselines."""
from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from tests.tune.pipeline import pipeline
from uqa_ray.align.config import align_config
from uqa_ray.align.data import QuestionSplit
from uqa_ray.align.steps import load_aligned
from uqa_ray.align.train import train_alignment
from uqa_ray.encoders.config import input_columns
from uqa_ray.evaluate.controls import ORACLE_LAYOUT, oracle_names
from uqa_ray.evaluate.run import evaluate, score_split
from uqa_ray.questions.score import official_correct


@pytest.fixture(scope="module")
def pipe(tiny_data, tmp_path_factory):
    return pipeline(tiny_data, tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def aligned(pipe, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval_aligned") / "a"
    cfg = align_config("embedded", {"max_steps": 4, "batch_size": 4})
    assert train_alignment(cfg, pipe["data"], pipe["enc0"], pipe["llm"], out)["status"] == "ok"
    return out


@pytest.mark.parametrize("fmt", ["content", "letter"])
def test_batched_equals_batch_one(pipe, aligned, fmt):
    model, tok, enc_cfg = load_aligned(aligned, pipe["enc0"], pipe["llm"], torch.device("cpu"))
    data = QuestionSplit(pipe["data"], "eval")
    rows = np.arange(0, len(data), 3)
    msgs = data.messages(rows, fmt, with_answer=False)
    cols = list(input_columns(enc_cfg.input_mode))

    def soft_fn(part):
        return model.soft_tokens(data.sequences(part, cols, enc_cfg.max_len))

    many = score_split(model.llm, tok, data, rows, msgs, fmt, "user_turn", soft_fn, batch_size=16, n_soft=8)
    one = score_split(model.llm, tok, data, rows, msgs, fmt, "user_turn", soft_fn, batch_size=1, n_soft=8)
    assert many["predictions"] == one["predictions"]
    np.testing.assert_allclose(many["loglik"], one["loglik"], atol=1e-4, rtol=0)
    assert (many["loglik"].argmax(1) == one["loglik"].argmax(1)).all()
    np.testing.assert_array_equal(many["prompt_tokens"], one["prompt_tokens"])


def test_every_method_gives_both_scores_and_prompt_tokens(pipe, aligned):
    data = QuestionSplit(pipe["data"], "eval")
    res = {m: evaluate(m, pipe["data"], pipe["llm"], answer_format="content", placement="user_turn",
                       aligned_dir=aligned, encoder_dir=pipe["enc0"], batch_size=32, n_boot=100)
           for m in ("encoder", "random", "no_embedding", "oracle", "text20")}
    for m, r in res.items():
        for scorer in ("official", "likelihood"):
            o = r["scores"][scorer]["overall"]
            assert o["n"] == len(data) and 100.0 * o["correct"] / o["n"] == pytest.approx(o["acc"]), (m, scorer)
        pq_ = r["per_question"]
        golds = [data.golds("content")[i] for i in pq_["row"]]
        np.testing.assert_array_equal(official_correct(pq_["official_prediction"], golds), pq_["official_correct"])
    tokens = {m: r["prompt_tokens"] for m, r in res.items()}
    # table 7: the soft prompt adds n_soft tokens to the plain question; a text history adds far more
    assert tokens["encoder"] == pytest.approx(tokens["random"])
    assert res["encoder"]["n_soft"] == 8 and res["oracle"]["n_soft"] == sum(n for _, _, n in ORACLE_LAYOUT)
    assert tokens["text20"] > 5 * tokens["no_embedding"]
    # the user-turn layout adds its soft slot and a blank line to the plain question
    assert 12 <= tokens["oracle"] - tokens["no_embedding"] <= 16


def test_oracle_names_come_from_the_planted_truth(pipe):
    truth = pq.read_table(pipe["data"] / "truth.parquet").to_pandas().set_index("user")
    cates = dict(zip(*pq.read_table(pipe["data"] / "maps" / "cate.parquet",
                                    columns=["id", "name"]).to_pydict().values()))
    user = int(QuestionSplit(pipe["data"], "eval").q["user"][0])
    names = oracle_names(pipe["data"], [user])[0]
    assert len(names) == 12
    assert names[:3] == [cates[int(c)] for c in truth.loc[user, "lt_top3_cate"]]
    assert names[3] == cates[int(truth.loc[user, "current_cate"])]
    assert names[7] == cates[int(truth.loc[user, "trajectory_cate"][-1])]  # the path ends at the current phase


def test_methods_fail_clearly(pipe, tmp_path):
    with pytest.raises(ValueError, match="unknown method"):
        evaluate("text7", pipe["data"], pipe["llm"])
    with pytest.raises(ValueError, match="needs aligned_dir"):
        evaluate("encoder", pipe["data"], pipe["llm"])
    from uqa_ray.io import InputError

    with pytest.raises(InputError, match="truth"):
        oracle_names(tmp_path, [1])


def test_batches_by_length_respect_rows_and_token_budget():
    from uqa_ray.evaluate.run import batches_by_length

    lengths = [5, 100, 40, 40, 3, 250, 60]
    got = batches_by_length(lengths, batch_size=3, max_tokens=120)
    assert sorted(i for b in got for i in b) == list(range(len(lengths)))  # every row exactly once
    assert got[0] == [5] and got[1] == [1]  # longest first; a row over the budget goes alone
    for b in got:
        assert len(b) <= 3 and (len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 120)
    assert batches_by_length(lengths, batch_size=4) == [[5, 1, 6, 2], [3, 0, 4]]  # no budget: rows only


def test_a_capped_evaluation_takes_an_even_sample_of_the_questions():
    from uqa_ray.evaluate.run import even_sample

    assert even_sample(10, 0).tolist() == list(range(10)) and even_sample(5, 9).tolist() == list(range(5))
    rows = even_sample(5039, 600)
    assert len(set(rows.tolist())) == 600 and rows[0] == 0 and rows[-1] >= 5039 - 5039 // 600 - 1
    # questions are stored sub-task by sub-task: every stretch of the file is represented
    assert all(((rows >= s) & (rows < s + 500)).any() for s in range(0, 5039, 500))
