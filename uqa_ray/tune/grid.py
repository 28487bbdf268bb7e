"""A grid of alignment/evaluation trials as one Ray Tune experiment, restorable, one record per trial.

    records, missing = run_grid("table4", GridSpec(encoders=(EncoderRef("runs/pretrain/<run>/encoder"),),
                                          adapters=("mean_pool", "qformer"), strategies=("adapter", "full")),
                       data_dir="data", results_dir="results", storage="runs/tune")

`expand` turns a GridSpec into trial specs (trial.py): method "encoder" for every
(encoder x adapter x strategy x lr x seed), then the seed-independent methods (no_embedding, oracle,
text20, text50) once each, then one "random" control per such combination (its alignment is the cached
one of the matching encoder trial, so it only evaluates). `answer_format`,
`placement` and the eval batch size come from the alignment preset for EVERY method, so all rows of a
table answer the same prompts.

Restore (`run_grid`): an interrupted experiment resumes under Ray Tune's own restore, trials it will
never run go to a follow-up experiment, and a trial whose record exists returns it without running, so
no path re-runs or duplicates a finished trial, and every record written before an interruption is kept.

`llm="tiny"` is the embedded default: taught once per machine (align/instruct.py) or taken from the copy
the package ships, cached in the user cache (align/lm_cache.py) and copied beside the trials, before any
trial starts.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import shutil
from pathlib import Path
from typing import Any, Literal

from ray.tune import Stopper

from uqa_ray.align.config import PRESETS as ALIGN_PRESETS
from uqa_ray.align.config import align_config
from uqa_ray.align.instruct import InstructConfig, instruct_tiny_llm
from uqa_ray.align.llm import TINY_INFO_FILE
from uqa_ray.align.lm_cache import cache_dir, check_taught_for
from uqa_ray.config import ConfigError, content_hash, to_dict
from uqa_ray.data.schema import TRUTH_FILE
from uqa_ray.evaluate.run import METHODS, method_spec
from uqa_ray.io import atomic_path
from uqa_ray.tune.console import TrialLines
from uqa_ray.tune.records import read_record, record_path
from uqa_ray.tune.trial import identity, spec_id

SEED_FREE = ("no_embedding", "oracle", "text20", "text50")
AXES = {"adapter": "adapters", "strategy": "strategies", "lr": "lrs", "seed": "seeds"}  # AlignConfig field: axis


@dataclasses.dataclass(frozen=True)
class EncoderRef:
    dir: str  # an encoder export (pretraining's <run>/encoder)
    preset: str = ""  # "" = from the pretraining run's summary.json
    loss: str = ""


@dataclasses.dataclass(frozen=True)
class GridSpec:
    encoders: tuple[EncoderRef, ...] = ()
    adapters: tuple[str, ...] = ()  # () = the align preset's adapter (official: mean_pool, embedded: mlp)
    strategies: tuple[str, ...] = ("adapter",)
    lrs: tuple[float, ...] = ()  # () = the preset's lr
    seeds: tuple[int, ...] = (0,)
    methods: tuple[str, ...] = ("encoder", "random", "no_embedding", "oracle", "text20", "text50")
    # the random-embedding control for each encoder, or only for the last one listed (the largest of a
    # size ladder: one control line, at a fraction of the trials)
    random_of: Literal["each", "last"] = "each"
    align_preset: str = "official"
    align: dict[str, Any] = dataclasses.field(default_factory=dict)  # AlignConfig overrides (not the axes)
    llm: str = "tiny"  # an LLM folder or hub name; "tiny" = the embedded default (built + taught, cached)
    instruct: InstructConfig = InstructConfig()
    n_boot: int = 1000
    max_questions: int = 0  # 0 = every eval question (smoke runs cap it)
    # A cap for the Text-k baselines alone (0 = max_questions): a Text-20 prompt is ~10x a question's
    # tokens, so a reference line on an even sample of the questions costs what one method does.
    text_max_questions: int = 0
    resources: dict[str, float] = dataclasses.field(default_factory=lambda: {"CPU": 1.0})  # per trial
    max_concurrent: int = 0  # 0 = as many as the resources allow
    # Tune FailureConfig: a trial whose process dies (a preempted node, an OOM kill) is run again, up to this
    # many times; it reuses its finished alignment (trial.ensure_aligned). 0 = an ERROR trial stays missing.
    max_failures: int = 2

    def __post_init__(self) -> None:
        # One home per setting: what the grid sweeps is set by its axis, never also in `align` (where the
        # axis would silently win).
        swept = {k: f"grid.{axis}" for k, axis in AXES.items() if k in self.align}
        if swept:
            raise ValueError("align: " + ", ".join(f"{k} is set by {a}" for k, a in swept.items())
                             + " (a list of one value fixes it)")
        bad = sorted(set(self.methods) - set(METHODS))
        if bad:
            raise ValueError(f"methods: unknown {bad}; known {sorted(METHODS)}")
        if self.align_preset not in ALIGN_PRESETS:
            raise ValueError(f"align_preset: unknown {self.align_preset!r}; known {sorted(ALIGN_PRESETS)}")
        if not self.strategies or not self.seeds:
            raise ValueError("strategies and seeds must be non-empty")
        if min(self.max_concurrent, self.max_questions, self.text_max_questions, self.max_failures) < 0 \
                or self.n_boot < 1:
            raise ValueError("need max_concurrent, max_questions, text_max_questions, max_failures >= 0 and "
                             "n_boot >= 1")
        for a, s, lr in itertools.product(self.adapters or (None,), self.strategies, self.lrs or (None,)):
            align_config(self.align_preset, self.align, _over(a, s, lr))


def _over(adapter: str | None, strategy: str, lr: float | None) -> dict[str, Any]:
    """AlignConfig overrides of one grid point (None: keep the preset's adapter / lr)."""
    return {"strategy": strategy, **({"adapter": adapter} if adapter else {}), **({"lr": lr} if lr else {})}


def expand(spec: GridSpec, data_dir: str | Path, llm_dir: str, experiment: str, results_dir: str | Path,
           cache_dir: str | Path) -> list[dict[str, Any]]:
    """The trial specs of a grid, in run order (module doc)."""
    data_dir, results_dir, cache_dir = (str(Path(p).resolve()) for p in (data_dir, results_dir, cache_dir))
    base = {"experiment": experiment, "results_dir": results_dir, "cache_dir": cache_dir, "data_dir": data_dir,
            "llm_dir": llm_dir, "eval": {"n_boot": spec.n_boot, "max_questions": spec.max_questions}}
    aligned = []
    for enc, a, s, lr, seed in itertools.product(spec.encoders, spec.adapters or (None,), spec.strategies,
                                                 spec.lrs or (None,), spec.seeds):
        over = {**_over(a, s, lr), "seed": seed}
        cfg = to_dict(align_config(spec.align_preset, spec.align, over))
        enc_d = {"dir": str(Path(enc.dir).resolve()), "preset": enc.preset, "loss": enc.loss}
        aligned.append({**base, "encoder": enc_d, "align": cfg, "seed": seed})
    trials = [{**t, "method": "encoder"} for t in aligned] if "encoder" in spec.methods else []
    plain = to_dict(align_config(spec.align_preset, spec.align))
    for m in SEED_FREE:
        if m not in spec.methods:
            continue
        if m == "oracle" and not (Path(data_dir) / TRUTH_FILE).is_file():
            print(f"[tune] {data_dir} has no {TRUTH_FILE}: the oracle control is skipped (synthetic data only)")
            continue
        cap = spec.text_max_questions if method_spec(m).history and spec.text_max_questions else spec.max_questions
        trials.append({**base, "method": m, "encoder": None, "align": plain, "seed": 0,
                       "eval": {**base["eval"], "max_questions": cap}})
    # The random controls last: each reuses its encoder trial's alignment, so run before it is trained
    # it would hold a CPU waiting on the lock (trial.ensure_aligned).
    if "random" in spec.methods:
        last = str(Path(spec.encoders[-1].dir).resolve())
        trials += [{**t, "method": "random"} for t in aligned
                   if spec.random_of == "each" or t["encoder"]["dir"] == last]
    return trials


class StopAfter(Stopper):
    """A Tune stopper: end the experiment (not just a trial) once `n` trials have reported a record in
    this run. Unstarted trials stay pending, so `run_grid` again restores and runs them."""

    def __init__(self, n: int):
        self.n, self.done = n, set()

    def __call__(self, trial_id: str, result: dict) -> bool:
        if result.get("record"):
            self.done.add(trial_id)
        return False

    def stop_all(self) -> bool:
        return len(self.done) >= self.n


def resolve_llm(spec: GridSpec, data_dir: str | Path, storage: str | Path) -> str:
    """The LLM folder or hub id the trials load. `tiny`: the tiny default taught for this data, found in
    the user cache (`lm_cache.cache_dir()`, shared by every workdir), the package's shipped copy, or taught
    there once; the trials read a copy under `<storage>/llm/` (a few MB), since on a cluster the driver's
    user cache is not on the nodes' shared storage. A local taught folder is checked against the data
    (another catalog, tokenizer or train-user set is refused)."""
    if spec.llm == "tiny":
        taught = instruct_tiny_llm(data_dir, cache_dir() / "llm", spec.instruct)
        warn_if_untaught(taught)
        folder = Path(storage) / "llm" / taught.name
        if not (folder / TINY_INFO_FILE).is_file():
            with atomic_path(folder) as tmp:
                shutil.copytree(taught, tmp)
        return str(folder.resolve())
    folder = Path(spec.llm)
    if not folder.exists():
        return spec.llm  # a hub id
    if (folder / TINY_INFO_FILE).is_file():
        check_taught_for(json.loads((folder / TINY_INFO_FILE).read_text()), folder, data_dir)
    return str(folder.resolve())


def warn_if_untaught(folder: Path, margin: float = 10.0) -> None:
    """Say so when the tiny LM was taught too little to read a history: every trial's accuracy would then
    sit at chance whatever the encoder, and the numbers would measure the pipeline, not personalization."""
    taught = json.loads((folder / TINY_INFO_FILE).read_text()).get("taught", {})
    chance = taught.get("chance", 25.0)
    acc = taught.get("stretch", taught).get("holdout_likelihood_accuracy", {})  # the last phase's
    reading = [v for k, v in acc.items() if k != "no_history"]
    if reading and max(reading) < chance + margin:
        print(f"[tune] WARNING: the tiny LM ({folder.name}, {taught.get('steps')} instruct steps) reads a text "
              f"history at {max(reading):.0f}% on held-out questions, chance {chance:.0f}%: the accuracies "
              f"below will sit near chance for every method. Teaching it to read takes ~1,500 steps "
              f"(grid.instruct.steps=1500, once per machine: the user cache; how long it takes: "
              f"docs/taught_lm.md), and long histories a stretch phase (grid.instruct.stretch.steps=300).", flush=True)


def run_grid(experiment: str, spec: GridSpec, data_dir: str | Path, results_dir: str | Path = "results",
             storage: str | Path = "runs/tune",
             stop_after: int = 0) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Run (or restore) the grid: (the records of its trials that exist, in trial order; the planned trials
    that have none, each {trial_id, method, config, reason, log}). `stop_after` > 0 ends this invocation
    after that many trials finished (a budget; rerun to go on: the rest are listed as not run).

    Restore: the Tune experiment lives at `<storage>/<experiment>-<hash of the full trial list>`. If it
    exists, `Tuner.restore` resumes it (finished trials are not re-run, interrupted ones restart). Trials
    that the restored experiment will never run - a stopped experiment (StopAfter, Tune's stop_all) marks
    its unstarted trials TERMINATED; errored trials (out of retries) are left as they are - then run as a
    follow-up experiment named after exactly that set and `max_failures` (itself restorable). Without a
    previous experiment a new Tuner runs only the trials that have no record yet (records are keyed by
    config hash), and a trial whose record exists returns it without running (trial.py)."""
    from ray import tune

    from uqa_ray.raysetup import init_ray, verbose
    from uqa_ray.tune.trial import tune_trainable

    if {"encoder", "random"} & set(spec.methods) and not spec.encoders:  # before the LLM is found or taught
        raise ConfigError("methods 'encoder'/'random' need at least one entry in encoders")
    storage = Path(storage).resolve()
    llm_dir = resolve_llm(spec, data_dir, storage)
    trials = expand(spec, data_dir, llm_dir, experiment, results_dir, storage)
    ids = [spec_id(t) for t in trials]
    paths = [record_path(t["results_dir"], experiment, i) for t, i in zip(trials, ids)]
    name = f"{experiment}-{content_hash(ids)}"
    init_ray()
    threads = max(1, int(spec.resources.get("CPU", 1)))
    trainable = tune.with_resources(tune_trainable, {k.lower(): v for k, v in spec.resources.items()})
    errors: dict[str, tuple[str, str]] = {}  # trial id -> (Tune's error, the trial's folder)

    def fit(tuner: tune.Tuner) -> None:
        for res in tuner.fit():
            if res.error is not None and "trial" in (res.config or {}):
                tid = spec_id(res.config["trial"])
                first = (str(res.error).strip().splitlines() or [""])[0][:300]  # the rest: error.txt in the log folder
                errors[tid] = (f"{type(res.error).__name__}: {first}", str(res.path))

    def fresh(tune_name: str, todo: list[dict]) -> tune.Tuner:
        return tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search(todo), "threads": threads},
            # max_concurrent_trials wraps the grid in a ConcurrencyLimiter, which creates trials one by
            # one: trials not yet created when the experiment stops are not in its state and a restore
            # cannot see them (the fallback below runs them). Without it every trial is created up front.
            tune_config=tune.TuneConfig(max_concurrent_trials=spec.max_concurrent or None, reuse_actors=True),
            run_config=tune.RunConfig(name=tune_name, storage_path=str(storage), verbose=int(verbose()),
                                      callbacks=[TrialLines(len(todo))],
                                      stop=StopAfter(stop_after) if stop_after else None,
                                      failure_config=tune.FailureConfig(max_failures=spec.max_failures)),
        )

    if tune.Tuner.can_restore(storage / name):
        print(f"[tune] restoring {storage / name}", flush=True)
        # Errored trials are not restarted in the restored experiment, which keeps the failure config it was
        # created with: with the trials it never created (see `fresh`), they run as a follow-up experiment
        # named after exactly that set and this invocation's retries, so an interruption there restores too.
        fit(tune.Tuner.restore(str(storage / name), trainable, resume_unfinished=True))
        todo = [t for t, p in zip(trials, paths) if not p.is_file()]
        if todo:
            todo_ids = [spec_id(t) for t in todo]
            rest = f"{name}-rest-{content_hash(todo_ids, spec.max_failures)}"
            if tune.Tuner.can_restore(storage / rest):
                fit(tune.Tuner.restore(str(storage / rest), trainable, resume_unfinished=True, restart_errored=True))
            else:
                fit(fresh(rest, todo))
    else:
        todo = [t for t, p in zip(trials, paths) if not p.is_file()]
        if todo:
            fit(fresh(name, todo))
    records, missing = [], []
    for t, tid, p in zip(trials, ids, paths):
        rec = read_record(p)
        if rec is not None:
            records.append(rec)
            continue
        reason, log = errors.get(tid, (f"not run in this invocation (stop_after={stop_after})" if stop_after else
                                       "no record and no error from Tune", str(storage / name)))
        if tid in errors:
            reason = f"{reason} (after {spec.max_failures} retries)"
        missing.append({"trial_id": tid, "method": t["method"], "config": identity(t), "reason": reason, "log": log})
    return records, missing
