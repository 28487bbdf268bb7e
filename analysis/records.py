"""Load a folder of result records (`results/<experiment>/<trial-id>.json`) into one flat DataFrame.

One row per record. Scores are flattened to columns named `<scorer>.<key>.<field>`, e.g.
`official.overall.acc`, `official.interest_perception.lo`, `likelihood.DF.n`, where key is `overall`,
a task group or a sub-task and field is acc / n / correct / lo / hi (lo, hi = the record's ci95).
Every field is validated; a bad record raises `InputError` naming the file and the field, because a
silently skipped or mis-read record would bias a scaling fit without anyone noticing.
"""
from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from uqa_ray.align.registry import ADAPTERS
from uqa_ray.io import InputError
from uqa_ray.vocab import INPUT_MODES, LOSS_KINDS, STRATEGIES
# The one definition of sub-tasks and groups (UQABench §5), shared with the scorer that wrote the records.
from uqa_ray.questions.spec import GROUP_OF as SUBTASK_GROUP  # noqa: F401 - re-exported
from uqa_ray.questions.spec import GROUPS, SUBTASKS

STATUSES = ("ok", "diverged", "failed")
SCORERS = ("official", "likelihood")
SCORE_KEYS = ("overall",) + GROUPS + SUBTASKS
FIELDS = ("acc", "n", "correct", "lo", "hi")
META_COLUMNS = (
    "file", "experiment", "trial_id", "status", "reason", "method", "encoder", "preset", "params_dense",
    "max_len", "input_mode", "loss", "adapter", "strategy", "seed", "config_hash", "prompt_tokens",
    "git_rev", "created",
) + tuple(f"pretrain.{k}" for k in ("HR@10", "NDCG@10", "loss"))  # the encoder's own eval metrics (or None)
# acc is stored x100 and must equal 100*correct/n; the slack allows for rounding in the writer.
ACC_TOLERANCE = 0.01


