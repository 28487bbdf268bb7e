"""The alignment/evaluation stage of an experiment: its encoder variants x the grid, as Ray Tune trials."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from uqa_ray.io import InputError
from uqa_ray.lab.config import LabConfig


def align_and_evaluate(cfg: LabConfig, data: Path, questions: Path, encoders: list[dict[str, Any]],
                       results: Path, work: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(records, planned trials without one): grid.run_grid over the encoders whose pretraining is ok."""
    from uqa_ray.tune.grid import EncoderRef, run_grid

    failed = [e for e in encoders if e["status"] != "ok"]
    if failed and len(failed) == len(encoders) and encoders:
        raise InputError(f"every pretraining run ended {[e['status'] for e in failed]}; nothing to align")
    refs = tuple(EncoderRef(e["encoder_dir"]) for e in encoders if e["status"] == "ok")
    spec = dataclasses.replace(cfg.grid, encoders=refs)
    # run_grid writes <results root>/<experiment>/<trial-id>.json
    return run_grid(cfg.experiment, spec, data_dir=str(questions), results_dir=str(results.parent),
                    storage=str(work / "tune"))
