"""Memory per GPU for a preset x ZeRO stage x GPU count, so a user knows what cluster to ask for.

Model states (parameters, gradients, AdamW moments, fp32 masters) come from DeepSpeed's own estimators
for ZeRO-2 and ZeRO-3 (`estimate_zero{2,3}_model_states_mem_needs`, no offload); stages 0 and 1 use
the ZeRO paper's accounting for mixed precision with Adam (Rajbhandari et al. 2020, section 3: 2 + 2 +
12 bytes per parameter, the 12 optimizer bytes partitioned under ZeRO-1). Activations are an estimate:
Korthikanti et al. 2022's 34*B*T*d bytes per transformer layer with flash attention (no T^2 term), the
item-input bags, and the chunked CE's working set (one chunk of logits and its gradient). All in bytes.
Row-sparse tables (`optim.tables=sparse`, pretrain/tables.py) stay out of ZeRO: every rank holds them
whole, a bf16 weight, an fp32 master and two fp32 moments (14 bytes per parameter).
"""
from __future__ import annotations

import dataclasses
from typing import Iterable

import torch

from uqa_ray.config import ConfigError
from uqa_ray.encoders.base import count_params
from uqa_ray.encoders.config import OFFICIAL_VOCAB
from uqa_ray.encoders.presets import preset_config

GIB = 1024**3
SPARSE_TABLE_BYTES = 2 + 4 + 8  # per row-sparse table parameter on every rank: bf16 weight, fp32 master, moments


@dataclasses.dataclass(frozen=True)
class Plan:
    preset: str
    params_total: int
    params_dense: int
    zero_stage: int
    gpus: int
    micro_batch: int
    max_len: int
    tables: str  # "dense" | "sparse" (optim.tables)
    model_states: float  # bytes per GPU (the row-sparse tables' included)
    activations: float  # bytes per GPU
    total: float

    def fits(self, gpu_bytes: float, headroom: float = 0.9) -> bool:
        return self.total <= gpu_bytes * headroom


def model_state_bytes(total: int, largest: int, stage: int, gpus: int) -> float:
    if stage == 2:
        from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

        return float(estimate_zero2_model_states_mem_needs(total, gpus, 1, cpu_offload=False)[1])
    if stage == 3:
        from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

        return float(
            estimate_zero3_model_states_mem_needs(total, largest, gpus, 1, cpu_offload=False,
                                                  cpu_offload_params=False)[1]
        )
    optimizer = 12 * total / (gpus if stage == 1 else 1)
    return float(2 * total + 2 * total + optimizer)


def activation_bytes(enc_cfg, micro_batch: int, chunk: int = 32768, bytes_per: int = 2) -> float:
    b, t, d = micro_batch, enc_cfg.max_len, enc_cfg.d_model
    layers = 34 * b * t * d * enc_cfg.n_layers * bytes_per / 2  # the 34 already counts 2-byte values
    bags = b * t * (enc_cfg.item_dim + 9 * enc_cfg.side_dim + d) * bytes_per
    ce = 2 * b * t * min(chunk, enc_cfg.vocab["uni_seq_item_id"]) * 4  # fp32 logits + their gradient
    return float(layers + bags + ce)


def plan(
    preset: str, zero_stage: int, gpus: int, micro_batch: int = 4, max_len: int = 512,
    vocab: dict[str, int] | None = None, tables: str = "dense", loss: str = "ce",
) -> Plan:
    """`tables` "sparse" with a `loss` kind ("ce", "sampled", "infonce") says which tables leave ZeRO (under
    the full CE the item table stays: `PretrainObjective.sparse_tables`)."""
    from uqa_ray.pretrain.losses import LossConfig
    from uqa_ray.pretrain.objective import PretrainObjective
    from uqa_ray.pretrain.tables import split_parameters

    if tables == "sparse" and zero_stage not in (1, 2):
        raise ConfigError(f"row-sparse tables need ZeRO stage 1 or 2, got {zero_stage}")
    enc_cfg = preset_config(preset, vocab or OFFICIAL_VOCAB, max_len=max_len)
    with torch.device("meta"):
        model = PretrainObjective(enc_cfg, LossConfig(kind=loss))
    engine, sparse = split_parameters(model, tables)
    outside = sum(p.numel() for p in sparse.values())
    states = (model_state_bytes(sum(p.numel() for p in engine), max(p.numel() for p in engine), zero_stage, gpus)
              + SPARSE_TABLE_BYTES * outside)
    acts = activation_bytes(enc_cfg, micro_batch)
    return Plan(preset, sum(p.numel() for p in model.parameters()), count_params(enc_cfg)["dense"], zero_stage,
                gpus, micro_batch, max_len, tables, states, acts, states + acts)


def plan_table(presets: Iterable[str], stages: Iterable[int], gpus: Iterable[int], **kw) -> list[Plan]:
    return [plan(p, s, g, **kw) for p in presets for s in stages for g in gpus]


def markdown(plans: list[Plan], gpu_gib: float = 80.0) -> str:
    rows = [
        "| preset | params (total / dense) | ZeRO | GPUs | tables | model states GiB/GPU | activations GiB/GPU "
        f"| total GiB/GPU | fits {gpu_gib:g} GiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in plans:
        rows.append(
            f"| {p.preset} | {p.params_total / 1e6:.0f}M / {p.params_dense / 1e6:.1f}M | {p.zero_stage} | {p.gpus} "
            f"| {p.tables} | {p.model_states / GIB:.2f} | {p.activations / GIB:.2f} | {p.total / GIB:.2f} "
            f"| {'yes' if p.fits(gpu_gib * GIB) else 'no'} |"
        )
    return "\n".join(rows)
