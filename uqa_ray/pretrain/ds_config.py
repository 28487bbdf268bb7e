"""The DeepSpeed JSON config of a pretraining run, generated from `PretrainConfig`.

A user's own DeepSpeed JSON (`PretrainConfig.deepspeed`) is merged over the generated one, so every
DeepSpeed knob (offload, bucket sizes, ...) stays reachable without a new field here.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from uqa_ray.config import merge
from uqa_ray.io import InputError


def resolve_precision(precision: str, on_gpu: bool) -> str:
    # bf16 matmuls are ~100x slower than fp32 on this kind of CPU; bf16 is the GPU default (the paper
    # pretrains in fp32/TF32; bf16 halves activation memory for the large presets).
    if precision == "auto":
        return "bf16" if on_gpu else "fp32"
    return precision


def deepspeed_config(cfg, on_gpu: bool) -> dict[str, Any]:
    """DeepSpeed config dict for `cfg` (a PretrainConfig)."""
    o = cfg.optim
    precision = resolve_precision(cfg.precision, on_gpu)
    ds: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": o.micro_batch,
        "gradient_accumulation_steps": o.grad_accum,
        "steps_per_print": 10**9,  # our own progress lines replace DeepSpeed's
        "wall_clock_breakdown": False,
        "optimizer": {
            "type": "AdamW",
            "params": {
                "lr": o.lr,
                "betas": list(o.betas),
                "eps": o.eps,
                "weight_decay": o.weight_decay,
                # On CPU use torch's AdamW: DeepSpeed's FusedAdam would JIT-build a CUDA/CPU op (~100 s).
                **({} if on_gpu else {"torch_adam": True}),
            },
        },
        "zero_optimization": {"stage": cfg.zero_stage},
        "bf16": {"enabled": precision == "bf16"},
    }
    if o.grad_clip > 0:
        ds["gradient_clipping"] = o.grad_clip
    if cfg.zero_stage == 3:
        # Gather the (small) recommender layers eagerly; sequence encoders have many tiny params.
        ds["zero_optimization"].update({"stage3_param_persistence_threshold": 1e4})
    if cfg.deepspeed:
        path = Path(cfg.deepspeed)
        try:
            user = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise InputError(f"deepspeed config {path}: {e}") from e
        if not isinstance(user, dict):
            raise InputError(f"deepspeed config {path}: top level must be an object")
        ds = merge(ds, user)
    return ds
