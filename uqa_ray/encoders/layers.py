"""Leaf layers that initialize themselves inside their own constructor.

DeepSpeed's `zero.Init` partitions each module's parameters right after that module's `__init__`
returns, so a parent that re-initializes its children afterwards would write into empty shards. Every
custom init therefore lives in a leaf's `reset_parameters` (which `nn.Linear`/`nn.Embedding` call from
their own `__init__`), never in a parent's post-construction `apply`.
"""
from __future__ import annotations

import torch
from torch import nn


class Linear(nn.Linear):
    """nn.Linear with N(0, std) weights and zero bias (the paper: Gaussian init, std 0.02)."""

    def __init__(self, d_in: int, d_out: int, bias: bool = False, std: float = 0.02) -> None:
        self.std = std
        super().__init__(d_in, d_out, bias=bias)

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, mean=0.0, std=self.std)
        if self.bias is not None:
            nn.init.zeros_(self.bias)


class Embedding(nn.Embedding):
    """nn.Embedding with N(0, std) rows; the padding row stays zero and gets no gradient."""

    def __init__(self, n: int, d: int, padding_idx: int | None = 0, std: float = 0.02) -> None:
        self.std = std
        super().__init__(n, d, padding_idx=padding_idx)

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, mean=0.0, std=self.std)
        self._fill_padding_idx_with_zero()


class EmbeddingBag(nn.EmbeddingBag):
    """Mean-mode bag with padding_idx 0: padding tokens are left out of the mean (an all-padding bag
    gives a zero vector)."""

    def __init__(self, n: int, d: int, std: float = 0.02) -> None:
        self.std = std
        super().__init__(n, d, mode="mean", padding_idx=0)

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, mean=0.0, std=self.std)
        self._fill_padding_idx_with_zero()


class RMSNorm(nn.Module):
    """RMSNorm (LLaMA), computed in fp32 for bf16 stability."""

    def __init__(self, d: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight.float()).to(x.dtype)


def zero_padding(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero the padded positions (right padding: they never precede a valid one)."""
    return x * mask.unsqueeze(-1).to(x.dtype)
