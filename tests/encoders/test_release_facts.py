"""`release=True` is the official release's modules (UQABENCH.md section 3), fact by fact, and a Trm++
written here from those facts alone gives our outputs, logits and loss from the same weights.

The learning default's departures (docs/encoders.md) are tested beside them, so each fact is pinned both
ways: identity copy path without bias, N(0, std) tables with a zero padding row left out of the softmax,
a final norm on the backbones the release leaves unnormalized, HSTU's cosine scoring
(tests/pretrain/test_losses.py checks what cosine scoring computes).
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from uqa_ray.data.schema import BPE_COLUMNS, ID_COLUMNS
from uqa_ray.encoders import preset_config
from uqa_ray.encoders.layers import RMSNorm
from uqa_ray.encoders.registry import ENCODERS
from uqa_ray.pretrain.objective import PretrainObjective

VOCAB = {c: 3000 + 7 * i for i, c in enumerate(ID_COLUMNS)} | {"bpe": 2000}
SMALL = dict(d_model=32, n_heads=4, gru_hidden=48, mamba_d_state=8, mamba_head_dim=16, mamba_chunk=4,
             hstu_linear_dim=8, hstu_attn_dim=8, max_len=16, dropout=0.3)


def objective(name: str, release: bool, mode: str = "full", **kw) -> PretrainObjective:
    torch.manual_seed(0)
    return PretrainObjective(preset_config(f"{name}-{'release' if release else 'official'}", VOCAB,
                                           input_mode=mode, **(SMALL | kw)))


def batch(b=3, t=10, k=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    out = {c: torch.randint(1, VOCAB[c], (b, t), generator=g) for c in ID_COLUMNS}
    out |= {c: torch.randint(1, VOCAB["bpe"], (b, t, k), generator=g) for c in BPE_COLUMNS}
    out["mask"] = torch.ones(b, t, dtype=torch.bool)
    return out


@pytest.mark.parametrize("name", list(ENCODERS))
def test_item_scoring_dot_in_the_release_cosine_where_the_encoder_own_paper_has_it(name):
    assert not preset_config(f"{name}-release", VOCAB).cosine  # the release scores by dot product
    assert preset_config(f"{name}-official", VOCAB).cosine is (name == "hstu")  # HSTU's own recipe
    assert not preset_config(f"{name}-official", VOCAB, similarity="dot").cosine  # selectable both ways
    assert preset_config(f"{name}-release", VOCAB, similarity="cosine").cosine


def test_presets_pair_every_encoder():
    for name in ENCODERS:
        assert preset_config(f"{name}-release", VOCAB).release
        assert not preset_config(f"{name}-official", VOCAB).release


@pytest.mark.parametrize("name", list(ENCODERS))
def test_io_maps(name):
    rel, ours = objective(name, True), objective(name, False)
    for m in (rel.encoder.item_input.proj, rel.head):
        # nn.Linear's default init: kaiming-uniform weight and uniform bias, both within 1/sqrt(fan_in).
        bound = 1 / math.sqrt(m.in_features)
        assert m.bias is not None and float(m.bias.detach().abs().max()) <= bound
        assert float(m.weight.detach().abs().max()) <= bound
        assert float(m.weight.detach().std()) == pytest.approx(bound / math.sqrt(3), rel=0.1)
    proj, head = ours.encoder.item_input.proj, ours.head
    assert proj.bias is None and head.bias is None
    item = SMALL["d_model"]  # item_dim defaults to 128; the identity block is sqrt(d) eye(d_model, item_dim)
    torch.testing.assert_close(proj.weight[:, :128], math.sqrt(item) * torch.eye(item, 128))
    torch.testing.assert_close(head.weight, torch.eye(128, item))
    assert float(proj.weight.detach()[:, 128:].std()) == pytest.approx(0.02, rel=0.1)


@pytest.mark.parametrize("release", [True, False])
def test_tables(release):
    model = objective("trm_pp", release)
    bpe = model.encoder.item_input.bpe
    # Token id 0 is the tokenizer's pad, never a real token: the bag leaves it out of the mean either way.
    assert bpe.padding_idx == 0 and float(bpe.weight[0].abs().sum()) == 0
    for t in list(model.encoder.item_input.tables.values()) + [bpe]:
        w = t.weight.detach()
        if release:  # truncated normal, sigma 0.02 cut at +-2 sigma (std 0.88 sigma); id tables: row 0 real
            assert t is bpe or (t.padding_idx is None and float(w[0].abs().sum()) > 0)
            assert float(w.abs().max()) <= 0.04
            assert float(w.std()) == pytest.approx(0.02 * 0.8796, rel=0.05)
        else:  # N(0, 0.02): beyond 2 sigma, and a zero padding row
            assert t.padding_idx == 0 and float(w[0].abs().sum()) == 0
            assert float(w.abs().max()) > 0.04
            assert float(w.std()) == pytest.approx(0.02, rel=0.05)


def _first_block_input(model: PretrainObjective, x) -> tuple[torch.Tensor, torch.Tensor]:
    """(what the first block / the GRU receives in training mode, the item input it comes from)."""
    bb = model.encoder.backbone
    first = bb.gru if hasattr(bb, "gru") else bb.blocks[0]
    seen = []
    hook = first.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    model.train()
    model.encoder(x)
    hook.remove()
    want = model.encoder.item_input(x)
    if hasattr(bb, "pos"):  # SASRec adds its learned positions first
        want = want + bb.pos.weight[: want.shape[1]]
    return seen[0], want


@pytest.mark.parametrize("name", list(ENCODERS))
def test_norms_and_dropout_placement(name):
    rel, ours = objective(name, True), objective(name, False)
    for m in rel.modules():
        if isinstance(m, RMSNorm):
            assert m.eps == 1e-5
    x = batch()
    got, want = _first_block_input(rel, x)
    torch.testing.assert_close(got, want)  # the release: no dropout before the first block
    got, want = _first_block_input(ours, x)
    if ENCODERS[name].input_dropout:  # the learning default keeps SASRec's / HSTU's own input dropout
        assert name in ("sasrec", "hstu")
        assert not torch.allclose(got, want)
    else:
        torch.testing.assert_close(got, want)
    if name in ("trm_pp", "hstu", "mamba4rec"):  # unnormalized in the release; RMSNorm in ours
        assert isinstance(rel.encoder.backbone.final_norm, nn.Identity)
        assert isinstance(ours.encoder.backbone.final_norm, RMSNorm)


def test_softmax_rows():
    """Release: every row of the item table is a class (target id k is class k); ours: row 0 is left out."""
    x = batch()
    for release in (True, False):
        model = objective("trm_pp", release, mode="no_side").eval()
        with torch.no_grad():
            q = model.head(model.encoder(x))[:, :-1].reshape(-1, 128)
            w = model.encoder.item_input.item_embedding.weight
            tgt = x["uni_seq_item_id"][:, 1:].reshape(-1)
            want = F.cross_entropy(q @ w.T, tgt) if release else F.cross_entropy(q @ w[1:].T, tgt - 1)
            torch.testing.assert_close(model(x)["loss"], want, rtol=1e-5, atol=1e-6)


class RefRMSNorm(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5)).type_as(x) * self.weight


class RefBlock(nn.Module):
    """TransformerPlus block from UQABENCH.md's facts: pre-norm, RoPE, causal SDPA with dropout_p, SwiGLU,
    hidden dropout on both residual branches, no biases."""

    def __init__(self, d, h, f, p):
        super().__init__()
        self.h, self.p = h, p
        self.wq, self.wk, self.wv, self.wo = (nn.Linear(d, d, bias=False) for _ in range(4))
        self.w1, self.w3, self.w2 = (nn.Linear(d, f, bias=False), nn.Linear(d, f, bias=False),
                                     nn.Linear(f, d, bias=False))
        self.attention_norm, self.ffn_norm = RefRMSNorm(d), RefRMSNorm(d)
        self.drop = nn.Dropout(p)

    def forward(self, x, cos, sin):
        b, t, d = x.shape
        y = self.attention_norm(x)
        q, k, v = (w(y).view(b, t, self.h, -1).transpose(1, 2) for w in (self.wq, self.wk, self.wv))

        def rot(z):
            z1, z2 = z.float().chunk(2, -1)
            return (z.float() * cos + torch.cat([-z2, z1], -1) * sin).type_as(z)

        a = F.scaled_dot_product_attention(rot(q), rot(k), v, is_causal=True,
                                           dropout_p=self.p if self.training else 0.0)
        x = x + self.drop(self.wo(a.transpose(1, 2).reshape(b, t, d)))
        return x + self.drop(self.w2(F.silu(self.w1(self.ffn_norm(x))) * self.w3(self.ffn_norm(x))))


def reference_from(ours: PretrainObjective):
    """The release's Trm++ pretraining model built from the facts, loaded with `ours`'s weights."""
    cfg, enc = ours.enc_cfg, ours.encoder
    d, f = cfg.d_model, enc.backbone.blocks[0].ffn.down.in_features
    blocks = nn.ModuleList(RefBlock(d, cfg.n_heads, f, cfg.dropout) for _ in range(cfg.n_layers))
    for rb, ob in zip(blocks, enc.backbone.blocks):
        wq, wk, wv = ob.attn.qkv.weight.detach().chunk(3, 0)
        w1, w3 = ob.ffn.gate_up.weight.detach().chunk(2, 0)
        for lin, w in [(rb.wq, wq), (rb.wk, wk), (rb.wv, wv), (rb.wo, ob.attn.o.weight), (rb.w1, w1), (rb.w3, w3),
                       (rb.w2, ob.ffn.down.weight)]:
            lin.weight.data.copy_(w)
        rb.attention_norm.weight.data.copy_(ob.norm1.weight)
        rb.ffn_norm.weight.data.copy_(ob.norm2.weight)
    hd = d // cfg.n_heads
    inv = cfg.rope_base ** (-torch.arange(0, hd, 2, dtype=torch.float32) / hd)
    ang = torch.arange(cfg.max_len, dtype=torch.float32)[:, None] * inv[None, :]
    cos, sin = torch.cat([ang, ang], -1).cos(), torch.cat([ang, ang], -1).sin()  # precomputed, fp32
    inp = enc.item_input

    def forward(x):
        parts = [F.embedding(x[c], inp.tables[c].weight) for c in inp.id_columns]
        for c in inp.bpe_columns:
            b, t, k = x[c].shape
            offsets = torch.arange(0, b * t * k + 1, k)
            parts.append(F.embedding_bag(x[c].reshape(-1), inp.bpe.weight, offsets, mode="mean",
                                         include_last_offset=True).reshape(b, t, -1))
        h = F.linear(torch.cat(parts, -1), inp.proj.weight, inp.proj.bias)  # proj1, no input dropout
        t = h.shape[1]
        for blk in blocks:
            h = blk(h, cos[:t], sin[:t])
        logits = F.linear(h, ours.head.weight, ours.head.bias) @ inp.item_embedding.weight.T  # all rows
        tgt = torch.cat([x["uni_seq_item_id"][:, 1:], torch.full_like(x["uni_seq_item_id"][:, :1], -100)], 1)
        return h, logits, F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), ignore_index=-100)

    return blocks, forward


@pytest.mark.parametrize("train", [False, True])
def test_trm_pp_equals_a_reference_written_from_the_facts(train):
    """Eval mode: outputs, logits and loss agree to 1e-5 relative. Training mode, same RNG seed: dropout
    sits in the same places (attention probabilities, both residual branches, nothing on the input)."""
    ours = objective("trm_pp", True, n_layers=2).train(train)
    blocks, ref = reference_from(ours)
    blocks.train(train)
    x = batch()
    torch.manual_seed(7)
    h_ours = ours.encoder(x)
    loss_ours = ours(x)["loss"] if not train else None
    torch.manual_seed(7)
    h_ref, logits, loss_ref = ref(x)
    rel = float((h_ours - h_ref).norm() / h_ref.norm())
    assert rel <= 1e-5, rel
    if not train:
        torch.testing.assert_close(loss_ours, loss_ref, rtol=1e-5, atol=0)
        q = ours.head(h_ours)
        torch.testing.assert_close(q @ ours.item_table().T, logits, rtol=1e-5, atol=1e-7)


def test_gru4rec_residual_only_in_the_learning_default():
    """Release: LN(W drop(h)), W ~ N(0, 0.02); ours: LN(x + W drop(h)) with W starting at zero. With W
    and its bias at zero only ours sees x."""
    x = batch()
    assert float(objective("gru4rec", False).encoder.backbone.out.weight.detach().abs().max()) == 0.0
    assert float(objective("gru4rec", True).encoder.backbone.out.weight.detach().std()) == pytest.approx(0.02, rel=0.1)
    for release in (True, False):
        model = objective("gru4rec", release).eval()
        with torch.no_grad():
            model.encoder.backbone.out.weight.zero_()
            model.encoder.backbone.out.bias.zero_()
            h = model.encoder(x)
            inp = model.encoder.item_input(x)
        if release:
            assert float(h.abs().max()) == 0.0
        else:
            torch.testing.assert_close(h, F.layer_norm(inp, (inp.shape[-1],)))
