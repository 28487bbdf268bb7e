"""One trial: (align if the method needs it) -> evaluate -> one result record. Runs inside Ray Tune.

A trial spec is a plain JSON-able dict (grid.py builds them):
  experiment, results_dir, cache_dir   where the record and the cached alignments go
  method                               evaluate/run.py METHODS
  data_dir, llm_dir                    prepared data with questions; the (taught) LLM
  encoder {dir, preset, loss} | None   the encoder export (aligned methods)
  align                                AlignConfig fields; answer_format / placement apply to every method
  seed, eval {n_boot, max_questions}
Its identity (what changes the numbers; not threads, batch sizes or paths of outputs) is hashed into
the config hash, and the trial id is `<method>-<hash>`. So a trial whose record exists is done: it
returns that record without running (a restored or repeated experiment never re-runs or duplicates a
finished trial). Alignments are cached under `<cache_dir>/aligned/<hash of the alignment>` and shared by
every method that needs the same one (`encoder` and its `random` control): one trains it while the
others wait on a file lock, then reuse it.

Failures are results too: a NaN/inf loss gives status "diverged" with the step; any other exception gives
status "failed" with the error as reason (and the traceback on stderr). Either way a record is written.
"""
from __future__ import annotations

import fcntl
import json
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from uqa_ray.config import build, content_hash
from uqa_ray.tune.records import (encoder_block, make_record, read_record, record_path, trial_id, write_predictions,
                                  write_record)

# AlignConfig fields that change speed or logging only, never the trained weights (`scaling`: N ranks compute
# the one-process step, tests/align/test_distributed.py).
_NOT_IDENTITY = ("threads", "log_every", "eval_batch_size", "eval_batch_tokens", "scaling")


def identity(spec: dict[str, Any]) -> dict[str, Any]:
    """The part of a trial spec that determines its result."""
    from uqa_ray.evaluate.run import method_spec

    m = method_spec(spec["method"])
    align = spec["align"]
    ident: dict[str, Any] = {"method": spec["method"], "data_dir": spec["data_dir"], "llm_dir": spec["llm_dir"],
                             "answer_format": align["answer_format"], "eval": spec["eval"]}
    if m.aligned:
        ident.update(encoder=spec["encoder"], seed=spec["seed"],
                     align={k: v for k, v in align.items() if k not in _NOT_IDENTITY})
    if m.soft is not None:
        ident["placement"] = align["placement"]
    return ident


def config_hash(spec: dict[str, Any]) -> str:
    return content_hash(identity(spec))


def spec_id(spec: dict[str, Any]) -> str:
    """The trial id (and record name) of a trial spec."""
    return trial_id(spec["method"], config_hash(spec))


