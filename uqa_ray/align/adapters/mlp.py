"""MLP adapter: the encoder's LAST states, each through a two-layer GELU MLP, one soft token per state.

Not in the paper or the release: our own adapter (the evidence: docs/decisions.md).
  * Last states, not a mean: the encoders are causal and trained to predict the next click from the
    state at t, so the state at t describes the user up to t; the last `n_tokens` states, oldest first,
    are what recency questions need, the way a Text-k history ends with recent clicks.
  * An MLP, not one linear layer (the LLaVA-1.5 projector, `mlp2x_gelu`): the frozen LM reads a soft
    token the way it reads the mean of a name's token embeddings, so the adapter must turn "category c"
    into something like c's embedding, a selection that a linear map of the state can only blur.
With fewer valid clicks than tokens the oldest click's state repeats, so no token is empty.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from torch import nn

from uqa_ray.align.adapters.mean_pool import chunk_weights, valid_ranks


@dataclasses.dataclass(frozen=True)
class MLPConfig:
    enc_dim: int = 512
    llm_dim: int = 2048
    n_tokens: int = 8
    hidden: int = 512  # the MLP's inner width
    pool: Literal["last", "chunks"] = "last"  # last n_tokens states, or order-preserving chunk means

    def __post_init__(self) -> None:
        for name in ("enc_dim", "llm_dim", "n_tokens", "hidden"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.pool not in ("last", "chunks"):
            raise ValueError(f"pool must be 'last' or 'chunks', got {self.pool!r}")

    @property
    def n_soft(self) -> int:
        return self.n_tokens


def last_weights(mask: torch.Tensor, n_tokens: int) -> torch.Tensor:
    """(B, n_tokens, T) one-hot rows picking the last n_tokens valid positions, oldest first; with
    n < n_tokens valid clicks the first tokens repeat the oldest click; right or left padding alike."""
    mask = mask.bool()
    n, rank = valid_ranks(mask)
    k = torch.arange(n_tokens, device=mask.device).view(1, -1, 1)
    want = (n.unsqueeze(1) - n_tokens + k).clamp(min=0)  # (B, K, 1) the rank token k reads
    return ((rank.unsqueeze(1) == want) & mask.unsqueeze(1)).float()


class MLPAdapter(nn.Module):
    def __init__(self, cfg: MLPConfig):
        super().__init__()
        self.cfg = cfg
        self.proj = nn.Sequential(nn.Linear(cfg.enc_dim, cfg.hidden), nn.GELU(), nn.Linear(cfg.hidden, cfg.llm_dim))

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T, enc_dim), (B, T) bool -> (B, n_tokens, llm_dim)."""
        pick = last_weights if self.cfg.pool == "last" else chunk_weights
        w = pick(mask, self.cfg.n_tokens).to(states.dtype)
        # The mask zeroes padded columns in w, but 0 * inf is NaN: zero the padded states themselves.
        states = states.masked_fill(~mask.bool().unsqueeze(-1), 0.0)
        return self.proj(torch.bmm(w, states))
