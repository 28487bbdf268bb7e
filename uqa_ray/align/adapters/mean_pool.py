"""Mean-Pool adapter: the official UQABench adapter (UQABENCH.md section 4).

Official (`SimplePooler` in the release's models/align.py): a linear layer enc_dim -> LLM hidden on every
position, then the mean over the valid positions = exactly ONE soft token. A linear map commutes with a
weighted mean whose weights sum to 1, bias included, so we pool first and project once: the same
function (tested against the per-position formula) at 1/T of the matmul cost.

`n_tokens > 1` is NOT official. It splits each user's valid clicks, in time order, into `n_tokens`
contiguous chunks and averages each, so the soft tokens keep the order a plain mean throws away. The
issue's measurements on the tiny LM motivate it: 8 order-preserving tokens reached 78% where one plain
mean stopped at 50-62%. With fewer clicks than tokens the chunks repeat clicks, so none is empty.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn


@dataclasses.dataclass(frozen=True)
class MeanPoolConfig:
    enc_dim: int = 512  # encoder d_model (512 for every official encoder)
    llm_dim: int = 2048  # LLM hidden size (2048 for Qwen2.5-3B)
    n_tokens: int = 1  # 1 = official; > 1 = order-preserving chunk means (not official)

    def __post_init__(self) -> None:
        for name in ("enc_dim", "llm_dim", "n_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def n_soft(self) -> int:
        return self.n_tokens


def valid_ranks(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(valid clicks per row (B, 1), rank of each position among its row's valid ones (B, T)); ValueError
    naming the rows with no valid position. Ranks come from the mask itself (cumsum), so right- or
    left-padded rows give the same result."""
    n = mask.sum(1, keepdim=True)
    if bool((n == 0).any()):
        rows = (n.squeeze(1) == 0).nonzero().flatten().tolist()
        raise ValueError(f"empty sequence (no valid position) in batch row(s) {rows}")
    return n, mask.long().cumsum(1) - 1


def chunk_weights(mask: torch.Tensor, n_chunks: int) -> torch.Tensor:
    """(B, n_chunks, T) averaging weights: chunk k covers the valid clicks ranked in
    [floor(k*n/K), max(floor((k+1)*n/K), floor(k*n/K)+1)) where n is the row's valid count.

    Ranks come from the mask itself (cumsum), so right- or left-padded rows give the same result.
    """
    mask = mask.bool()
    n, rank = valid_ranks(mask)
    k = torch.arange(n_chunks, device=mask.device).view(1, -1, 1)  # (1, K, 1)
    start = torch.div(k * n.unsqueeze(1), n_chunks, rounding_mode="floor")  # (B, K, 1)
    end = torch.maximum(torch.div((k + 1) * n.unsqueeze(1), n_chunks, rounding_mode="floor"), start + 1)
    r = rank.unsqueeze(1)  # (B, 1, T)
    member = (r >= start) & (r < end) & mask.unsqueeze(1)
    w = member.float()
    return w / w.sum(-1, keepdim=True)


class MeanPool(nn.Module):
    def __init__(self, cfg: MeanPoolConfig):
        super().__init__()
        self.cfg = cfg
        self.up_proj = nn.Linear(cfg.enc_dim, cfg.llm_dim)  # the official layer's name

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T, enc_dim), (B, T) bool -> (B, n_tokens, llm_dim)."""
        w = chunk_weights(mask, self.cfg.n_tokens).to(states.dtype)
        pooled = torch.bmm(w, states)  # (B, K, enc_dim)
        return self.up_proj(pooled)