def ensure_aligned(spec: dict[str, Any], report: Callable[[dict], None] | None = None) -> tuple[Path, dict]:
    """The cached alignment of this spec (trained now if absent): (folder, train summary)."""
    from uqa_ray.align.config import AlignConfig
    from uqa_ray.align.steps import SUMMARY_FILE
    from uqa_ray.align.train import train_alignment

    align = spec["align"]
    key = {"align": {k: v for k, v in align.items() if k not in _NOT_IDENTITY}, "encoder": spec["encoder"]["dir"],
           "llm": spec["llm_dir"], "data": spec["data_dir"]}
    out = Path(spec["cache_dir"]) / "aligned" / content_hash(key)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Tune starts `encoder` and its `random` control at once; without the lock both trained the same
    # alignment. The second now waits and reuses it. flock is released by the
    # kernel when its holder dies, so a killed trial never leaves the others waiting.
    with open(out.parent / f".{out.name}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
        except OSError:  # storage without locks (some FUSE mounts): both may train, the same seed giving the
            # same weights; atomic_path swaps the second folder in whole
            pass
        if (out / SUMMARY_FILE).is_file():
            return out, json.loads((out / SUMMARY_FILE).read_text())
        cfg = build(AlignConfig, align)
        return out, train_alignment(cfg, spec["data_dir"], spec["encoder"]["dir"], spec["llm_dir"], out, report)


def execute(spec: dict[str, Any], report: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Run one trial spec to its record (or return the existing record). Plain Python, no Tune needed."""
    from uqa_ray.evaluate.run import evaluate, method_spec

    h = config_hash(spec)
    tid = trial_id(spec["method"], h)
    done = read_record(record_path(spec["results_dir"], spec["experiment"], tid))
    if done is not None:
        return done
    m = method_spec(spec["method"])
    align, t0 = spec["align"], time.perf_counter()
    status, reason, result, timings = "ok", None, None, {}
    encoder = adapter = strategy = None
    try:
        if spec.get("encoder"):
            encoder = encoder_block(spec["encoder"]["dir"], spec["encoder"].get("preset", ""),
                                    spec["encoder"].get("loss", ""))
        aligned_dir = None
        if m.aligned:
            adapter, strategy = align["adapter"], align["strategy"]
            aligned_dir, summary = ensure_aligned(spec, report)
            timings["align_s"] = summary.get("train_s", 0.0)
            timings["align_steps"] = summary.get("steps", 0)
            if summary["status"] != "ok":
                status, reason = summary["status"], summary.get("reason") or "alignment did not finish"
        if status == "ok":
            result = evaluate(spec["method"], spec["data_dir"], spec["llm_dir"], answer_format=align["answer_format"],
                              placement=align["placement"], aligned_dir=aligned_dir,
                              encoder_dir=spec["encoder"]["dir"] if m.aligned else None,
                              batch_size=align["eval_batch_size"], max_batch_tokens=align["eval_batch_tokens"],
                              seed=spec["seed"],
                              n_boot=spec["eval"]["n_boot"], max_questions=spec["eval"]["max_questions"])
            timings.update(eval_s=result["timings"]["eval_s"], questions_per_s=result["timings"]["questions_per_s"])
    except Exception as e:  # noqa: BLE001 - a failed trial is a result, recorded with its reason
        traceback.print_exc()
        status, reason = "failed", f"{type(e).__name__}: {e}"[:2000]
    timings["total_s"] = time.perf_counter() - t0
    record = make_record(
        experiment=spec["experiment"], tid=tid, status=status, reason=reason, config=spec, config_hash=h,
        method=spec["method"], encoder=encoder if m.aligned else None, adapter=adapter, strategy=strategy,
        seed=spec["seed"], scores=result["scores"] if result else {},
        prompt_tokens=result["prompt_tokens"] if result else None, timings=timings)
    if result:
        write_predictions(spec["results_dir"], spec["experiment"], tid, result["per_question"])
    try:
        write_record(spec["results_dir"], record)
    except FileExistsError:  # the same trial finished elsewhere meanwhile: keep the first record
        record = read_record(record_path(spec["results_dir"], spec["experiment"], tid))
    return record


def tune_metrics(record: dict[str, Any]) -> dict[str, Any]:
    """Flat per-sub-task accuracies of a record, as a Tune result."""
    out: dict[str, Any] = {"record": record["trial_id"], "status": record["status"]}
    for scorer, block in record["scores"].items():
        out[f"{scorer}/overall"] = block["overall"]["acc"]
        for section in ("groups", "subtasks"):
            for key, s in block.get(section, {}).items():
                out[f"{scorer}/{key}"] = s["acc"]
    return out


def tune_trainable(config: dict[str, Any]) -> None:
    """The Ray Tune function trainable: config = {"trial": spec, "threads": n}."""
    import torch
    from ray import tune

    if config.get("threads"):
        torch.set_num_threads(int(config["threads"]))
    record = execute(config["trial"], report=lambda m: tune.report({"progress/" + k: v for k, v in m.items()}))
    tune.report(tune_metrics(record))
