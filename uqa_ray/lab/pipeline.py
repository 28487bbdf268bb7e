"""Run an experiment end to end, reusing every stage whose output exists for the same config.

Each stage writes under `<workdir>/<stage>/<content hash>/` and is reused only when its markers are all
there (`uqa_ray/stage.py`), so a killed run leaves either a finished output (reused by the rerun) or one that
is built again. Pretraining runs resume from their checkpoints, and
alignment trials whose result record exists are not run again (uqa_ray.tune).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from uqa_ray.config import ConfigError, build, content_hash, to_dict
from uqa_ray.data.schema import ALIGN_FILES, META_FILE, QUESTIONS_FILES
from uqa_ray.io import say
from uqa_ray.lab.config import LabConfig
from uqa_ray.lab.events import Events
from uqa_ray.pretrain.config import PretrainConfig
from uqa_ray.stage import Stage


def _say(msg: str) -> None:
    say(f"[lab] {msg}")


def raw_data(cfg: LabConfig, work: Path) -> Path:
    """The raw click log: given, or generated from a synthetic preset (once per preset/seed/overrides)."""
    if cfg.raw:
        return Path(cfg.raw)
    from uqa_ray.data.synthetic import generate, preset

    scfg = preset(cfg.synth, cfg.synth_overrides)
    stage = Stage("synth", work / "raw" / f"{cfg.synth}-{content_hash(scfg, cfg.seed)}", ("synth.json",))

    def build() -> None:
        t0 = time.perf_counter()
        generate(scfg, stage.folder, seed=cfg.seed, preset_name=cfg.synth)
        _say(f"synth: {cfg.synth} log written to {stage.folder} in {time.perf_counter() - t0:.0f}s")

    return stage.get(build, _say)


def prepared_data(cfg: LabConfig, work: Path) -> Path:
    from uqa_ray.data.prepare import prepare
    from uqa_ray.questions.render import prompt_text

    if cfg.official:
        from uqa_ray.data.official import prepare_official

        key = content_hash(str(Path(cfg.official).resolve()), cfg.tokenizer)
        stage = Stage("prepare", work / "data" / f"official-{key}", (META_FILE,))
        return stage.get(lambda: prepare_official(cfg.official, stage.folder, tokenizer=cfg.tokenizer or None), _say)
    raw = raw_data(cfg, work)
    pcfg = cfg.prepare
    text = [] if cfg.tokenizer else prompt_text()  # what the embedded tokenizer learns besides the catalog
    stage = Stage("prepare", work / "data" / f"prep-{content_hash(str(raw.resolve()), pcfg, cfg.tokenizer, text)}",
                  (META_FILE,))

    def make() -> None:
        t0 = time.perf_counter()
        meta = prepare(raw, stage.folder, pcfg, tokenizer=cfg.tokenizer or None, prompt_text=text)
        counts = meta.get("counts", {})
        _say(f"prepare: {counts.get('train_users', '?')} train / {counts.get('eval_users', '?')} eval users "
             f"in {time.perf_counter() - t0:.0f}s -> {stage.folder}")

    return stage.get(make, _say)


def question_set(cfg: LabConfig, data: Path, work: Path) -> Path:
    """A data folder with questions: the align files and question tables, plus links to the prepared
    files (the official folder itself when it ships the align files)."""
    if cfg.official and all((Path(cfg.official) / f).exists() for f in ALIGN_FILES.values()):
        return Path(cfg.official)
    from uqa_ray.questions.generate import generate

    qcfg = cfg.questions
    # Complete = the question files AND the links to every prepared file (the trials read meta.json, the
    # tokenizer, ... from this folder).
    stage = Stage("questions", work / "questions" / f"q-{content_hash(str(data.resolve()), qcfg)}",
                  (*ALIGN_FILES.values(), *QUESTIONS_FILES.values(), *(e.name for e in data.iterdir())))

    def make() -> None:
        out = stage.folder
        out.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        # Linked BEFORE the question files are written, since their presence is what marks the folder
        # reusable: a run killed between the two used to leave question files without links, and its rerun
        # reused that folder and failed every trial (no meta.json, no tokenizer).
        for entry in data.iterdir():
            if not (out / entry.name).is_symlink() and not (out / entry.name).exists():
                (out / entry.name).symlink_to(entry.resolve())
        summary = generate(data, qcfg, out)
        made = {s: sum(v["made"] for v in d["subtasks"].values()) for s, d in summary["splits"].items()}
        _say(f"questions: {made} in {time.perf_counter() - t0:.0f}s -> {out}")

    return stage.get(make, _say)


def pretrained_encoders(cfg: LabConfig, data: Path, work: Path) -> list[dict[str, Any]]:
    """Pretrain every variant (Ray Train + DeepSpeed); finished runs are reused, interrupted ones resume.
    Up to `cfg.pretrain_concurrency` runs at once, each its own TorchTrainer: Ray places their workers
    as the cluster's resources allow (a size ladder on a cluster trains its sizes side by side)."""
    from concurrent.futures import ThreadPoolExecutor

    from uqa_ray.pretrain.trainer import pretrain

    configs = [variant_config(cfg, v, data) for v in cfg.variants]

    def one(i: int) -> dict[str, Any]:
        pcfg = configs[i]
        _say(f"pretrain {i + 1}/{len(configs)}: {pcfg.preset} max_len={pcfg.max_len} "
             f"input={pcfg.input_mode} loss={pcfg.loss.kind}")
        res = pretrain(pcfg)
        return {"variant": cfg.variants[i], "config": to_dict(pcfg), "status": res.status, "reason": res.reason,
                "run_dir": str(res.run_dir), "encoder_dir": str(res.encoder_dir) if res.encoder_dir else None,
                "metrics": res.metrics}

    with ThreadPoolExecutor(max_workers=max(1, min(cfg.pretrain_concurrency, len(configs)))) as pool:
        return list(pool.map(one, range(len(configs))))


