"""The lab's event log: one JSON line per stage of a run in `<workdir>/events.jsonl`, for benchmarks and
scripts to read instead of the console.

Each line: {"run", "experiment", "stage", "start", "end" (UTC ISO), "wall_s", "figures", "error"}; `run`
tells the runs that share a workdir apart (lines are only ever appended), `figures` holds what the stage
reports about itself (its output folder; each pretraining run's status, wall and HR@10; trials ok and
missing; the report files), `error` is the exception of a stage that raised (its line is still written).
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from uqa_ray.io import append_jsonl

EVENTS_FILE = "events.jsonl"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class Events:
    def __init__(self, work: str | os.PathLike, experiment: str) -> None:
        self.path = Path(work) / EVENTS_FILE
        self.experiment = experiment
        self.run = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S.%fZ}-{os.getpid()}"

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[dict[str, Any]]:
        """Time the block as stage `name`; the dict it yields is the stage's figures, filled in by the block."""
        figures: dict[str, Any] = {}
        start, t0, error = _now(), time.perf_counter(), None
        try:
            yield figures
        except BaseException as e:
            error = f"{type(e).__name__}: {e}"
            raise
        finally:
            append_jsonl(self.path, {"run": self.run, "experiment": self.experiment, "stage": name, "start": start,
                                     "end": _now(), "wall_s": round(time.perf_counter() - t0, 3),
                                     "figures": figures, "error": error})


def read_events(work: str | os.PathLike, run: str | None = None) -> list[dict[str, Any]]:
    """The event lines of `<work>/events.jsonl`: those of `run`, or of the last run in the file."""
    path = Path(work) / EVENTS_FILE
    lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []
    if lines and run is None:
        run = lines[-1]["run"]
    return [e for e in lines if e["run"] == run]
