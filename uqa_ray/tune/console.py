"""The console of a Tune experiment: one line per trial event, in place of Tune's status tables.

Tune runs with `verbose=0` (its tables, redrawn every few seconds, were most of a run's console); what a
person needs there is which trial started, how it ended (status, overall accuracy) or that it failed and
where its log is. Everything else stays on disk: each trial's result.json / progress.csv in the
experiment folder, and the record it writes.
"""
from __future__ import annotations

from typing import Any

from ray import tune

from uqa_ray.tune.trial import spec_id


def _name(trial: Any) -> str:
    spec = (trial.config or {}).get("trial", {})
    return spec_id(spec) if "method" in spec else str(trial)


class TrialLines(tune.Callback):
    """`[tune] ...` lines for `total` planned trials (ended ones are counted as k/total)."""

    def __init__(self, total: int) -> None:
        self.total, self.ended = total, 0

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info) -> None:
        print(f"[tune] started {_name(trial)}", flush=True)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info) -> None:
        self.ended += 1
        result = trial.last_result or {}
        score = "".join(f", {k.split('/')[0]} {v:.1f}%" for k, v in sorted(result.items())
                        if k.endswith("/overall") and isinstance(v, (int, float)))
        print(f"[tune] {result.get('status', 'ended')} {_name(trial)}{score} ({self.ended}/{self.total})", flush=True)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info) -> None:
        print(f"[tune] {_name(trial)} lost its process: running it again (log: {trial.path})", flush=True)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info) -> None:
        self.ended += 1
        print(f"[tune] FAILED {_name(trial)} after its retries ({self.ended}/{self.total}; log: {trial.path})",
              flush=True)