def analyse(cfg: LabConfig, results: Path, reports: Path, trial_ids: list[str],
            missing: list[dict[str, Any]]) -> dict[str, Any]:
    """Fits, plots and tables from the result records only (analysis/ never sees the models): those of
    this run's trials, so that another config of the same experiment in the same workdir (ci, then
    local) does not leak into this one's report. `missing` planned trials are marked in all three."""
    from analysis.scaling import summary
    from analysis.records import load_records
    from analysis.report import build_report
    from analysis.tables import write_table

    if cfg.x == "none":
        paths = write_table(load_records(results, trial_ids), cfg.table, reports, scorer=cfg.scorer, with_paper=True,
                            missing=missing)
        _say(f"analysis: table {cfg.table} -> {', '.join(str(p) for p in paths)}")
        return {"paths": [str(p) for p in paths]}
    names = {variant_encoder(cfg, v) for v in cfg.variants}
    method = names.pop() if len(names) == 1 else None
    doc, paths = build_report(results, reports, x=cfg.x, scorer=cfg.scorer, table=cfg.table or None,
                              paper=True, method=method, trial_ids=trial_ids, missing=missing)
    _say(f"analysis: {len(paths)} files -> {reports}")
    _say(summary(doc))
    for p in paths:
        if p.suffix == ".md":  # the paper-style table, ours beside the paper's, at the end of the run
            print(p.read_text(), flush=True)
    return {"paths": [str(p) for p in paths], "fit": doc}


def variant_encoder(cfg: LabConfig, variant: dict[str, Any]) -> str:
    """The encoder name a variant trains (the `method` of its result records)."""
    from uqa_ray.encoders.presets import PRESETS

    preset = variant.get("preset", cfg.pretrain.preset)
    enc = {**cfg.pretrain.encoder, **variant.get("encoder", {})}
    return enc.get("name", PRESETS[preset]["name"])


def variant_config(cfg: LabConfig, variant: dict[str, Any], data: Path | str = "") -> PretrainConfig:
    """The PretrainConfig of one variant: the lab's `pretrain` block with the variant's overrides."""
    return build(PretrainConfig, to_dict(cfg.pretrain), variant, {"data": str(data)} if data else {})


def check(cfg: LabConfig) -> None:
    """Validate what the typed config cannot before any work starts (a typo fails in seconds, not hours):
    the experiment's name, the synthetic preset's overrides and each variant's."""
    from uqa_ray.data.synthetic import preset
    from uqa_ray.tune.records import check_experiment

    def at(where: str, fn, *args):
        try:
            return fn(*args)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"{where}: {e}") from e

    at("experiment", check_experiment, cfg.experiment)
    if not cfg.raw and not cfg.official:
        at("synth", preset, cfg.synth, cfg.synth_overrides)
    for i, v in enumerate(cfg.variants):
        at(f"variants[{i}]", variant_config, cfg, v)