def col(scorer: str, key: str, field: str = "acc") -> str:
    """Column name of one flattened score field."""
    return f"{scorer}.{key}.{field}"


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class _Checker:
    """Field checks that name the file and the dotted field in every error."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, key: str, msg: str) -> None:
        raise InputError(f"{self.path}: field '{key}': {msg}")

    def get(self, obj: dict, key: str, prefix: str = "", *, optional: bool = False) -> Any:
        if key not in obj:
            if optional:
                return None
            self.fail(prefix + key, "missing")
        return obj[key]

    def string(self, obj: dict, key: str, prefix: str = "", *, nullable: bool = False,
               choices: tuple[str, ...] | None = None) -> str | None:
        v = self.get(obj, key, prefix)
        if v is None and nullable:
            return None
        if not isinstance(v, str) or not v:
            self.fail(prefix + key, f"expected a non-empty string{' or null' if nullable else ''}, got {v!r}")
        if choices is not None and v not in choices:
            self.fail(prefix + key, f"{v!r} is not one of {choices}")
        return v

    def integer(self, obj: dict, key: str, prefix: str = "", *, minimum: int = 0) -> int:
        v = self.get(obj, key, prefix)
        if not _is_int(v) or v < minimum:
            self.fail(prefix + key, f"expected an integer >= {minimum}, got {v!r}")
        return v

    def mapping(self, obj: dict, key: str, prefix: str = "", *, nullable: bool = False) -> dict | None:
        v = self.get(obj, key, prefix)
        if v is None and nullable:
            return None
        if not isinstance(v, dict):
            self.fail(prefix + key, f"expected an object{' or null' if nullable else ''}, got {type(v).__name__}")
        return v

    def score(self, s: Any, key: str) -> dict[str, float]:
        """One {acc, n, correct, ci95} block -> flat fields; acc must match correct/n."""
        if not isinstance(s, dict):
            self.fail(key, f"expected an object, got {type(s).__name__}")
        acc = self.get(s, "acc", key + ".")
        if not _is_num(acc) or not 0.0 <= acc <= 100.0:
            self.fail(key + ".acc", f"expected a number in [0, 100] (accuracy x100), got {acc!r}")
        n = self.integer(s, "n", key + ".")
        correct = self.integer(s, "correct", key + ".")
        if correct > n:
            self.fail(key + ".correct", f"{correct} correct out of n={n}")
        if n > 0 and abs(100.0 * correct / n - acc) > ACC_TOLERANCE:
            self.fail(key + ".acc", f"{acc} != 100*correct/n = {100.0 * correct / n:.4f} "
                                    "(is accuracy stored as a fraction instead of x100?)")
        ci = self.get(s, "ci95", key + ".")
        if not (isinstance(ci, (list, tuple)) and len(ci) == 2 and all(_is_num(c) for c in ci)
                and ci[0] <= acc + ACC_TOLERANCE and acc - ACC_TOLERANCE <= ci[1]):
            self.fail(key + ".ci95", f"expected [lo, hi] around acc={acc}, got {ci!r}")
        return {"acc": float(acc), "n": n, "correct": correct, "lo": float(ci[0]), "hi": float(ci[1])}


def _scores(c: _Checker, scores: dict, status: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    unknown = sorted(set(scores) - set(SCORERS))
    if unknown:
        c.fail("scores", f"unknown scorer(s) {unknown}; expected some of {SCORERS}")
    if status == "ok" and not scores:
        c.fail("scores", "a record with status 'ok' needs at least one of " + ", ".join(SCORERS))
    for scorer, block in scores.items():
        p = f"scores.{scorer}"
        if not isinstance(block, dict):
            c.fail(p, f"expected an object, got {type(block).__name__}")
        parts = {"overall": c.get(block, "overall", p + ".")}
        for section, allowed in (("groups", GROUPS), ("subtasks", SUBTASKS)):
            sec = c.get(block, section, p + ".", optional=True) or {}
            if not isinstance(sec, dict):
                c.fail(f"{p}.{section}", f"expected an object, got {type(sec).__name__}")
            bad = sorted(set(sec) - set(allowed))
            if bad:
                c.fail(f"{p}.{section}", f"unknown key(s) {bad}; expected some of {allowed}")
            parts.update({k: v for k, v in sec.items()})
        for key, s in parts.items():
            sect = "" if key == "overall" else ("groups." if key in GROUPS else "subtasks.")
            for field, v in c.score(s, f"{p}.{sect}{key}").items():
                out[col(scorer, key, field)] = v
    return out


def parse_record(path: str | Path) -> dict[str, Any]:
    """Validate one record file and return its flat row."""
    path = Path(path)
    c = _Checker(path)
    try:
        rec = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: not a readable JSON record: {e}") from e
    if not isinstance(rec, dict):
        raise InputError(f"{path}: top level must be a JSON object, got {type(rec).__name__}")
    row: dict[str, Any] = {"file": str(path)}
    row["experiment"] = c.string(rec, "experiment")
    row["trial_id"] = c.string(rec, "trial_id")
    if row["trial_id"] != path.stem:
        c.fail("trial_id", f"{row['trial_id']!r} does not match the file name {path.name!r}")
    row["status"] = c.string(rec, "status", choices=STATUSES)
    row["reason"] = c.string(rec, "reason", nullable=True)
    if row["status"] != "ok" and not row["reason"]:
        c.fail("reason", f"status {row['status']!r} needs a reason")
    c.mapping(rec, "config")
    row["config_hash"] = c.string(rec, "config_hash")
    row["method"] = c.string(rec, "method")
    enc = c.mapping(rec, "encoder", nullable=True)
    if enc is not None:
        row["encoder"] = c.string(enc, "name", "encoder.")
        row["preset"] = c.string(enc, "preset", "encoder.")
        row["params_dense"] = c.integer(enc, "params_dense", "encoder.", minimum=1)
        row["max_len"] = c.integer(enc, "max_len", "encoder.", minimum=1)
        row["input_mode"] = c.string(enc, "input_mode", "encoder.", choices=tuple(INPUT_MODES))
        row["loss"] = c.string(enc, "loss", "encoder.", choices=tuple(LOSS_KINDS))
        pre = c.mapping(enc, "pretrain", "encoder.", nullable=True) if "pretrain" in enc else None
        for k, v in (pre or {}).items():
            if not _is_num(v):
                c.fail(f"encoder.pretrain.{k}", f"expected a finite number, got {v!r}")
            row[f"pretrain.{k}"] = float(v)
    row["adapter"] = c.string(rec, "adapter", nullable=True, choices=tuple(ADAPTERS))
    row["strategy"] = c.string(rec, "strategy", nullable=True, choices=tuple(STRATEGIES))
    row["seed"] = c.integer(rec, "seed")
    row.update(_scores(c, c.mapping(rec, "scores"), row["status"]))
    pt = c.get(rec, "prompt_tokens", optional=row["status"] != "ok")
    if pt is not None and (not _is_num(pt) or pt < 0):
        c.fail("prompt_tokens", f"expected a number >= 0, got {pt!r}")
    row["prompt_tokens"] = None if pt is None else float(pt)
    c.mapping(rec, "timings")
    c.mapping(rec, "versions")
    row["git_rev"] = c.string(rec, "git_rev", nullable=True)
    created = c.string(rec, "created")
    try:
        datetime.fromisoformat(created)
    except ValueError:
        c.fail("created", f"{created!r} is not an ISO time")
    row["created"] = created
    return row


def load_records(folder: str | Path, trial_ids: Iterable[str] | None = None) -> pd.DataFrame:
    """All `*.json` records of a folder (hidden/temporary files skipped) as one DataFrame; with
    `trial_ids`, only those (an experiment run on one config reports its own trials, not those that an
    earlier config of the same experiment left in the folder)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"results folder {folder} does not exist")
    files = sorted(p for p in folder.glob("*.json") if not p.name.startswith("."))
    if trial_ids is not None:
        wanted = set(trial_ids)
        missing = sorted(wanted - {p.stem for p in files})
        if missing:
            raise InputError(f"results folder {folder} has no record for trial(s) {missing[:5]}")
        files = [p for p in files if p.stem in wanted]
    if not files:
        raise InputError(f"results folder {folder} holds no *.json result records")
    # trial_id must equal the file stem, so ids are unique within a folder.
    df = pd.DataFrame([parse_record(p) for p in files])
    for name in META_COLUMNS:
        if name not in df:
            df[name] = None
    return df


def excluded_summary(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Records that are not `ok` (listed in outputs, never fitted)."""
    bad = df[df["status"] != "ok"]
    return [{"trial_id": r.trial_id, "status": r.status, "reason": r.reason} for r in bad.itertuples()]
