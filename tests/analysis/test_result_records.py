from __future__ import annotations

import json

import pytest

from analysis.records import col, excluded_summary, load_records
from tests.analysis.factory import make_record, write_records
from uqa_ray.io import InputError


def test_load_flattens_scores_and_metadata(tmp_path):
    recs = [make_record("a", acc={"DF": 40, "MF": 20, "IP": 50, "AP": 30, "LI": 70, "SI": 60, "IT": 80},
                        params=3_200_000, preset="3.2M", n=100),
            make_record("b", status="failed", reason="OOM on rank 3")]
    df = load_records(write_records(tmp_path, recs)).set_index("trial_id")
    assert len(df) == 2
    a = df.loc["a"]
    assert a["params_dense"] == 3_200_000 and a["preset"] == "3.2M" and a["encoder"] == "trm_pp"
    assert a[col("official", "DF")] == 40.0 and a[col("official", "DF", "n")] == 100
    # groups and overall are micro averages of the pooled questions
    assert a[col("official", "sequence_understanding")] == pytest.approx(30.0)
    assert a[col("official", "interest_perception", "correct")] == 210
    assert a[col("official", "overall")] == pytest.approx(100 * 350 / 700)
    assert a[col("official", "overall", "lo")] < a[col("official", "overall")] < a[col("official", "overall", "hi")]
    assert df.loc["b", "status"] == "failed"
    assert excluded_summary(df.reset_index()) == [{"trial_id": "b", "status": "failed", "reason": "OOM on rank 3"}]



def test_load_only_the_given_trials(tmp_path):
    # ci then local of one experiment in one workdir: each run reports its own trials only.
    folder = write_records(tmp_path, [make_record(t) for t in ("ci1", "ci2", "local1")])
    assert sorted(load_records(folder, ["local1"])["trial_id"]) == ["local1"]
    assert len(load_records(folder)) == 3
    with pytest.raises(InputError, match="no record for trial.*gone"):
        load_records(folder, ["local1", "gone"])

def _write(tmp_path, rec, name=None):
    (tmp_path / f"{name or rec['trial_id']}.json").write_text(json.dumps(rec))
    return tmp_path


@pytest.mark.parametrize("field", ["experiment", "trial_id", "status", "config", "config_hash", "method",
                                   "encoder", "seed", "scores", "timings", "versions", "created"])
def test_missing_field_names_file_and_field(tmp_path, field):
    rec = make_record("t1")
    del rec[field]
    with pytest.raises(InputError, match=rf"t1\.json: field '{field}'"):
        load_records(_write(tmp_path, rec, "t1"))


@pytest.mark.parametrize("path,value,match", [
    (("encoder", "params_dense"), "25M", "encoder.params_dense"),
    (("encoder", "input_mode"), "text_only", "encoder.input_mode"),
    (("status",), "done", "status"),
    (("adapter",), "linear", "adapter"),
    (("seed",), 1.5, "seed"),
    (("created",), "yesterday", "created"),
    (("scores", "official", "subtasks", "XX"), {"acc": 1, "n": 1, "correct": 0, "ci95": [0, 1]}, "subtasks"),
    (("scores", "official", "overall", "ci95"), [90, 95], "overall.ci95"),
])
def test_bad_values_are_named(tmp_path, path, value, match):
    rec = make_record("t2")
    node = rec
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    with pytest.raises(InputError, match=match):
        load_records(_write(tmp_path, rec))


def test_fraction_instead_of_percent_is_caught(tmp_path):
    rec = make_record("t3", acc=50.0)
    rec["scores"]["official"]["overall"]["acc"] = 0.5  # correct/n says 50
    with pytest.raises(InputError, match=r"t3\.json.*x100"):
        load_records(_write(tmp_path, rec))


def test_status_rules(tmp_path):
    with pytest.raises(InputError, match="needs a reason"):
        load_records(_write(tmp_path, make_record("d1", status="diverged")))
    ok_no_scores = make_record("d2")
    ok_no_scores["scores"] = {}
    (tmp_path / "x").mkdir()
    with pytest.raises(InputError, match="at least one"):
        load_records(_write(tmp_path / "x", ok_no_scores))


def test_folder_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_records(tmp_path / "nope")
    with pytest.raises(InputError, match="no \\*.json"):
        load_records(tmp_path)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InputError, match=r"bad\.json: not a readable JSON"):
        load_records(tmp_path)
    (tmp_path / "bad.json").unlink()
    with pytest.raises(InputError, match="does not match the file name"):
        load_records(_write(tmp_path, make_record("right"), "wrong"))


def test_hidden_temporaries_are_ignored(tmp_path):
    write_records(tmp_path, [make_record("r1")])
    (tmp_path / ".r2.json.part.tmp-1-abc").write_text("partial")
    (tmp_path / ".r3.json").write_text("{partial")
    assert load_records(tmp_path)["trial_id"].tolist() == ["r1"]
