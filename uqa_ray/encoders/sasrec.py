"""SASRec (Kang & McAuley 2018) at the official UQABench settings (UQABENCH.md section 3).

6 post-LN blocks, 8 heads, FFN 1536 (3*d when ffn_dim is 0), ReLU, learned absolute positions, causal
attention, a final LayerNorm, biases everywhere (torch defaults), N(0, 0.02) weights.
Positions count from the first kept click: with right padding, position 0 is always the oldest click.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from uqa_ray.encoders.layers import Embedding, Linear

if TYPE_CHECKING:
    from uqa_ray.encoders.config import EncoderConfig


class Block(nn.Module):
    def __init__(self, cfg: "EncoderConfig", f: int) -> None:
        super().__init__()
        d, std = cfg.d_model, cfg.init_std
        self.h, self.p = cfg.n_heads, cfg.dropout
        self.qkv = Linear(d, 3 * d, bias=True, std=std)
        self.o = Linear(d, d, bias=True, std=std)
        self.ff1, self.ff2 = Linear(d, f, bias=True, std=std), Linear(f, d, bias=True, std=std)
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.h, d // self.h).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.p if self.training else 0.0)
        x = self.ln1(x + self.drop(self.o(a.transpose(1, 2).reshape(b, t, d))))
        return self.ln2(x + self.drop(self.ff2(self.drop(F.relu(self.ff1(x))))))


class SASRec(nn.Module):
    @classmethod
    def validate(cls, cfg: "EncoderConfig") -> None:
        if cfg.d_model % cfg.n_heads:
            raise ValueError(f"sasrec: d_model {cfg.d_model} is not divisible by n_heads {cfg.n_heads}")

    def __init__(self, cfg: "EncoderConfig") -> None:
        super().__init__()
        self.pos = Embedding(cfg.max_len, cfg.d_model, padding_idx=None, std=cfg.init_std)
        self.drop = nn.Dropout(cfg.input_dropout)
        self.blocks = nn.ModuleList(Block(cfg, cfg.ffn_dim or 3 * cfg.d_model) for _ in range(cfg.n_layers))
        self.final_ln = nn.LayerNorm(cfg.d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, ts: torch.Tensor | None = None) -> torch.Tensor:
        t = x.shape[1]
        if t > self.pos.num_embeddings:
            raise ValueError(f"sasrec: sequence length {t} exceeds max_len {self.pos.num_embeddings}")
        # Through the module's forward (not .weight) so ZeRO-3 gathers the table.
        x = self.drop(x + self.pos(torch.arange(t, device=x.device)).unsqueeze(0))
        for blk in self.blocks:
            x = blk(x)
        return self.final_ln(x)
