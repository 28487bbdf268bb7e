"""Result records: one JSON file per trial, `results/<experiment>/<trial-id>.json`, never overwritten.

The format is the one `analysis/records.py` validates (read its rules): experiment, trial_id (= the
file stem), status ok | diverged | failed, reason (required unless ok), config (the full trial spec),
config_hash, method, encoder {name, preset, params_dense, max_len, input_mode, loss, pretrain} or null
(`pretrain`: the run's next-item eval metrics {HR@10, NDCG@10, loss}, or null without a summary), adapter,
strategy (null for methods without alignment), seed, scores {official, likelihood} (questions/score.py
dicts; empty unless ok), prompt_tokens, timings, versions, git_rev, created (ISO time).

The trial id is `<method>-<config_hash>`: a rerun of the same trial maps to the same file, so an existing
record means "done" and `write_new_json` makes a duplicate impossible.
"""
from __future__ import annotations

import json
import platform
import re
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from uqa_ray.io import InputError, write_new_json

STATUSES = ("ok", "diverged", "failed")
# The pretraining run's eval metrics a record carries (pretrain/loop.py `eval/<key>`): the second panel
# of the scaling plot (analysis/plots.py) draws them against the same x.
PRETRAIN_METRICS = ("HR@10", "NDCG@10", "loss")
PREDICTIONS_DIR = "predictions"  # per-question correctness, for paired tests (beside the records)


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def check_experiment(name: str) -> str:
    """An experiment name is one plain folder name. Trial ids are config hashes, which do not include
    the experiment, so two experiments may run the same trial: only their own folders keep their
    records apart. "" or "." would write into the results root, "a/../b" or "a/predictions" into
    another experiment's folder, where the first record would silently stand for both."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name in (".", ".."):
        raise ValueError(f"experiment name {name!r} must be a plain folder name ([A-Za-z0-9_.-], not starting "
                         "with '.' or '-'), as records live in <results>/<experiment>/")
    return name


def trial_id(method: str, config_hash: str) -> str:
    return f"{method}-{config_hash}"


def record_path(results_dir: str | Path, experiment: str, tid: str) -> Path:
    return Path(results_dir) / check_experiment(experiment) / f"{tid}.json"


def read_record(path: str | Path) -> dict[str, Any] | None:
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: unreadable result record ({e}); move it away to rerun the trial") from e


def git_rev() -> str | None:
    """The repository's HEAD commit (None outside a git checkout)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("uqa-ray", "torch", "transformers", "peft", "ray", "deepspeed", "pyarrow", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def encoder_block(encoder_dir: str | Path, preset: str = "", loss: str = "") -> dict[str, Any]:
    """The record's `encoder` block. name / max_len / input_mode come from the export's config.json;
    preset and loss from the pretraining run's summary.json beside the export (`<run>/encoder` ->
    `<run>/summary.json`) unless given; params_dense is counted as the paper counts it (backbone only)."""
    from uqa_ray.config import build
    from uqa_ray.encoders import count_params
    from uqa_ray.encoders.config import EncoderConfig
    from uqa_ray.encoders.export import CONFIG_FILE

    encoder_dir = Path(encoder_dir)
    try:
        cfg = build(EncoderConfig, json.loads((encoder_dir / CONFIG_FILE).read_text())["encoder"])
    except (OSError, KeyError, json.JSONDecodeError, ValueError) as e:
        raise InputError(f"{encoder_dir / CONFIG_FILE}: not an encoder export ({e})") from e
    summary = encoder_dir.parent / "summary.json"
    done = json.loads(summary.read_text()) if summary.is_file() else {}
    run = done.get("config", {})
    preset = preset or run.get("preset", "")
    loss = loss or run.get("loss", {}).get("kind", "")
    metrics = done.get("metrics", {})
    pretrain = {k: float(metrics[f"eval/{k}"]) for k in PRETRAIN_METRICS if f"eval/{k}" in metrics} or None
    if not preset or not loss:
        raise InputError(f"{encoder_dir}: preset/loss unknown (no pretraining summary.json beside the export); "
                         "give them in the grid's encoder entry")
    return {"name": cfg.name, "preset": preset, "params_dense": int(count_params(cfg)["dense"]),
            "max_len": int(cfg.max_len), "input_mode": cfg.input_mode, "loss": loss, "pretrain": pretrain}


def record_method(method: str, encoder: dict | None) -> str:
    """The `method` a record carries (analysis/ groups table rows by it): an encoder trial is named by
    its encoder (trm_pp, hstu, ...), the random control `random_embedding`, the others as they are."""
    if method == "encoder" and encoder:
        return str(encoder["name"])
    return {"random": "random_embedding"}.get(method, method)


def make_record(*, experiment: str, tid: str, status: str, reason: str | None, config: dict, config_hash: str,
                method: str, encoder: dict | None, adapter: str | None, strategy: str | None, seed: int,
                scores: dict, prompt_tokens: float | None, timings: dict) -> dict[str, Any]:
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
    if status != "ok" and not reason:
        raise ValueError(f"status {status!r} needs a reason")
    return {
        "experiment": experiment, "trial_id": tid, "status": status, "reason": reason, "config": config,
        "config_hash": config_hash, "method": record_method(method, encoder), "encoder": encoder, "adapter": adapter,
        "strategy": strategy, "seed": int(seed), "scores": scores if status == "ok" else {},
        "prompt_tokens": prompt_tokens, "timings": timings, "versions": versions(), "git_rev": git_rev(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def write_record(results_dir: str | Path, record: dict[str, Any]) -> Path:
    """Write a new record; an existing one is never replaced (FileExistsError)."""
    return write_new_json(record_path(results_dir, record["experiment"], record["trial_id"]), record)


def write_predictions(results_dir: str | Path, experiment: str, tid: str, per_question: dict) -> Path:
    """Per-question predictions and correctness (row, subtask, both scorers) as Parquet, for paired tests."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from uqa_ray.io import atomic_path

    path = Path(results_dir) / check_experiment(experiment) / PREDICTIONS_DIR / f"{tid}.parquet"
    table = pa.table({k: list(v) if not hasattr(v, "tolist") else v.tolist() for k, v in per_question.items()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path
