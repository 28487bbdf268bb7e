"""Ray Tune grid: trial expansion and hashing, records that analysis/records.py loads, and a 2x2 grid that
is stopped after two trials and restored without re-running or losing anything."""
from __future__ import annotations

import pytest

from analysis.records import load_records
from tests.tune.pipeline import pipeline
from uqa_ray.config import ConfigError, build
from uqa_ray.tune.grid import GridSpec, expand, run_grid
from uqa_ray.tune.records import read_record, record_path
from uqa_ray.tune.trial import config_hash, execute


@pytest.fixture(scope="module")
def pipe(tiny_data, tmp_path_factory):
    return pipeline(tiny_data, tmp_path_factory.getbasetemp())


def _spec(pipe, **over) -> GridSpec:
    base = {
        "encoders": [{"dir": str(pipe["enc0"]), "preset": "tiny", "loss": "ce"},
                     {"dir": str(pipe["enc1"]), "preset": "tiny", "loss": "ce"}],
        "lrs": [1e-3, 3e-3], "methods": ["encoder"], "align_preset": "embedded", "llm": str(pipe["llm"]),
        "align": {"max_steps": 3, "batch_size": 4}, "n_boot": 100, "max_questions": 24,
        "resources": {"CPU": 2},  # one trial at a time on the 2-core test machine
    }
    return build(GridSpec, base, over)


def test_expand_orders_trials_and_hashes_only_what_changes_results(pipe, tmp_path):
    spec = _spec(pipe, methods=["encoder", "random", "no_embedding", "oracle", "text20", "text50"], seeds=[0, 1])
    trials = expand(spec, pipe["data"], str(pipe["llm"]), "x", tmp_path / "r", tmp_path / "c")
    methods = [t["method"] for t in trials]
    # random controls last: each reuses an encoder trial's alignment, which must be trained first
    assert methods == ["encoder"] * 8 + ["no_embedding", "oracle", "text20", "text50"] + ["random"] * 8
    hashes = [config_hash(t) for t in trials]
    assert len(set(hashes)) == len(hashes)
    t = trials[0]
    faster = {**t, "align": {**t["align"], "threads": 2, "eval_batch_size": 7, "log_every": 9}}
    assert config_hash(faster) == config_hash(t)  # speed knobs are not identity
    assert config_hash({**t, "align": {**t["align"], "lr": 0.5}}) != config_hash(t)
    # a seed-free control does not depend on the encoders or lrs of the grid it came from
    other = expand(_spec(pipe, methods=["no_embedding"], lrs=[0.1]), pipe["data"], str(pipe["llm"]), "x",
                   tmp_path / "r", tmp_path / "c")
    assert config_hash(other[0]) == hashes[8]
    # the Text-k baselines alone take their own cap on the questions
    capped = expand(_spec(pipe, methods=["no_embedding", "text20", "text50"], text_max_questions=5),
                    pipe["data"], str(pipe["llm"]), "x", tmp_path / "r", tmp_path / "c")
    assert [t["eval"]["max_questions"] for t in capped] == [24, 5, 5]
    assert config_hash(capped[0]) == hashes[8]
    with pytest.raises(ValueError, match="unknown"):
        _spec(pipe, methods=["text7"])
    # one random control, for the last (largest) encoder only: its trials are those of the full grid
    last = expand(_spec(pipe, methods=["encoder", "random"], random_of="last"), pipe["data"], str(pipe["llm"]),
                  "x", tmp_path / "r", tmp_path / "c")
    rand = [t for t in last if t["method"] == "random"]
    assert len(rand) == 2 and {t["encoder"]["dir"] for t in rand} == {str(pipe["enc1"].resolve())}
    assert {config_hash(t) for t in rand} <= set(hashes)


