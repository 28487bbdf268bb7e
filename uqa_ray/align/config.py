"""`AlignConfig`: one soft-prompt alignment run (adapter x strategy x optimiser), and its presets.

Presets are a table of overrides of the defaults:

  official  the release's recipe for an instruct LLM (UQABENCH.md section 4): LETTER answers scored by
            the official one-token rule, Mean-Pool with 1 soft token placed before the whole chat
            (`prefix`), the release's label masking, adapter only, AdamW lr 1e-4, betas (0.9, 0.98),
            grad clip 1.5, 3 epochs, batch 4 (per GPU in the release, x 8 GPUs).
  embedded  the tiny default LM (align/llm.py, taught the task by align/instruct.py), where letter
            answers stay at chance: CONTENT answers scored by option likelihood, `answer` labels, the
            `mlp` adapter's 8 soft tokens in the user turn, a larger lr and batch for a short CPU run
            (the measurements behind each choice: docs/decisions.md). Both scorers are still computed
            and reported for every preset.

`adapter_overrides` maps an adapter name to its config overrides (enc_dim and llm_dim always come from
the encoder and the LLM), so a preset can size every adapter and a grid can vary `adapter` alone.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Literal, Mapping

from uqa_ray.align.model import LoraSettings
from uqa_ray.align.registry import ADAPTERS
from uqa_ray.config import build
from uqa_ray.scaling import Scaling


@dataclasses.dataclass(frozen=True)
class AlignConfig:
    adapter: str = "mean_pool"  # a name in align/registry.py
    adapter_overrides: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    strategy: Literal["adapter", "full", "lora"] = "adapter"  # align/model.py's table
    placement: Literal["prefix", "user_turn"] = "prefix"  # soft_prompt.py
    label_mode: Literal["official", "answer"] = "official"  # soft_prompt.py
    answer_format: Literal["letter", "content"] = "letter"  # which prompt/answer pair of the questions
    lr: float = 1e-4  # adapter (and LoRA) learning rate
    llm_lr: float = 1e-5  # the LLM's own weights under `full`
    betas: tuple[float, float] = (0.9, 0.98)
    weight_decay: float = 0.0
    grad_clip: float = 1.5  # 0 = off
    epochs: int = 3
    batch_size: int = 4
    max_steps: int = 0  # 0 = `epochs` full passes; else stop after this many optimiser steps
    max_len: int = 512  # clicks fed to the encoder (the last ones; the encoder's own max_len also caps)
    eval_batch_size: int = 32
    eval_batch_tokens: int = 0  # evaluation batches also stop at this many padded tokens; 0 = no limit
    lora: LoraSettings = LoraSettings()
    log_every: int = 50  # steps between progress reports
    threads: int = 0  # torch intra-op threads in this process; 0 = leave as is
    seed: int = 0
    # Where it trains (uqa_ray/scaling.py), not part of an alignment's identity: `num_workers` 0 = inside
    # the trial's own process (plain torch); >= 1 = a Ray Train TorchTrainer of that many DeepSpeed ZeRO
    # workers launched by the trial (align/distributed.py). `checkpoint_every` 0 = no mid-run checkpoints
    # (a restarted group starts over); `storage` "" = beside the alignment cache.
    scaling: Scaling = Scaling(num_workers=0, checkpoint_every=100)

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.llm_lr <= 0:
            raise ValueError(f"lr and llm_lr must be > 0, got {self.lr}, {self.llm_lr}")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must be in [0, 1), got {self.betas}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError("weight_decay and grad_clip must be >= 0")
        for name in ("epochs", "batch_size", "max_len", "eval_batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_steps", "threads", "seed", "eval_batch_tokens"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.adapter not in ADAPTERS:
            raise ValueError(f"adapter: unknown adapter {self.adapter!r}; known {sorted(ADAPTERS)}")
        unknown = sorted(set(self.adapter_overrides) - set(ADAPTERS))
        if unknown:
            raise ValueError(f"adapter_overrides: unknown adapter(s) {unknown}; known {sorted(ADAPTERS)}")
        if self.scaling.num_workers and self.batch_size < self.scaling.num_workers:
            raise ValueError(f"batch_size {self.batch_size} < scaling.num_workers {self.scaling.num_workers}: "
                             "every worker needs a row of each global batch")
        for name in sorted({self.adapter, *self.adapter_overrides}):  # every override, chosen or not
            self.adapter_config(8, 8, name)

    def adapter_config(self, enc_dim: int, llm_dim: int, name: str = "") -> Any:
        """The config of adapter `name` (default: the chosen one) with its overrides."""
        from uqa_ray.align.adapters import adapter_config

        name = name or self.adapter
        over = dict(self.adapter_overrides.get(name, {}))
        bad = {"enc_dim", "llm_dim"} & set(over)
        if bad:
            raise ValueError(f"adapter_overrides.{name}: {sorted(bad)} come from the encoder and LLM")
        try:
            return adapter_config(name, {**over, "enc_dim": enc_dim, "llm_dim": llm_dim})
        except ValueError as e:  # ConfigError included: re-raise naming the field it came from
            raise ValueError(f"adapter_overrides.{name}: {e}") from e


PRESETS: dict[str, dict[str, Any]] = {
    "official": {},
    "embedded": {
        "answer_format": "content", "label_mode": "answer", "placement": "user_turn", "adapter": "mlp",
        "adapter_overrides": {"mean_pool": {"n_tokens": 8}, "qformer": {"d_model": 128, "heads": 4}},
        "lr": 3e-3, "batch_size": 16, "epochs": 1, "max_steps": 600,
        # CPU: mid-size batches of the short prompts are fastest, and long Text-k prompts go a few at a
        # time (bench/evaluate.py); on a GPU raise both.
        "eval_batch_size": 32, "eval_batch_tokens": 8192,
    },
}


def align_config(preset: str = "official", *overrides: Mapping[str, Any] | None) -> AlignConfig:
    """The preset's AlignConfig with validated overrides (dotted-key errors name the key)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown alignment preset {preset!r}; known: {', '.join(PRESETS)}")
    return build(AlignConfig, PRESETS[preset], *overrides)
