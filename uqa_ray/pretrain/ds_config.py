"""The DeepSpeed JSON config of a training run (pretraining here; alignment in align/distributed.py).

A user's own DeepSpeed JSON (`PretrainConfig.scaling.deepspeed`) is merged over the generated one, so every
DeepSpeed knob (offload, bucket sizes, ...) stays reachable without a new field here.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from uqa_ray.config import merge
from uqa_ray.io import InputError


def resolve_precision(precision: str, on_gpu: bool) -> str:
    # bf16 matmuls are ~100x slower than fp32 on this kind of CPU; bf16 is the GPU default (the paper
    # pretrains in fp32/TF32; bf16 halves activation memory for the large presets).
    if precision == "auto":
        return "bf16" if on_gpu else "fp32"
    return precision


def engine_config(*, micro_batch: int, grad_accum: int, zero_stage: int, precision: str, grad_clip: float,
                  extra: Mapping[str, Any] | None = None, user_json: str = "") -> dict[str, Any]:
    """The DeepSpeed config every training stage shares, then the stage's `extra` keys (pretraining's
    optimizer; alignment passes a client optimizer instead), then the user's JSON over both."""
    ds: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": grad_accum,
        "steps_per_print": 10**9,  # our own progress lines replace DeepSpeed's
        "wall_clock_breakdown": False,
        "zero_optimization": {"stage": zero_stage},
        "bf16": {"enabled": precision == "bf16"},
    }
    if grad_clip > 0:
        ds["gradient_clipping"] = grad_clip
    ds = merge(ds, extra or {})
    if user_json:
        path = Path(user_json)
        try:
            user = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise InputError(f"deepspeed config {path}: {e}") from e
        if not isinstance(user, dict):
            raise InputError(f"deepspeed config {path}: top level must be an object")
        ds = merge(ds, user)
    return ds


def lr_scheduler(optim, total_steps: int) -> dict[str, Any] | None:
    """DeepSpeed's `scheduler` block for `optim.schedule` over `total_steps` optimizer steps (None: a
    constant lr with no warm-up, DeepSpeed's default)."""
    if optim.schedule == "cosine":
        return {"type": "WarmupCosineLR", "params": {
            "total_num_steps": max(1, total_steps), "warmup_num_steps": optim.warmup_steps,
            "warmup_min_ratio": 0.0, "cos_min_ratio": optim.min_lr_ratio, "warmup_type": "linear"}}
    if optim.warmup_steps:
        return {"type": "WarmupLR", "params": {"warmup_min_lr": 0.0, "warmup_max_lr": optim.lr,
                                               "warmup_num_steps": optim.warmup_steps, "warmup_type": "linear"}}
    return None


def deepspeed_config(cfg, on_gpu: bool, total_steps: int = 0) -> dict[str, Any]:
    """DeepSpeed config dict for `cfg` (a PretrainConfig) over `total_steps` optimizer steps (the lr schedule's
    length; unused by a constant lr)."""
    o = cfg.optim
    extra: dict[str, Any] = {
        "optimizer": {
            "type": "AdamW",
            "params": {
                "lr": o.lr,
                "betas": list(o.betas),
                "eps": o.eps,
                "weight_decay": o.weight_decay,
                # On CPU use torch's AdamW: DeepSpeed's FusedAdam would JIT-build a CUDA/CPU op first.
                **({} if on_gpu else {"torch_adam": True}),
            },
        },
    }
    scheduler = lr_scheduler(o, total_steps)
    if scheduler:
        extra["scheduler"] = scheduler
    if cfg.scaling.zero_stage == 3:
        # Gather the (small) recommender layers eagerly; sequence encoders have many tiny params.
        extra["zero_optimization"] = {"stage3_param_persistence_threshold": 1e4}
    return engine_config(micro_batch=o.micro_batch, grad_accum=o.grad_accum, zero_stage=cfg.scaling.zero_stage,
                         precision=resolve_precision(cfg.precision, on_gpu), grad_clip=o.grad_clip,
                         extra=extra, user_json=cfg.scaling.deepspeed)
