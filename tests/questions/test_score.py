"""Scoring: the official rule, option likelihood, micro averages, bootstrap CIs, the paired test."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.questions.builder import write_arrow
from uqa_ray.cli import main
from uqa_ray.data.schema import ALIGN_SCHEMA, SEQ_COLUMNS
from uqa_ray.io import InputError
from uqa_ray.questions import score
from uqa_ray.questions.score_files import score_files


def write_preds(path, rows, predictions=None, logprobs=None):
    with open(path, "w") as f:
        for i, r in enumerate(rows):
            rec = {"row": int(r)}
            if predictions is not None:
                rec["prediction"] = predictions[i]
            if logprobs is not None:
                rec["option_logprobs"] = list(map(float, logprobs[i]))
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return path


@pytest.fixture
def qset(gen_zh):
    out, _ = gen_zh
    path = out / "questions_eval.parquet"
    return path, pq.read_table(path).to_pandas()


def test_official_rule_direction():
    ok = score.official_correct(["A", "A.", "", " A", "B", "AB"], ["A"] * 6)
    assert ok.tolist() == [True, True, False, False, False, True]
    with pytest.raises(InputError, match="gold"):
        score.official_correct(["A"], [""])


def test_perfect_predictor_scores_100_under_both(qset, tmp_path):
    path, df = qset
    onehot = np.where(np.eye(4)[df.gold] == 1, -0.1, -5.0)
    preds = write_preds(tmp_path / "p.jsonl", df.row, list(df.answer_letter), onehot)
    for method in ("official", "likelihood"):
        s, correct, used = score_files(path, preds, method)
        assert used == method and correct.all()
        assert s["overall"]["acc"] == 100.0 and s["overall"]["n"] == len(df)
        assert all(v["acc"] == 100.0 for sec in ("groups", "subtasks") for v in s[sec].values())


@pytest.mark.parametrize("j", range(4))
def test_constant_letter_scores_one_in_four_under_both(qset, tmp_path, j):
    path, df = qset
    lp = np.tile(np.where(np.arange(4) == j, 0.0, -1.0), (len(df), 1))
    preds = write_preds(tmp_path / "c.jsonl", df.row, ["ABCD"[j]] * len(df), lp)
    a, _, _ = score_files(path, preds, "official")
    b, _, _ = score_files(path, preds, "likelihood")
    assert a == b
    assert a["overall"]["acc"] == pytest.approx(25.0, abs=100 / len(df))
    for v in a["subtasks"].values():  # 12 per sub-task, gold positions exactly balanced
        assert v["acc"] == 25.0


def test_micro_averages_by_hand():
    subs = ["DF"] * 4 + ["MF"] * 2 + ["IP"] * 1 + ["AP"] * 3 + ["LI"] * 2 + ["SI"] * 2
    correct = [1, 1, 1, 0] + [0, 0] + [1] + [1, 0, 0] + [1, 1] + [0, 1]
    s = score.accuracy_table(np.array(correct, bool), subs, n_boot=200)
    assert s["subtasks"]["DF"]["acc"] == 75.0 and s["subtasks"]["MF"]["acc"] == 0.0
    assert s["groups"]["sequence_understanding"]["acc"] == pytest.approx(300 / 6)  # not (75 + 0) / 2
    assert s["groups"]["action_prediction"]["acc"] == pytest.approx(200 / 4)  # not (100 + 33.3) / 2
    assert s["groups"]["interest_perception"]["acc"] == 75.0
    assert s["overall"] == {**s["overall"], "acc": pytest.approx(800 / 14), "n": 14, "correct": 8}
    assert list(s) == ["overall", "groups", "subtasks"] and "IT" not in s["subtasks"]
    assert list(s["subtasks"]) == ["DF", "MF", "IP", "AP", "LI", "SI"]


def test_bootstrap_ci_contains_estimate_and_narrows():
    widths = []
    for n in (50, 500, 5000):
        k = int(0.6 * n)
        lo, hi = score.bootstrap_ci(k, n, n_boot=2000, seed=1)
        assert lo <= 100 * k / n <= hi
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2]
    assert score.bootstrap_ci(30, 50, seed=3) == score.bootstrap_ci(30, 50, seed=3)
    # the binomial draw equals resampling indices: compare with the explicit bootstrap
    rng = np.random.default_rng(0)
    x = rng.random(400) < 0.6
    explicit = x[rng.integers(0, 400, (4000, 400))].mean(1) * 100
    lo, hi = score.bootstrap_ci(int(x.sum()), 400, n_boot=4000)
    assert abs(lo - np.percentile(explicit, 2.5)) < 1.0 and abs(hi - np.percentile(explicit, 97.5)) < 1.0


def test_paired_bootstrap_detects_real_not_null():
    rng = np.random.default_rng(0)
    n = 600
    truth_a = rng.random(n) < 0.70
    better = score.paired_bootstrap(truth_a, rng.random(n) < 0.50, seed=1)
    assert better["p_value"] < 0.001 and better["ci95"][0] > 0 and better["delta"] > 10
    null = score.paired_bootstrap(rng.random(n) < 0.6, rng.random(n) < 0.6, seed=1)
    assert null["p_value"] > 0.05 and null["ci95"][0] < 0 < null["ci95"][1]
    same = score.paired_bootstrap(truth_a, truth_a)
    assert same["delta"] == 0 and same["p_value"] == 1.0


def test_predictions_file_errors(qset, tmp_path):
    path, df = qset
    rows, letters = list(df.row), list(df.answer_letter)
    cases = {
        "row 999": write_preds(tmp_path / "a.jsonl", rows + [999], letters + ["A"]),
        "predicted twice": write_preds(tmp_path / "b.jsonl", rows + rows[:1], letters + ["A"]),
        "no prediction for 1": write_preds(tmp_path / "c.jsonl", rows[1:], letters[1:]),
        "4 numbers": write_preds(tmp_path / "d.jsonl", rows, None, [[0.0, 1.0]] * len(rows)),
        "NaN": write_preds(tmp_path / "e.jsonl", rows, None, [[0.0, float("nan"), 0, 0]] * len(rows)),
    }
    (tmp_path / "f.jsonl").write_text('{"row": 0, "prediction": "A"}\nnot json\n')
    cases["f.jsonl:2"] = tmp_path / "f.jsonl"
    for words, p in cases.items():
        with pytest.raises(InputError, match=words):
            score_files(path, p)


def test_scores_the_official_arrow_file(gen_zh, qset, tmp_path):
    out, _ = gen_zh
    path, df = qset
    preds = write_preds(tmp_path / "p.jsonl", df.row, ["B"] * len(df), np.tile([-2.0, 0, -2, -2], (len(df), 1)))
    for method in ("official", "likelihood"):
        from_parquet, _, _ = score_files(path, preds, method)
        from_arrow, _, _ = score_files(out / "align_data_eval.arrow", preds, method)
        assert from_arrow == from_parquet
    # an unroutable question is an error naming its row
    cols = {c: [[[1]]] * 2 for c in SEQ_COLUMNS}
    cols["text"] = [json.dumps([{"role": "user", "content": q}, {"role": "assistant", "content": "A"}],
                               ensure_ascii=False) for q in ("用户近期最感兴趣的品类是什么？", "你好吗？")]
    bad = tmp_path / "bad.arrow"
    write_arrow(bad, cols, schema=ALIGN_SCHEMA)
    with pytest.raises(InputError, match="row 1.*你好吗"):
        score_files(bad, write_preds(tmp_path / "q.jsonl", [0, 1], ["A", "A"]))


def test_score_cli(qset, tmp_path, capsys):
    path, df = qset
    good = write_preds(tmp_path / "g.jsonl", df.row, list(df.answer_letter))
    const = write_preds(tmp_path / "k.jsonl", df.row, ["A"] * len(df))
    assert main(["score", "--questions", str(path), "--predictions", str(good), "--out", str(tmp_path / "s.json")]) == 0
    assert json.loads((tmp_path / "s.json").read_text()) == json.loads(capsys.readouterr().out)
    assert main(["score", "--questions", str(path), "--predictions", str(good), "--compare", str(const)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["a"]["overall"]["acc"] == 100.0 and res["b"]["overall"]["acc"] == pytest.approx(25.0, abs=2)
    assert (res["paired"]["overall"]["delta"] == pytest.approx(75.0, abs=2)
            and res["paired"]["overall"]["p_value"] < 0.01)
    assert main(["score", "--questions", str(path), "--predictions", str(tmp_path / "none.jsonl")]) == 2


def test_scores_the_official_generation_output(gen_zh, qset, tmp_path, capsys):
    """The official generation script writes one line per question with its text, the greedy token and the
    gold, and no row: it is scored as is, in any order, and equals the row-keyed score."""
    out, _ = gen_zh
    arrow = out / "align_data_eval.arrow"
    path, df = qset
    chats = [json.loads(t) for t in pa_ipc_texts(arrow)]
    rng = np.random.default_rng(0)
    guesses = rng.choice(list("ABCD"), len(chats)).tolist()
    lines = [{"question": c[0]["content"], "prediction": g, "answer": c[1]["content"]} for c, g in zip(chats, guesses)]
    order = rng.permutation(len(lines))
    official = tmp_path / "official.jsonl"
    official.write_text("".join(json.dumps(lines[i], ensure_ascii=False) + "\n" for i in order))
    by_row = write_preds(tmp_path / "rows.jsonl", range(len(chats)), guesses)
    assert score_files(arrow, official)[0] == score_files(arrow, by_row)[0]
    assert main(["score", "--questions", str(arrow), "--predictions", str(official)]) == 0
    assert json.loads(capsys.readouterr().out)["overall"]["n"] == len(chats)
    # each defect names its line; the CLI exits 2
    unknown = dict(lines[0], question="你好吗？")
    twice = [lines[0]] * (sum(l == lines[0] for l in lines) + 1)
    cases = {"no question of align_data_eval.arrow has this text": [unknown],
             "predicted more times": twice,
             "string 'question' and 'answer'": [dict(lines[0], answer=None)]}
    for words, bad in cases.items():
        p = tmp_path / "bad.jsonl"
        p.write_text("".join(json.dumps(l, ensure_ascii=False) + "\n" for l in bad))
        with pytest.raises(InputError, match=f"bad.jsonl:{len(bad)}: .*{words}"):
            score_files(arrow, p)
        assert main(["score", "--questions", str(arrow), "--predictions", str(p)]) == 2
    with pytest.raises(InputError, match="needs the official align_data_eval.arrow"):
        score_files(path, official)


def pa_ipc_texts(path):
    with pa.memory_map(str(path)) as src:
        return pa.ipc.open_file(src).read_all().column("text").to_pylist()
