"""The pure-PyTorch chunked SSD equals the naive sequential state-space recurrence."""
from __future__ import annotations

import pytest
import torch

from uqa_ray.encoders.mamba4rec import ssd_chunked


def naive(x, a, b, c):
    """h_t = exp(a_t) h_{t-1} + x_t B_t^T ; y_t = h_t C_t (per head, one group of B/C)."""
    bsz, l, h, p = x.shape
    state = torch.zeros(bsz, h, p, b.shape[-1], dtype=x.dtype)
    ys = []
    for t in range(l):
        state = torch.exp(a[:, t])[:, :, None, None] * state + x[:, t, :, :, None] * b[:, t, None, None, :]
        ys.append((state * c[:, t, None, None, :]).sum(-1))
    return torch.stack(ys, 1)


@pytest.mark.parametrize("length,chunk", [(11, 4), (8, 8), (5, 16), (12, 3)])
def test_chunked_equals_sequential(length, chunk):
    g = torch.Generator().manual_seed(length * 31 + chunk)
    bsz, h, p, n = 2, 3, 4, 5
    x = torch.randn(bsz, length, h, p, generator=g, dtype=torch.float64)
    a = -torch.rand(bsz, length, h, generator=g, dtype=torch.float64) * 2  # A*dt <= 0
    b = torch.randn(bsz, length, n, generator=g, dtype=torch.float64)
    c = torch.randn(bsz, length, n, generator=g, dtype=torch.float64)
    torch.testing.assert_close(ssd_chunked(x, a, b, c, chunk), naive(x, a, b, c), atol=1e-10, rtol=1e-10)


def test_gradients_match_sequential():
    g = torch.Generator().manual_seed(0)
    args = [torch.randn(1, 7, 2, 3, generator=g, dtype=torch.float64),
            -torch.rand(1, 7, 2, generator=g, dtype=torch.float64),
            torch.randn(1, 7, 4, generator=g, dtype=torch.float64),
            torch.randn(1, 7, 4, generator=g, dtype=torch.float64)]
    a1 = [t.clone().requires_grad_() for t in args]
    a2 = [t.clone().requires_grad_() for t in args]
    ssd_chunked(*a1, 3).sum().backward()
    naive(*a2).sum().backward()
    for u, v in zip(a1, a2):
        torch.testing.assert_close(u.grad, v.grad, atol=1e-10, rtol=1e-10)
