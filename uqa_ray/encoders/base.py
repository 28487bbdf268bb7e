"""`SequenceEncoder` = item input + backbone; `build_encoder` and `count_params`.

Parameter counts follow the paper: `dense` is the backbone only (table 5's sizes exclude the embedding
tables, which add about 182M at official vocabulary sizes, and the 704 -> d input projection).
`count_params(cfg)` builds on the `meta` device, so a 1.2B preset is counted without allocating it.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from uqa_ray.encoders.bags import ItemInput
from uqa_ray.encoders.config import EncoderConfig
from uqa_ray.encoders.layers import zero_padding
from uqa_ray.encoders.registry import backbone_class


class SequenceEncoder(nn.Module):
    """forward(batch) -> (B, T, d_model). `batch` is `data.collate.collate` output: the input mode's
    columns, `mask` (B, T) bool (right padding), optionally `ts` (B, T) int64 seconds (HSTU time bias).
    Every backbone is causal: the output at t depends on clicks 0..t only."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.item_input = ItemInput(cfg)
        self.backbone = backbone_class(cfg.name)(cfg)

    def forward(self, batch: Mapping[str, torch.Tensor], check_ids: bool = True) -> torch.Tensor:
        mask = batch["mask"]
        x = zero_padding(self.item_input(batch, check=check_ids), mask)
        return self.backbone(x, mask, batch.get("ts"))


def build_encoder(cfg: EncoderConfig) -> SequenceEncoder:
    """Plain nn.Module construction (no post-hoc init), so `deepspeed.zero.Init` can partition it."""
    return SequenceEncoder(cfg)


def count_params(cfg_or_model: EncoderConfig | nn.Module) -> dict[str, int]:
    """dense (backbone, as the paper counts), embeddings (bag tables), input (the projection), total."""
    if isinstance(cfg_or_model, EncoderConfig):
        with torch.device("meta"):
            model = build_encoder(cfg_or_model)
    else:
        model = cfg_or_model
    enc = model.encoder if hasattr(model, "encoder") else model

    def n(m: nn.Module) -> int:
        # ZeRO-3 partitioned parameters carry their full size in `ds_numel`.
        return sum(getattr(p, "ds_numel", p.numel()) for p in m.parameters())

    dense = n(enc.backbone)
    inp = n(enc.item_input.proj)
    emb = n(enc.item_input) - inp
    return {"dense": dense, "embeddings": emb, "input": inp, "total": n(model)}