def test_trial_records_load_in_analysis_and_are_never_redone(pipe, tmp_path, monkeypatch):
    spec = _spec(pipe, methods=["encoder", "no_embedding", "text20"], lrs=[3e-3],
                 encoders=[{"dir": str(pipe["enc0"]), "preset": "tiny", "loss": "ce"}])
    trials = expand(spec, pipe["data"], str(pipe["llm"]), "exp", tmp_path / "results", tmp_path / "cache")
    diverged = {**trials[0], "align": {**trials[0]["align"], "lr": 1e-3}}  # its own trial, trained with a NaN
    failed = {**trials[0], "encoder": {**trials[0]["encoder"], "dir": str(tmp_path / "missing")}}
    records = [execute(t) for t in trials]
    with monkeypatch.context() as m:
        m.setenv("UQA_RAY_FAULTS", '{"nan_at_step": 2}')  # uqa_ray/faults.py
        records.append(execute(diverged))
    records.append(execute(failed))
    assert [r["status"] for r in records] == ["ok", "ok", "ok", "diverged", "failed"]
    assert records[3]["reason"].startswith("step 2: non-finite") and records[3]["scores"] == {}
    assert "missing" in records[4]["reason"]
    assert records[0]["encoder"]["preset"] == "tiny" and records[0]["encoder"]["params_dense"] > 0
    assert records[1]["encoder"] is None and records[1]["adapter"] is None
    assert records[2]["prompt_tokens"] > 5 * records[1]["prompt_tokens"]  # Text20 vs the plain question
    df = load_records(tmp_path / "results" / "exp")
    assert len(df) == 5 and set(df["status"]) == {"ok", "diverged", "failed"}
    assert df.set_index("method").loc["text20", "likelihood.overall.n"] == 24
    assert (tmp_path / "results" / "exp" / "predictions" / f"{records[0]['trial_id']}.parquet").is_file()
    # a finished trial is not run again: the same record comes back, the file is untouched
    path = record_path(tmp_path / "results", "exp", records[0]["trial_id"])
    stamp = path.stat().st_mtime_ns
    assert execute(trials[0]) == records[0] and path.stat().st_mtime_ns == stamp


def _tune_results(storage):
    """Every Tune trial's result.json (one line per tune.report) under the storage folder."""
    return {p.relative_to(storage): p.read_text() for p in storage.glob("grid*/*/result.json")}


@pytest.mark.slow
def test_grid_2x2_runs_and_restores_after_an_interruption(pipe, tmp_path):
    spec, results, storage = _spec(pipe), tmp_path / "results", tmp_path / "tune"
    first, unrun = run_grid("grid", spec, pipe["data"], results, storage, stop_after=2)
    assert len(first) == 2 and all(r["status"] == "ok" for r in first)
    assert len(unrun) == 2 and all("not run in this invocation (stop_after=2)" in m["reason"] for m in unrun)
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (results / "grid").glob("*.json")}
    ran_before = _tune_results(storage)
    assert len(before) == 2 and sum('"record"' in t for t in ran_before.values()) == 2

    records, missing = run_grid("grid", spec, pipe["data"], results, storage)  # restores, runs only the rest
    assert missing == []
    assert sorted(m["trial_id"] for m in unrun) == sorted(r["trial_id"] for r in records if r not in first)
    assert len(records) == 4 and len({r["trial_id"] for r in records}) == 4
    files = sorted(p.name for p in (results / "grid").glob("*.json"))
    assert files == sorted(f"{r['trial_id']}.json" for r in records)  # no duplicate, none lost
    for name, (stamp, data) in before.items():  # the first two were neither re-run nor rewritten
        p = results / "grid" / name
        assert p.stat().st_mtime_ns == stamp and p.read_bytes() == data
    ran_after = _tune_results(storage)
    assert all(ran_after[k] == v for k, v in ran_before.items())  # their Tune results did not grow
    assert sum('"record"' in t for t in ran_after.values()) == 4  # exactly two more trials reported
    df = load_records(results / "grid")
    assert len(df) == 4 and (df["status"] == "ok").all()
    assert sorted(r["config"]["align"]["lr"] for r in records) == [1e-3, 1e-3, 3e-3, 3e-3]
    assert {r["config"]["encoder"]["dir"] for r in records} == {str(pipe["enc0"]), str(pipe["enc1"])}
    # a third run finds everything done and returns the same records
    assert ([read_record(record_path(results, "grid", r["trial_id"])) for r in records], []) == \
        run_grid("grid", spec, pipe["data"], results, storage)


