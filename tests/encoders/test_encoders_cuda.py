"""On CUDA: every encoder matches its CPU output and trains under bf16 autocast; chunked CE on GPU; the
library CE kernels (loss.ce liger / cce, where installed) against the exact loss."""
from __future__ import annotations

import pytest
import torch

from uqa_ray.data.schema import BPE_COLUMNS, ID_COLUMNS
from uqa_ray.encoders import build_encoder, preset_config
from uqa_ray.encoders.registry import ENCODERS
from uqa_ray.pretrain.losses import (
    IGNORE, LIBRARY_CE, LossConfig, chunked_cross_entropy, full_cross_entropy, naive_cross_entropy,
)
from uqa_ray.pretrain.metrics import target_ranks
from uqa_ray.pretrain.objective import PretrainObjective

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
VOCAB = {c: 300 for c in ID_COLUMNS} | {"bpe": 200}


def batch(device, b=4, t=24):
    g = torch.Generator().manual_seed(0)
    out = {c: torch.randint(1, 300, (b, t), generator=g) for c in ID_COLUMNS}
    out |= {c: torch.randint(0, 200, (b, t, 4), generator=g) for c in BPE_COLUMNS}
    out["mask"] = torch.arange(t)[None] < torch.tensor([24, 20, 9, 2])[:, None]
    out["ts"] = torch.cumsum(torch.randint(1, 900, (b, t), generator=g), 1)
    for c in ID_COLUMNS:
        out[c] = out[c] * out["mask"]
    return {k: v.to(device) for k, v in out.items()}


@pytest.mark.parametrize("name", list(ENCODERS))
def test_cuda_matches_cpu_and_trains_in_bf16(name):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    cfg = preset_config("tiny", VOCAB, name=name, d_model=64, n_heads=4, gru_hidden=64, mamba_d_state=16,
                        mamba_head_dim=32, mamba_chunk=8, mamba_impl="torch", hstu_linear_dim=16,
                        hstu_attn_dim=16, max_len=32)
    torch.manual_seed(0)
    cpu = build_encoder(cfg).eval()
    gpu = build_encoder(cfg).cuda().eval()
    gpu.load_state_dict(cpu.state_dict())
    with torch.no_grad():
        m = batch("cpu")["mask"]
        torch.testing.assert_close(gpu(batch("cuda")).cpu()[m], cpu(batch("cpu"))[m], atol=2e-4, rtol=2e-4)
    obj = PretrainObjective(cfg, LossConfig(chunk_size=64)).cuda().train()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = obj(batch("cuda"))
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and all(torch.isfinite(p.grad).all()
                                               for p in obj.parameters() if p.grad is not None)


def test_cuda_chunked_ce_equals_naive_and_ranks():
    torch.backends.cuda.matmul.allow_tf32 = False
    g = torch.Generator(device="cuda").manual_seed(0)
    h = torch.randn(300, 32, device="cuda", generator=g)
    w = torch.randn(5000, 32, device="cuda", generator=g)
    t = torch.randint(0, 5000, (300,), device="cuda", generator=g)
    t[::5] = IGNORE
    h1, w1, h2, w2 = (x.clone().requires_grad_() for x in (h, w, h, w))
    a, b = chunked_cross_entropy(h1, w1, t, 777), naive_cross_entropy(h2, w2, t)
    a.backward(), b.backward()
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h1.grad, h2.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(w1.grad, w2.grad, atol=1e-5, rtol=1e-5)
    tgt = torch.randint(1, 5000, (300,), device="cuda", generator=g)
    hq, wq = h.round(), w.round()  # integer scores: exact on both devices, with many ties
    assert torch.equal(target_ranks(hq, wq, tgt, 999).cpu(), target_ranks(hq.cpu(), wq.cpu(), tgt.cpu(), 999))


@pytest.mark.parametrize("kind", ["sampled", "infonce"])
def test_cuda_other_losses(kind):
    cfg = preset_config("tiny", VOCAB, d_model=32, n_heads=2, max_len=32)
    counts = torch.arange(300)
    obj = PretrainObjective(cfg, LossConfig(kind=kind, n_negatives=64, sampler="popularity"), counts).cuda()
    out = obj(batch("cuda"))
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and int(out["n"]) == 23 + 19 + 8 + 1


@pytest.mark.parametrize("name", sorted(LIBRARY_CE))
def test_cuda_library_ce_equals_the_exact_loss_and_trains(name):
    """bf16 inputs, as under DeepSpeed bf16: loss and gradients within bf16's reach of the fp32 softmax of
    the same values; then one objective step with loss.ce = name."""
    pytest.importorskip({"liger": "liger_kernel", "cce": "cut_cross_entropy"}[name])
    g = torch.Generator(device="cuda").manual_seed(0)
    h = (torch.randn(300, 64, device="cuda", generator=g) * 0.5).bfloat16()
    w = (torch.randn(5000, 64, device="cuda", generator=g) * 0.5).bfloat16()
    t = torch.randint(0, 5000, (300,), device="cuda", generator=g)
    t[::5] = IGNORE
    h1, w1 = h.clone().requires_grad_(), w.clone().requires_grad_()
    h2, w2 = h.float().requires_grad_(), w.float().requires_grad_()
    a, b = full_cross_entropy(h1, w1, t, LossConfig(ce=name)), naive_cross_entropy(h2, w2, t)
    (a * 2.0).backward(), (b * 2.0).backward()
    assert abs(a.item() - b.item()) <= 1e-2 * abs(b.item())
    for x, y in ((h1.grad, h2.grad), (w1.grad, w2.grad)):
        assert (x.float() - y).abs().max() <= 5e-2 * y.abs().max()
    assert h1.grad[t == IGNORE].abs().sum() == 0
    cfg = preset_config("tiny", VOCAB, d_model=32, n_heads=2, max_len=32)
    obj = PretrainObjective(cfg, LossConfig(ce=name)).cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = obj(batch("cuda"))
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and obj.encoder.item_input.item_embedding.weight.grad.abs().sum() > 0
