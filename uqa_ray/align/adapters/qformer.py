"""Q-Former adapter: learned queries read the encoder states through cross-attention (BLIP-2 style).

The paper (UQABENCH.md sections 4 and 6, table 4) tests a Q-Former giving 16 soft tokens: 55.00 with
full fine-tuning but 30.96 adapter-only, and reports NaN losses; it is not in the official release,
so this is our own design: pre-LayerNorm blocks (self-attention among the queries, cross-attention to
the projected encoder states with the padding masked, a GELU MLP), then LayerNorm and a linear map to the
LLM hidden size. Pre-LN and the final LayerNorm bound the soft tokens' scale, the usual cure for the
instability the paper reports; a NaN loss still stops training (align.model.DivergedError).
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn


@dataclasses.dataclass(frozen=True)
class QFormerConfig:
    enc_dim: int = 512
    llm_dim: int = 2048
    n_queries: int = 16  # the paper's 16 soft tokens
    d_model: int = 512
    layers: int = 2
    heads: int = 8
    ffn_mult: int = 4
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("enc_dim", "llm_dim", "n_queries", "d_model", "layers", "heads", "ffn_mult"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.d_model % self.heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by heads {self.heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def n_soft(self) -> int:
        return self.n_queries


class _Block(nn.Module):
    def __init__(self, cfg: QFormerConfig):
        super().__init__()
        d = cfg.d_model
        self.ln_self, self.ln_cross, self.ln_kv, self.ln_ffn = (nn.LayerNorm(d) for _ in range(4))
        self.self_attn = nn.MultiheadAttention(d, cfg.heads, dropout=cfg.dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(d, cfg.heads, dropout=cfg.dropout, batch_first=True)
        self.ffn = nn.Sequential(
            nn.Linear(d, cfg.ffn_mult * d), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(cfg.ffn_mult * d, d)
        )

    def forward(self, q: torch.Tensor, kv: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        h = self.ln_self(q)
        q = q + self.self_attn(h, h, h, need_weights=False)[0]
        kv = self.ln_kv(kv)
        q = q + self.cross_attn(self.ln_cross(q), kv, kv, key_padding_mask=pad, need_weights=False)[0]
        return q + self.ffn(self.ln_ffn(q))


class QFormer(nn.Module):
    def __init__(self, cfg: QFormerConfig):
        super().__init__()
        self.cfg = cfg
        self.queries = nn.Parameter(torch.randn(cfg.n_queries, cfg.d_model) * 0.02)
        self.in_proj = nn.Linear(cfg.enc_dim, cfg.d_model)
        self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.layers))
        self.ln_out = nn.LayerNorm(cfg.d_model)
        self.out_proj = nn.Linear(cfg.d_model, cfg.llm_dim)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T, enc_dim), (B, T) bool -> (B, n_queries, llm_dim)."""
        mask = mask.bool()
        empty = ~mask.any(1)
        if bool(empty.any()):
            # An all-masked row would make every attention weight NaN.
            rows = empty.nonzero().flatten().tolist()
            raise ValueError(f"empty sequence (no valid position) in batch row(s) {rows}")
        kv = self.in_proj(states)
        q = self.queries.to(kv.dtype).unsqueeze(0).expand(states.shape[0], -1, -1)
        for block in self.blocks:
            q = block(q, kv, ~mask)
        return self.out_proj(self.ln_out(q))
