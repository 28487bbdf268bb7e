"""Mamba4Rec (Liu et al. 2024) with Mamba2 blocks at the official UQABench settings (UQABENCH.md s. 3).

4 pre-norm residual blocks x + dropout(Mamba2(RMSNorm(x))), d_state 128, expand 2, head dim 64, no MLP,
no final norm in the release (an RMSNorm in the learning default, docs/encoders.md). `Mamba2` keeps
mamba_ssm's parameter names and layout (in_proj, conv1d, dt_bias, A_log, D, norm, out_proj; one group),
so weights move between the two implementations. On CUDA with
`mamba_ssm` importable it runs mamba_ssm's fused SSD kernel; otherwise `ssd_chunked`, the same chunked
state-space-duality algorithm in plain PyTorch (Dao & Gu 2024, "ssd_minimal").
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

try:  # the fused Triton kernel (GPU only); the pure path below is the same algorithm
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined as _kernel
except ImportError:  # pragma: no cover - depends on the machine
    _kernel = None


def segsum(x: torch.Tensor) -> torch.Tensor:
    """out[..., i, j] = x[j+1] + ... + x[i] for j <= i, -inf above the diagonal (stable: no
    difference of cumulative sums)."""
    q = x.shape[-1]
    x = x[..., None].expand(*x.shape, q)
    below = torch.ones(q, q, dtype=torch.bool, device=x.device).tril(-1)
    s = torch.cumsum(x.masked_fill(~below, 0), dim=-2)
    return s.masked_fill(~torch.ones(q, q, dtype=torch.bool, device=x.device).tril(), float("-inf"))


def ssd_chunked(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, chunk: int) -> torch.Tensor:
    """y_t = sum_{s<=t} C_t . B_s exp(a_{s+1} + ... + a_t) x_s, computed per chunk.

    x (B, L, H, P) (already times dt), a (B, L, H) (A*dt, <= 0), b and c (B, L, N) (one group).
    """
    bsz, l, h, p = x.shape
    pad = (-l) % chunk
    if pad:  # zero steps at the end: causal, so earlier outputs are unchanged
        x, a = F.pad(x, (0, 0, 0, 0, 0, pad)), F.pad(a, (0, 0, 0, pad))
        b, c = F.pad(b, (0, 0, 0, pad)), F.pad(c, (0, 0, 0, pad))
    nc = (l + pad) // chunk
    x = x.reshape(bsz, nc, chunk, h, p)
    b, c = b.reshape(bsz, nc, chunk, -1), c.reshape(bsz, nc, chunk, -1)
    a = a.reshape(bsz, nc, chunk, h).permute(0, 3, 1, 2)  # (B, H, C, Q)
    a_cs = torch.cumsum(a, dim=-1)
    # 1. within each chunk: a masked (decaying) attention-like product
    decay = torch.exp(segsum(a))  # (B, H, C, Q, Q)
    cb = torch.einsum("bcln,bcsn->bcls", c, b)
    y = torch.einsum("bhcls,bcshp->bclhp", cb.unsqueeze(1) * decay, x)
    # 2. the state each chunk hands on, 3. carried across chunks, 4. read out inside the next chunk
    to_end = torch.exp(a_cs[..., -1:] - a_cs).permute(0, 2, 3, 1)  # (B, C, Q, H)
    states = torch.einsum("bcln,bclhp->bchpn", b, x * to_end[..., None])
    states = torch.cat([torch.zeros_like(states[:, :1]), states], dim=1)
    carry = torch.exp(segsum(F.pad(a_cs[..., -1], (1, 0))))  # (B, H, C+1, C+1)
    states = torch.einsum("bhzc,bchpn->bzhpn", carry, states)[:, :-1]
    from_start = torch.exp(a_cs).permute(0, 2, 3, 1)  # (B, C, Q, H)
    y = y + torch.einsum("bcln,bchpn->bclhp", c, states) * from_start[..., None]
    return y.reshape(bsz, nc * chunk, h, p)[:, :l]


class GatedRMSNorm(RMSNorm):
    """mamba_ssm's RMSNormGated with norm_before_gate=False: RMSNorm(y * SiLU(z))."""

    def forward(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(y * F.silu(z))


class Mamba2(nn.Module):
    def __init__(self, cfg: "EncoderConfig", out_std: float) -> None:
        super().__init__()
        d = cfg.d_model
        self.d_inner = cfg.mamba_expand * d
        self.n, self.p = cfg.mamba_d_state, cfg.mamba_head_dim
        self.h = self.d_inner // self.p
        self.chunk, self.impl = cfg.mamba_chunk, cfg.mamba_impl
        self.in_proj = Linear(d, 2 * self.d_inner + 2 * self.n + self.h, std=cfg.init_std)
        conv_dim = self.d_inner + 2 * self.n
        self.conv1d = nn.Conv1d(conv_dim, conv_dim, cfg.mamba_d_conv, groups=conv_dim, padding=cfg.mamba_d_conv - 1)
        # mamba_ssm's init: dt log-uniform in [1e-3, 1e-1] stored as inverse-softplus; A = -[1, 16].
        dt = torch.exp(torch.rand(self.h) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)).clamp(min=1e-4)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        self.A_log = nn.Parameter(torch.log(torch.empty(self.h).uniform_(1, 16)))
        self.D = nn.Parameter(torch.ones(self.h))
        self.norm = GatedRMSNorm(self.d_inner, eps=1e-5)
        self.out_proj = Linear(self.d_inner, d, std=out_std)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        bsz, l, _ = u.shape
        z, xbc, dt = self.in_proj(u).split([self.d_inner, self.d_inner + 2 * self.n, self.h], dim=-1)
        xbc = F.silu(self.conv1d(xbc.transpose(1, 2))[..., :l].transpose(1, 2))  # causal conv
        x, b, c = xbc.split([self.d_inner, self.n, self.n], dim=-1)
        x = x.reshape(bsz, l, self.h, self.p)
        a = -torch.exp(self.A_log.float())
        if self.impl == "auto" and _kernel is not None and u.is_cuda:
            y = _kernel(x.contiguous(), dt.contiguous(), a, b.unsqueeze(2).contiguous(), c.unsqueeze(2).contiguous(),
                        chunk_size=self.chunk, D=self.D, dt_bias=self.dt_bias, dt_softplus=True)
        else:
            dt = F.softplus(dt.float() + self.dt_bias.float())  # (B, L, H)
            y = ssd_chunked(x.float() * dt[..., None], a * dt, b.float(), c.float(), self.chunk)
            y = (y + x.float() * self.D.float()[:, None]).to(u.dtype)
        return self.out_proj(self.norm(y.reshape(bsz, l, self.d_inner), z))


