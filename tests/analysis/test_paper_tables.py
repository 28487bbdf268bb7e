from __future__ import annotations

import math

import pandas as pd
import pytest
from scipy import stats

from analysis import paper, tables
from analysis.records import GROUPS, SUBTASK_GROUP, col, load_records
from tests.analysis.factory import make_record, write_records


def _recs(tmp_path):
    recs = [
        make_record("m13-s0", acc=50.0, params=13_000_000, preset="13M", seed=0, n=400),
        make_record("m13-s1", acc=54.0, params=13_000_000, preset="13M", seed=1, n=400),
        make_record("m3-s0", acc={**{t: 40.0 for t in SUBTASK_GROUP}, "LI": 60.0}, params=3_200_000,
                    preset="3.2M", n=200),
        make_record("m85-nan", status="diverged", reason="NaN loss", params=85_000_000, preset="85M"),
        make_record("text20-s0", method="text20", params=None, adapter=None, strategy=None, acc=55.0),
    ]
    return load_records(write_records(tmp_path / "res", recs))


def test_table5_rows_match_records(tmp_path):
    df = _recs(tmp_path)
    agg, notes = tables.build(df, 5, "official")
    assert agg["preset"].tolist() == ["3.2M", "13M", "85M"]  # sorted by size; text20 left out
    assert notes and "text20" in notes[0]
    one = agg.iloc[0]
    r = df.set_index("trial_id").loc["m3-s0"]
    for key in ("LI", "interest_perception", "overall"):
        assert one[key] == r[col("official", key)]
        assert (one[f"{key}_lo"], one[f"{key}_hi"]) == (r[col("official", key, "lo")], r[col("official", key, "hi")])
    assert one["overall_n"] == 1400 and one["k"] == 1
    two = agg.iloc[1]  # two seeds: mean and t-interval over seeds
    assert two["overall"] == pytest.approx(52.0) and two["k"] == 2 and two["overall_n"] == 5600
    half = stats.t.ppf(0.975, 1) * pd.Series([50.0, 54.0]).std() / math.sqrt(2)
    assert two["overall_hi"] == pytest.approx(52.0 + half)
    nan_row = agg.iloc[2]
    assert math.isnan(nan_row["overall"]) and nan_row["status"] == "1 diverged" and nan_row["reason"] == "NaN loss"


def test_the_random_control_is_not_pooled_into_its_encoders_row(tmp_path):
    recs = [make_record("enc", acc=50.0, params=131_392, preset="tiny"),
            make_record("rand", acc=40.0, method="random_embedding", params=131_392, preset="tiny")]
    agg, notes = tables.build(load_records(write_records(tmp_path / "r", recs)), 5, "official")
    assert len(agg) == 1 and agg.iloc[0]["overall"] == 50.0 and agg.iloc[0]["k"] == 1
    assert any("random-embedding control" in n for n in notes)


def test_written_markdown_and_csv(tmp_path):
    df = _recs(tmp_path)
    md, csv = tables.write_table(df, 5, tmp_path / "out", with_paper=True)
    text = md.read_text()
    assert "| 3.2M | 3.2M | 40.00 [" in text and "| 1 diverged (NaN loss) |" in text
    assert "| 2 | ok |" in text and "(nan)" not in text
    assert "**Paper" in text and "| 1.2B | 1.2B | 53.98 | 49.16 | 84.97 | 64.86 |" in text
    back = pd.read_csv(csv)
    ours = back[back["source"] == "ours"]
    assert ours["overall"].iloc[0] == pytest.approx(df.set_index("trial_id").loc["m3-s0", col("official", "overall")])
    assert len(back[back["source"] == "paper"]) == 8


def test_table2_and_7_from_records(tmp_path):
    df = _recs(tmp_path)
    agg, _ = tables.build(df, 2, "official")
    assert agg["method"].tolist() == ["text20", "trm_pp"]  # paper order
    assert agg.set_index("method").loc["text20", "overall"] == 55.0
    agg7, _ = tables.build(df, 7, "official")
    assert agg7.set_index("method").loc["text20", "prompt_tokens"] == 130.0
    assert tables.main(["--results", str(tmp_path / "res"), "--table", "3", "--out", str(tmp_path / "o")]) == 0
    assert "SL (CE) | Full Info" in (tmp_path / "o" / "table3.md").read_text()


def test_paper_tables_are_consistent():
    """Typos in the transcription show up as broken cross-table identities."""
    su, acp, inp = GROUPS
    default = {su: 45.72, acp: 42.38, inp: 68.71, "overall": 53.88}
    for t in (3, 4, 5, 6):  # the default Trm++ setting appears in every ablation/scaling table
        hit = [r["scores"] for r in paper.rows(t) if r["scores"] == default]
        assert len(hit) == 1, t
    for r in paper.rows(2):  # a micro average lies between its sub-task accuracies
        s = r["scores"]
        for g in GROUPS:
            subs = [s[t] for t, gg in SUBTASK_GROUP.items() if gg == g]
            assert min(subs) <= s[g] <= max(subs), (r["method"], g)
        assert min(s[g] for g in GROUPS) <= s["overall"] <= max(s[g] for g in GROUPS)
    assert [r["scores"]["overall"] for r in paper.rows(7)] == [53.02, 59.32, 53.88, 55.00]
    with pytest.raises(ValueError, match="no table 8"):
        paper.rows(8)
