"""Trm++: a LLaMA-style causal Transformer (UQABENCH.md section 3).

Pre-norm RMSNorm, RoPE (base 10000) on queries and keys, SwiGLU FFN of width 256*ceil(8/3*d/256), no
biases, causal scaled-dot-product attention, dropout 0.1, N(0, 0.02) init with the two output
projections of each block at 0.02/sqrt(2L) (GPT-2/LLaMA residual scaling). No final norm in the release;
the learning default adds an RMSNorm (`layers.final_norm`, docs/encoders.md).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from uqa_ray.encoders.layers import Linear, RMSNorm, final_norm

if TYPE_CHECKING:
    from uqa_ray.encoders.config import EncoderConfig


def ffn_width(d: int) -> int:
    return 256 * math.ceil((8 / 3 * d) / 256)


def rope(x: torch.Tensor, base: float) -> torch.Tensor:
    """Rotary embedding of (B, H, T, hd) by absolute position (rotate-half convention). Computed on
    the fly: no buffers, so meta-device and ZeRO-3 construction need nothing special."""
    t, hd = x.shape[-2], x.shape[-1]
    inv = base ** (-torch.arange(0, hd, 2, device=x.device, dtype=torch.float32) / hd)
    ang = torch.arange(t, device=x.device, dtype=torch.float32)[:, None] * inv[None, :]
    cos, sin = torch.cat([ang, ang], -1).cos(), torch.cat([ang, ang], -1).sin()
    x1, x2 = x.float().chunk(2, dim=-1)
    rot = torch.cat([-x2, x1], dim=-1)
    return (x.float() * cos + rot * sin).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, cfg: "EncoderConfig", out_std: float) -> None:
        super().__init__()
        d, self.h = cfg.d_model, cfg.n_heads
        self.base, self.p = cfg.rope_base, cfg.dropout
        self.qkv = Linear(d, 3 * d, std=cfg.init_std)
        self.o = Linear(d, d, std=out_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.h, d // self.h).permute(2, 0, 3, 1, 4)
        q, k = rope(q, self.base), rope(k, self.base)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.p if self.training else 0.0)
        return self.o(y.transpose(1, 2).reshape(b, t, d))


class SwiGLU(nn.Module):
    def __init__(self, d: int, f: int, std: float, out_std: float) -> None:
        super().__init__()
        self.gate_up = Linear(d, 2 * f, std=std)
        self.down = Linear(f, d, std=out_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g, u = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(g) * u)


class Block(nn.Module):
    def __init__(self, cfg: "EncoderConfig", f: int) -> None:
        super().__init__()
        out_std = cfg.init_std / math.sqrt(2 * cfg.n_layers)
        self.norm1, self.norm2 = RMSNorm(cfg.d_model), RMSNorm(cfg.d_model)
        self.attn = Attention(cfg, out_std)
        self.ffn = SwiGLU(cfg.d_model, f, cfg.init_std, out_std)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x)))
        return x + self.drop(self.ffn(self.norm2(x)))


class TrmPP(nn.Module):
    @classmethod
    def validate(cls, cfg: "EncoderConfig") -> None:
        if cfg.d_model % cfg.n_heads or (cfg.d_model // cfg.n_heads) % 2:
            raise ValueError(f"trm_pp: d_model {cfg.d_model} must split into n_heads={cfg.n_heads} "
                             "heads of even size (RoPE)")

    def __init__(self, cfg: "EncoderConfig") -> None:
        super().__init__()
        f = cfg.ffn_dim or ffn_width(cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg, f) for _ in range(cfg.n_layers))
        self.final_norm = final_norm(cfg)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, ts: torch.Tensor | None = None) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return self.final_norm(x)
