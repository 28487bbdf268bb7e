"""HSTU (Zhai et al. 2024) at the official UQABench settings (UQABENCH.md section 3).

Each block: U, V, Q, K = split(SiLU(W_uvqk * LayerNorm(x))) (no bias; widths per head: linear 256,
attention 256, 8 heads); A = SiLU(Q K^T + rab) / n on the causal triangle, with n = max_len so that the
scale does not depend on how much padding a batch has; y = W_o(dropout(LayerNorm(A V) * U)) + x.
No absolute positions; no final norm in the release, an RMSNorm in the learning default
(`layers.final_norm`, docs/encoders.md).

Relative attention bias (rab), per block, shared by heads, as in HSTU's
RelativeBucketedTimeAndPositionBasedBias: one learned weight per causal distance i - j (0..max_len-1),
plus, when the batch has timestamps (`ts`, seconds), one learned weight per log bucket
floor(ln(max(|ts_i - ts_j|, 1)) / 0.301) (clamped to hstu_time_buckets). Deviation: HSTU buckets
against the *next* event's timestamp (the request time); we use the query's own timestamp so the
encoder stays strictly causal on stored logs. The bias is built only with `use_rel_bias=True` (off by
default, and always off with `release=True`): the official UQABench run passes no timestamps, so its
bias is never applied. Input embeddings get HSTU's own input dropout in the learning default
(`EncoderConfig.input_dropout`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from uqa_ray.encoders.layers import Linear, final_norm

if TYPE_CHECKING:
    from uqa_ray.encoders.config import EncoderConfig


class RelativeBias(nn.Module):
    def __init__(self, max_len: int, time_buckets: int, std: float) -> None:
        super().__init__()
        self.max_len, self.time_buckets = max_len, time_buckets
        self.pos_w = nn.Parameter(torch.empty(max_len))
        self.ts_w = nn.Parameter(torch.empty(time_buckets + 1))
        nn.init.normal_(self.pos_w, std=std)
        nn.init.normal_(self.ts_w, std=std)

    def forward(self, t: int, ts: torch.Tensor | None) -> torch.Tensor:
        """(1 or B, T, T) additive bias; entries above the diagonal are masked later."""
        i = torch.arange(t, device=self.pos_w.device)
        dist = (i[:, None] - i[None, :]).clamp(0, self.max_len - 1)
        bias = self.pos_w[dist].unsqueeze(0)
        if ts is not None:
            gap = (ts[:, :, None] - ts[:, None, :]).abs().clamp(min=1).float()
            bucket = (torch.log(gap) / 0.301).long().clamp(0, self.time_buckets)
            bias = bias + self.ts_w[bucket]
        return bias


class Block(nn.Module):
    def __init__(self, cfg: "EncoderConfig") -> None:
        super().__init__()
        h, dl, da = cfg.n_heads, cfg.hstu_linear_dim, cfg.hstu_attn_dim
        self.h, self.dl, self.da, self.n = h, dl, da, cfg.max_len
        self.uvqk = Linear(cfg.d_model, 2 * h * (dl + da), std=cfg.init_std)
        self.o = Linear(h * dl, cfg.d_model, bias=True, std=cfg.init_std)
        self.drop = nn.Dropout(cfg.dropout)
        use_bias = cfg.use_rel_bias and not cfg.release
        self.rab = RelativeBias(cfg.max_len, cfg.hstu_time_buckets, cfg.init_std) if use_bias else None

    def forward(self, x: torch.Tensor, ts: torch.Tensor | None) -> torch.Tensor:
        b, t, d = x.shape
        uvqk = F.silu(self.uvqk(F.layer_norm(x, (d,))))
        u, v, q, k = uvqk.split([self.h * self.dl, self.h * self.dl, self.h * self.da, self.h * self.da], -1)
        q = q.view(b, t, self.h, self.da).transpose(1, 2)
        k = k.view(b, t, self.h, self.da).transpose(1, 2)
        v = v.view(b, t, self.h, self.dl).transpose(1, 2)
        s = q @ k.transpose(-1, -2)
        if self.rab is not None:
            s = s + self.rab(t, ts).unsqueeze(1).to(s.dtype)
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        a = torch.where(causal, F.silu(s) / self.n, torch.zeros((), dtype=s.dtype, device=s.device))
        y = (a @ v).transpose(1, 2).reshape(b, t, self.h * self.dl)
        return x + self.o(self.drop(F.layer_norm(y, (y.shape[-1],)) * u))


class HSTU(nn.Module):
    @classmethod
    def validate(cls, cfg: "EncoderConfig") -> None:
        if cfg.hstu_linear_dim < 1 or cfg.hstu_attn_dim < 1 or cfg.hstu_time_buckets < 1:
            raise ValueError("hstu: hstu_linear_dim, hstu_attn_dim and hstu_time_buckets must be >= 1")

    def __init__(self, cfg: "EncoderConfig") -> None:
        super().__init__()
        self.max_len = cfg.max_len
        self.drop = nn.Dropout(cfg.input_dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.final_norm = final_norm(cfg)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, ts: torch.Tensor | None = None) -> torch.Tensor:
        if x.shape[1] > self.max_len:
            raise ValueError(f"hstu: sequence length {x.shape[1]} exceeds max_len {self.max_len}")
        x = self.drop(x)
        for blk in self.blocks:
            x = blk(x, ts)
        return self.final_norm(x)