class Block(nn.Module):
    def __init__(self, cfg: "EncoderConfig") -> None:
        super().__init__()
        self.norm = RMSNorm(cfg.d_model, eps=1e-5)
        self.mixer = Mamba2(cfg, out_std=cfg.init_std / math.sqrt(cfg.n_layers))
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop(self.mixer(self.norm(x)))


class Mamba4Rec(nn.Module):
    @classmethod
    def validate(cls, cfg: "EncoderConfig") -> None:
        d_inner = cfg.mamba_expand * cfg.d_model
        if cfg.mamba_head_dim < 1 or d_inner % cfg.mamba_head_dim:
            raise ValueError(f"mamba4rec: expand*d_model = {d_inner} is not divisible by head dim {cfg.mamba_head_dim}")
        if min(cfg.mamba_d_state, cfg.mamba_d_conv, cfg.mamba_chunk, cfg.mamba_expand) < 1:
            raise ValueError("mamba4rec: d_state, d_conv, chunk and expand must be >= 1")
        if cfg.mamba_impl not in ("auto", "torch"):
            raise ValueError(f"mamba4rec: mamba_impl must be auto or torch, got {cfg.mamba_impl!r}")

    def __init__(self, cfg: "EncoderConfig") -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.final_norm = final_norm(cfg)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, ts: torch.Tensor | None = None) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return self.final_norm(x)