def test_cli_builds_the_grid_from_overrides_and_reports_bad_input(tmp_path, capsys):
    from uqa_ray.cli import main
    from uqa_ray.config import parse_dotted

    spec = build(GridSpec, parse_dotted(["encoders=[{dir: a/encoder, preset: tiny, loss: ce}]", "lrs=[1e-3, 3e-3]",
                                         "align_preset=embedded", "align.max_steps=5", "resources.CPU=2"]))
    assert spec.lrs == (1e-3, 3e-3) and spec.encoders[0].preset == "tiny" and spec.align == {"max_steps": 5}
    assert main(["tune", "--experiment", "x", "--data", str(tmp_path / "nothing"), "--storage", str(tmp_path),
                 "--set", "methods=[no_embedding]"]) == 2
    assert "questions_train.parquet" in capsys.readouterr().err
    assert main(["tune", "--experiment", "x", "--data", str(tmp_path), "--set", "adapters=[perceiver]",
                 "methods=[text20]"]) == 2
    assert "adapter" in capsys.readouterr().err
    # methods that align need encoders: refused before any LLM is found or taught
    assert main(["tune", "--experiment", "x", "--data", str(tmp_path), "--set", "methods=[encoder]"]) == 2
    assert "need at least one entry in encoders" in capsys.readouterr().err


@pytest.mark.parametrize("field,axis", [("lr", "lrs"), ("adapter", "adapters"), ("strategy", "strategies"),
                                        ("seed", "seeds")])
def test_what_the_grid_sweeps_has_one_home(field, axis):
    """`grid.align.lr` beside `grid.lrs` was two homes for one setting, the axis silently winning."""
    value = {"lr": 1e-3, "adapter": "mlp", "strategy": "full", "seed": 1}[field]
    with pytest.raises(ConfigError, match=f"{field} is set by grid.{axis}"):
        build(GridSpec, {"methods": ["no_embedding"], "align": {field: value}})
    assert getattr(build(GridSpec, {"methods": ["no_embedding"], axis: [value]}), axis) == (value,)


def test_an_untaught_tiny_lm_is_called_out(tmp_path, capsys):
    import json

    from uqa_ray.align.llm import TINY_INFO_FILE
    from uqa_ray.tune.grid import warn_if_untaught

    def taught(acc):
        (tmp_path / TINY_INFO_FILE).write_text(json.dumps({"taught": {
            "steps": 250, "chance": 25.0, "holdout_likelihood_accuracy": acc}}))
        warn_if_untaught(tmp_path)
        return capsys.readouterr().out

    assert "WARNING" in taught({"no_history": 26.0, "text3": 27.0, "text10": 28.0})
    assert taught({"no_history": 42.0, "text3": 51.0, "text10": 58.0}) == ""  # measured after 1,500 steps


def test_encoder_block_carries_the_pretraining_metrics_of_its_run(pipe, tmp_path):
    """Beside an export, the run's summary.json gives preset, loss and the eval metrics the scaling plot's
    second panel draws; without one, `pretrain` is null."""
    import json
    import shutil

    from uqa_ray.tune.records import encoder_block

    assert encoder_block(pipe["enc0"], "tiny", "ce")["pretrain"] is None
    run = tmp_path / "run"
    shutil.copytree(pipe["enc0"], run / "encoder")
    metrics = {"eval/HR@10": 0.25, "eval/NDCG@10": 0.12, "eval/loss": 7.4, "eval/HR@5": 0.2, "train_loss": 6.0}
    (run / "summary.json").write_text(json.dumps({"config": {"preset": "tiny", "loss": {"kind": "ce"}},
                                                  "metrics": metrics}))
    block = encoder_block(run / "encoder")
    assert block["preset"] == "tiny" and block["loss"] == "ce"
    assert block["pretrain"] == {"HR@10": 0.25, "NDCG@10": 0.12, "loss": 7.4}