def sweep(work: Path, experiment: str) -> None:
    """Remove what a killed run left half-written: SIGKILL skips the `finally` of every atomic write, so
    its temporaries stay (hidden, never mistaken for outputs, but they would pile up in this
    experiment's results and reports). Temporaries of live writers - a concurrent run - are kept."""
    from uqa_ray.io import sweep_stale_tmp

    gone = [p for d in (work / "raw", work / "data", work / "questions", work / "results" / experiment,
                        work / "reports" / experiment) for p in sweep_stale_tmp(d)]
    if gone:
        _say(f"removed {len(gone)} temporaries of an interrupted run: {', '.join(str(p) for p in gone[:5])}"
             + (" ..." if len(gone) > 5 else ""))


def not_ok(encoders: list[dict[str, Any]], records: list[dict[str, Any]], missing: list[dict[str, Any]],
           results: Path) -> list[dict[str, Any]]:
    """Every planned piece of the study without an ok result: pretraining runs that did not finish (their
    trials were never planned), trials with no record after their retries, and records not ok."""
    runs = [{"trial_id": f"pretrain:{Path(e['run_dir']).name}", "method": "pretrain",
             "reason": f"{e['status']}: {e['reason']}", "log": e["run_dir"]} for e in encoders if e["status"] != "ok"]
    bad = [{"trial_id": r["trial_id"], "method": r.get("method"), "reason": f"{r['status']}: {r.get('reason')}",
            "log": str(results / f"{r['trial_id']}.json")} for r in records if r.get("status") != "ok"]
    return [*runs, *missing, *bad]


def run(cfg: LabConfig) -> dict[str, Any]:
    from uqa_ray.lab.trials import align_and_evaluate
    from uqa_ray.raysetup import init_ray

    check(cfg)
    t0 = time.perf_counter()
    work = Path(cfg.workdir).resolve()
    events = Events(work, cfg.experiment)  # events.jsonl: one line per stage, for benchmarks and scripts
    with events.stage("run") as run_figures:
        run_figures["config"] = to_dict(cfg)  # the resolved lab config (preset + overrides), in the run's line
        sweep(work, cfg.experiment)
        init_ray()
        with events.stage("data") as f:
            data = prepared_data(cfg, work)
            f["path"] = str(data)
        with events.stage("questions") as f:
            questions = question_set(cfg, data, work)
            f["path"] = str(questions)
        with events.stage("pretrain") as f:
            encoders = pretrained_encoders(cfg, data, work)
            f["runs"] = [{"run_dir": e["run_dir"], "status": e["status"], "wall_s": (e["metrics"] or {}).get("wall_s"),
                          "HR@10": (e["metrics"] or {}).get("eval/HR@10")} for e in encoders]
        results = work / "results" / cfg.experiment
        with events.stage("trials") as f:
            records, missing = align_and_evaluate(cfg, data, questions, encoders, results, work)
            f.update(trials=len(records), ok=sum(r.get("status") == "ok" for r in records), missing=len(missing))
        reports = work / "reports" / cfg.experiment
        ids = [r["trial_id"] for r in records]
        gaps = not_ok(encoders, records, missing, results)
        unrun = [m for m in gaps if m["method"] == "pretrain"] + missing
        summary = {}
        if (cfg.x != "none" or cfg.table) and records:
            with events.stage("analysis") as f:
                summary = analyse(cfg, results, reports, ids, unrun)
                f["files"] = summary.get("paths", [])
        wall = time.perf_counter() - t0
        line = {"experiment": cfg.experiment, "wall_s": round(wall, 1), "planned": len(records) + len(missing),
                "trials": len(records), "ok": sum(r.get("status") == "ok" for r in records), "not_ok": len(gaps),
                "results": str(results), "reports": str(reports)}
        run_figures.update(line)
    for g in gaps:
        _say(f"NOT OK {g['trial_id']}: {g['reason']} (log: {g['log']})")
    if gaps:
        _say(f"INCOMPLETE: {len(gaps)} planned run(s) or trial(s) have no ok result (listed above; the report "
             "marks them). Rerunning the same command retries the missing ones and unfinished pretraining; a "
             "failed or diverged trial record is a result and stands until its file is removed")
    _say("done: " + json.dumps(line))
    return {**line, "gaps": gaps, "analysis": summary}
