"""Leaf layers that initialize themselves inside their own constructor.

DeepSpeed's `zero.Init` partitions each module's parameters right after that module's `__init__`
returns, so a parent that re-initializes its children afterwards would write into empty shards. Every
custom init therefore lives in a leaf's `reset_parameters` (which `nn.Linear`/`nn.Embedding` call from
their own `__init__`), never in a parent's post-construction `apply`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from uqa_ray.encoders.config import EncoderConfig


def init_table(weight: torch.Tensor, std: float, truncated: bool) -> None:
    """N(0, std), or the official release's truncated normal (cut at +-2 std)."""
    if truncated:
        nn.init.trunc_normal_(weight, mean=0.0, std=std, a=-2 * std, b=2 * std)
    else:
        nn.init.normal_(weight, mean=0.0, std=std)


class Linear(nn.Linear):
    """nn.Linear with N(0, std) weights and zero bias (the paper: Gaussian init, std 0.02), or with
    `std=None` PyTorch's own default init (kaiming-uniform weight, uniform bias), as a plain `nn.Linear`
    of the official release has. `identity_cols=k` starts the first k input columns as `gain` times the
    identity (`gain * eye(d_out, k)`: a copy of them into the first outputs), the others N(0, std)."""

    def __init__(self, d_in: int, d_out: int, bias: bool = False, std: float | None = 0.02,
                 identity_cols: int = 0, gain: float = 1.0) -> None:
        self.std, self.identity_cols, self.gain = std, identity_cols, gain
        super().__init__(d_in, d_out, bias=bias)

    def reset_parameters(self) -> None:
        if self.std is None:
            super().reset_parameters()
            return
        nn.init.normal_(self.weight, mean=0.0, std=self.std)
        if self.identity_cols:
            with torch.no_grad():
                self.weight[:, : self.identity_cols] = self.gain * torch.eye(self.weight.shape[0], self.identity_cols)
        if self.bias is not None:
            nn.init.zeros_(self.bias)


class Embedding(nn.Embedding):
    """nn.Embedding with N(0, std) rows (truncated at +-2 std if asked); a padding row, when there is one,
    stays zero and gets no gradient."""

    def __init__(self, n: int, d: int, padding_idx: int | None = 0, std: float = 0.02, truncated: bool = False) -> None:
        self.std, self.truncated = std, truncated
        super().__init__(n, d, padding_idx=padding_idx)

    def reset_parameters(self) -> None:
        init_table(self.weight, self.std, self.truncated)
        self._fill_padding_idx_with_zero()


class EmbeddingBag(nn.EmbeddingBag):
    """Mean-mode bag with padding_idx 0: padding tokens are left out of the mean (an all-padding bag
    gives a zero vector), which is what the official offsets-built bags compute, since id 0 is the
    tokenizer's pad token and never a real token (data/tokenizer.py)."""

    def __init__(self, n: int, d: int, std: float = 0.02, truncated: bool = False) -> None:
        self.std, self.truncated = std, truncated
        super().__init__(n, d, mode="mean", padding_idx=0)

    def reset_parameters(self) -> None:
        init_table(self.weight, self.std, self.truncated)
        self._fill_padding_idx_with_zero()


class RMSNorm(nn.Module):
    """RMSNorm (LLaMA), computed in fp32 and cast back before the weight multiply (as the official
    TransformerPlus); eps 1e-5 as the release."""

    def __init__(self, d: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return y.to(x.dtype) * self.weight


def io_linear(cfg: "EncoderConfig", d_in: int, d_out: int, identity_cols: int, gain: float = 1.0) -> Linear:
    """The linear maps around the backbone: item input -> d_model (`proj1` in the release) and
    d_model -> item_dim before the tied softmax (`proj2`).

    The release builds both as nn.Linear with PyTorch's init: the path that copies a history item's own
    embedding to the output (what repeat-heavy click logs reward most) then starts as a random map that
    training must first undo. The learning default starts that path as the identity instead: the item-id
    block of the input projection (`identity_cols` = item_dim, `gain` sqrt(d_model): the Transformer's
    embedding scale, Vaswani et al. 2017 section 3.4, which SASRec's own code keeps) and the head
    (`identity_cols` = d_model) are `eye`, so at init the head reads back the item embedding the
    backbone's residual stream carries, above the blocks' own initial outputs."""
    if cfg.release:
        return Linear(d_in, d_out, bias=True, std=None)
    return Linear(d_in, d_out, bias=False, std=cfg.init_std, identity_cols=identity_cols, gain=gain)


def final_norm(cfg: "EncoderConfig") -> nn.Module:
    """RMSNorm on the output of a backbone the release leaves unnormalized (Trm++, HSTU, Mamba4Rec):
    the tied softmax's logits are then on the scale SASRec's and GRU4Rec's final norms give, not set by
    the raw residual stream's small init scale. The release: none (an Identity, no parameters)."""
    return nn.Identity() if cfg.release else RMSNorm(cfg.d_model)


def zero_padding(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero the padded positions (right padding: they never precede a valid one)."""
    return x * mask.unsqueeze(-1).to(x.dtype)
