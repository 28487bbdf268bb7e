"""Hand-made result records in the format the alignment/evaluation stage writes (see analysis/records.py).

Sub-task counts are chosen first; groups and overall are the pooled (micro) counts, as the official
scorer computes them, and ci95 is a Wilson interval, so every record is internally consistent.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from analysis.records import GROUPS, SUBTASK_GROUP


def _wilson(correct: int, n: int) -> list[float]:
    if n == 0:
        return [0.0, 100.0]
    p, z = correct / n, 1.96
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [100 * max(0.0, centre - half), 100 * min(1.0, centre + half)]


def _block(correct: int, n: int) -> dict[str, Any]:
    return {"acc": 100.0 * correct / n if n else 0.0, "n": n, "correct": correct, "ci95": _wilson(correct, n)}


def score_block(sub_acc: dict[str, float], n_per_subtask: int) -> dict[str, Any]:
    """Scores from per-sub-task accuracies (x100): counts first, then pooled groups and overall."""
    counts = {t: (int(round(sub_acc[t] / 100 * n_per_subtask)), n_per_subtask) for t in sub_acc}
    groups = {}
    for g in GROUPS:
        members = [counts[t] for t in counts if SUBTASK_GROUP[t] == g]
        groups[g] = _block(sum(c for c, _ in members), sum(n for _, n in members))
    overall = _block(sum(c for c, _ in counts.values()), sum(n for _, n in counts.values()))
    return {"overall": overall, "groups": groups, "subtasks": {t: _block(*cn) for t, cn in counts.items()}}


def make_record(trial_id: str, *, acc: float | dict[str, float] = 50.0, method: str = "trm_pp",
                params: int | None = 25_000_000, max_len: int = 512, preset: str = "25M", seed: int = 0,
                status: str = "ok", reason: str | None = None, n: int = 1000, loss: str = "ce",
                input_mode: str = "full", adapter: str | None = "mean_pool", strategy: str | None = "adapter",
                prompt_tokens: float = 130.0, experiment: str = "exp",
                pretrain: dict[str, float] | None = None) -> dict[str, Any]:
    """One record; `acc` is one value for every sub-task or a {sub-task: acc} mapping; `pretrain` the
    encoder's own eval metrics (HR@10 as a fraction, as pretraining reports it)."""
    sub = acc if isinstance(acc, dict) else {t: acc for t in SUBTASK_GROUP}
    encoder = None if params is None else {
        "name": method, "preset": preset, "params_dense": params, "max_len": max_len,
        "input_mode": input_mode, "loss": loss, "pretrain": pretrain}
    return {
        "experiment": experiment, "trial_id": trial_id, "status": status, "reason": reason,
        "config": {"seed": seed}, "config_hash": "abc123", "method": method, "encoder": encoder,
        "adapter": adapter, "strategy": strategy, "seed": seed,
        "scores": {} if status != "ok" else {"official": score_block(sub, n)},
        "prompt_tokens": prompt_tokens, "timings": {"align": 1.0}, "versions": {"ray": "2.60.0"},
        "git_rev": "deadbeef", "created": "2026-01-01T00:00:00+00:00",
    }


def write_records(folder: Path, records: list[dict[str, Any]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for r in records:
        (folder / f"{r['trial_id']}.json").write_text(json.dumps(r))
    return folder


# A planted power law in millions of parameters (acc = C - A * N^-B), per task group offsets.
PLANTED = {"c": 80.0, "a": 30.0, "b": 0.35}
SIZES = [(200_000, "0.2M"), (800_000, "0.8M"), (3_200_000, "3.2M"), (13_000_000, "13M"),
         (50_000_000, "50M"), (200_000_000, "200M")]
GROUP_OFFSET = {"sequence_understanding": -8.0, "action_prediction": -4.0, "interest_perception": 10.0}


def planted_acc(params: int) -> float:
    return PLANTED["c"] - PLANTED["a"] * (params / 1e6) ** (-PLANTED["b"])


def scaling_records(seeds: int = 2, noise: float = 0.3) -> list[dict[str, Any]]:
    """Records on the planted law (2 seeds each, small seeded noise), one diverged trial and a baseline."""
    rng = np.random.default_rng(0)
    recs = []
    for params, preset in SIZES:
        for seed in range(seeds):
            base = planted_acc(params) + rng.normal(0, noise)
            sub = {t: base + GROUP_OFFSET[g] for t, g in SUBTASK_GROUP.items()}
            recs.append(make_record(f"trm-{preset}-s{seed}", acc=sub, params=params, preset=preset,
                                    seed=seed, n=20_000))
    recs.append(make_record("trm-qformer-nan", status="diverged", reason="NaN loss at step 12",
                            params=25_000_000))
    recs.append(make_record("text20-s0", method="text20", params=None, adapter=None, strategy=None,
                            acc=55.0, prompt_tokens=1100.0))
    return recs


@pytest.fixture
def scaling_dir(tmp_path: Path) -> Path:
    return write_records(tmp_path / "results" / "scale_model_size", scaling_records())
