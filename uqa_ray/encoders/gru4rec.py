"""GRU4Rec (Hidasi 2015) at the official UQABench settings (UQABENCH.md section 3).

2-layer GRU, hidden 1024, no bias, then dropout 0.1, a linear layer back to d_model and a LayerNorm.
A GRU is causal by construction; right padding comes after every valid step, so no packing is needed.
The GRU keeps torch's default uniform init (set in nn.GRU's own reset_parameters).

The learning default adds the input to the output before the LayerNorm, LN(x + W drop(h)), with W
starting at zero (a residual branch that starts closed, as zero-init residual branches do: Goyal et al.
2017, Fixup): at init the head reads the current click's own embedding, which the recurrent state would
otherwise have to learn to copy through 1024 gates, and the GRU's contribution grows from there
(docs/encoders.md). The release has neither.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from uqa_ray.encoders.layers import Linear

if TYPE_CHECKING:
    from uqa_ray.encoders.config import EncoderConfig


class GRU4Rec(nn.Module):
    def __init__(self, cfg: "EncoderConfig") -> None:
        super().__init__()
        self.gru = nn.GRU(cfg.d_model, cfg.gru_hidden, num_layers=cfg.n_layers, bias=False, batch_first=True)
        self.drop = nn.Dropout(cfg.dropout)
        self.residual = not cfg.release
        self.out = Linear(cfg.gru_hidden, cfg.d_model, bias=True, std=0.0 if self.residual else cfg.init_std)
        self.norm = nn.LayerNorm(cfg.d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, ts: torch.Tensor | None = None) -> torch.Tensor:
        h, _ = self.gru(x)
        y = self.out(self.drop(h))
        return self.norm(x + y if self.residual else y)
