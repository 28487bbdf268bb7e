"""Fault injection for tests, armed from outside every public configuration.

A test arms faults with the environment variable `UQA_RAY_FAULTS` (a JSON object of `Faults`' fields) in
the process that launches a run: the pretraining driver (`pretrain`, `uqa-ray pretrain`, the torchrun
entry) and `train_alignment` (in whatever process runs it) read it once (`armed()`) and hand the faults
to their workers with the run's other facts, so they reach Ray Train workers on any node while no
config, cache key or record ever holds them. Unarmed (the variable unset), every hook is a no-op.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
from pathlib import Path
from typing import Any

import torch

ENV = "UQA_RAY_FAULTS"


@dataclasses.dataclass(frozen=True)
class Faults:
    fail_at_step: int = 0  # pretraining: rank 1 SIGKILLs itself once when it reaches this global step
    nan_at_step: int = 0  # a NaN at this step: the last rank's loss, or in one process a weight (poison_weights)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if not isinstance(getattr(self, f.name), int) or getattr(self, f.name) < 0:
                raise ValueError(f"{ENV}: {f.name} must be an integer >= 0, got {getattr(self, f.name)!r}")

    def poison(self, loss: torch.Tensor, step: int, rank: int, world: int) -> torch.Tensor:
        """The loss, NaN on the last rank at `nan_at_step` (one rank only: the all-reduce must spread it)."""
        if self.nan_at_step and step == self.nan_at_step and rank == world - 1:
            return loss * float("nan")
        return loss

    def poison_weights(self, module: torch.nn.Module, step: int) -> None:
        """One process: a NaN weight of `module` at `nan_at_step`, as a real blow-up (the loss check sees it)."""
        if self.nan_at_step and step == self.nan_at_step:
            with torch.no_grad():
                next(module.parameters()).fill_(float("nan"))

    def maybe_die(self, step: int, rank: int, marker_dir: str | Path) -> None:
        """A real process death (SIGKILL, not an exception) of rank 1 at `fail_at_step`, once: a marker
        file in `marker_dir` records it, so the restarted worker goes on."""
        if not (self.fail_at_step and step == self.fail_at_step and rank == 1):
            return
        marker = Path(marker_dir) / f".failed-at-{self.fail_at_step}"
        if not marker.exists():
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)


def armed(value: dict[str, Any] | None = None) -> Faults:
    """The faults `UQA_RAY_FAULTS` arms (none when unset), or those of `value` (as handed to a worker)."""
    if value is not None:
        return Faults(**value)
    raw = os.environ.get(ENV, "").strip()
    if not raw:
        return Faults()
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"{ENV} is not a JSON object: {e}") from e
    known = {f.name for f in dataclasses.fields(Faults)}
    if not isinstance(data, dict) or set(data) - known:
        raise ValueError(f"{ENV} must be a JSON object with keys among {sorted(known)}, got {raw!r}")
    return Faults(**data)
