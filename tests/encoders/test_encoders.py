"""Every encoder x input mode: forward/backward, causality, right-padding invariance, OOV ids, config."""
from __future__ import annotations

import pytest
import torch

from uqa_ray.config import ConfigError
from uqa_ray.data.schema import BPE_COLUMNS, ID_COLUMNS
from uqa_ray.encoders import EncoderConfig, build_encoder, preset_config
from uqa_ray.encoders.registry import ENCODERS
from uqa_ray.io import InputError

VOCAB = {c: 40 + i for i, c in enumerate(ID_COLUMNS)} | {"bpe": 30}
SMALL = dict(d_model=32, n_heads=4, gru_hidden=48, mamba_d_state=8, mamba_head_dim=16, mamba_chunk=4,
             hstu_linear_dim=8, hstu_attn_dim=8, max_len=16)
NAMES = list(ENCODERS)
MODES = ["full", "no_text", "no_side"]


def cfg(name, mode="full", **kw):
    return preset_config("tiny", VOCAB, **({"name": name, "input_mode": mode} | SMALL | kw))


def batch(b=3, t=9, k=3, seed=0, lengths=(9, 5, 2)):
    g = torch.Generator().manual_seed(seed)
    out = {c: torch.randint(1, VOCAB[c], (b, t), generator=g) for c in ID_COLUMNS}
    out |= {c: torch.randint(0, VOCAB["bpe"], (b, t, k), generator=g) for c in BPE_COLUMNS}
    out["mask"] = torch.arange(t)[None, :] < torch.tensor(lengths)[:, None]
    for c in ID_COLUMNS + BPE_COLUMNS:
        out[c] = out[c] * (out["mask"] if out[c].dim() == 2 else out["mask"][..., None])
    out["ts"] = torch.cumsum(torch.randint(1, 5000, (b, t), generator=g), 1) * out["mask"]
    return out


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", NAMES)
def test_forward_backward(name, mode):
    torch.manual_seed(0)
    model = build_encoder(cfg(name, mode))
    y = model(batch())
    assert y.shape == (3, 9, 32) and torch.isfinite(y).all()
    y[batch()["mask"]].pow(2).mean().backward()
    grads = [p.grad for p in model.backbone.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.item_input.proj.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", NAMES)
def test_causal(name):
    torch.manual_seed(0)
    model = build_encoder(cfg(name)).eval()
    a = batch(lengths=(9, 9, 9))
    b = batch(seed=1, lengths=(9, 9, 9))
    t = 4
    mixed = {k: torch.cat([a[k][:, : t + 1], b[k][:, t + 1 :]], dim=1) for k in a}
    mixed["ts"] = torch.cat([a["ts"][:, : t + 1], a["ts"][:, t : t + 1] + b["ts"][:, t + 1 :]], dim=1)
    with torch.no_grad():
        ya, ym = model(a), model(mixed)
    torch.testing.assert_close(ya[:, : t + 1], ym[:, : t + 1], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(ya[:, t + 1 :], ym[:, t + 1 :])  # the later inputs do matter


@pytest.mark.parametrize("name", NAMES)
def test_right_padding_does_not_change_valid_outputs(name):
    torch.manual_seed(0)
    model = build_encoder(cfg(name)).eval()
    x = batch()
    padded = {k: torch.cat([v, torch.zeros_like(v[:, :5])], dim=1) for k, v in x.items()}
    with torch.no_grad():
        y, yp = model(x), model(padded)
        alone = model({k: v[2:3, :2] for k, v in x.items()})  # the 2-click row without the others
    m = x["mask"]
    torch.testing.assert_close(y[m], yp[:, :9][m], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(alone[0], y[2, :2], atol=1e-5, rtol=1e-5)


def test_hstu_relative_bias_is_applied_when_asked_and_off_by_default():
    x = batch()
    assert all(blk.rab is None for blk in build_encoder(cfg("hstu")).backbone.blocks)
    torch.manual_seed(0)
    model = build_encoder(cfg("hstu", use_rel_bias=True)).eval()
    with torch.no_grad():
        y = model(x)
        y_no_ts = model({k: v for k, v in x.items() if k != "ts"})
        for blk in model.backbone.blocks:
            blk.rab.pos_w.add_(0.5)
        y_pos = model(x)
    assert not torch.allclose(y, y_no_ts)  # time bias used when timestamps are given
    assert not torch.allclose(y, y_pos)  # position bias used
    torch.manual_seed(0)
    official = build_encoder(cfg("hstu", release=True, use_rel_bias=True)).eval()
    assert all(blk.rab is None for blk in official.backbone.blocks)
    with torch.no_grad():
        torch.testing.assert_close(official(x), official({k: v for k, v in x.items() if k != "ts"}))


def test_bags_mean_excludes_padding():
    model = build_encoder(cfg("trm_pp"))
    bags = model.item_input.bpe
    ids = torch.tensor([[3, 5, 0, 0], [3, 5, 5, 0], [0, 0, 0, 0]])
    out = bags(ids)
    w = bags.weight.detach()
    torch.testing.assert_close(out[0], (w[3] + w[5]) / 2)
    torch.testing.assert_close(out[1], (w[3] + 2 * w[5]) / 3)
    assert out[2].abs().sum() == 0


def test_official_input_width():
    widths = {m: build_encoder(cfg("gru4rec", m, item_dim=128, side_dim=64)).item_input.in_dim for m in MODES}
    assert widths == {"full": 704, "no_text": 384, "no_side": 128}


def test_out_of_vocabulary_id_is_a_clear_error():
    model = build_encoder(cfg("trm_pp"))
    x = batch()
    x["uni_seq_brand_id"][0, 0] = VOCAB["uni_seq_brand_id"]
    with pytest.raises(InputError, match=r"uni_seq_brand_id.*out-of-vocabulary id 42"):
        model(x)
    x = batch()
    x["uni_seq_title_bpe_token_ids"][1, 1, 1] = 999
    with pytest.raises(InputError, match=r"uni_seq_title_bpe_token_ids.*999"):
        model(x)
    x = batch()
    del x["uni_seq_shop_id"]
    with pytest.raises(InputError, match="uni_seq_shop_id"):
        model(x)


def test_official_defaults_and_validation():
    assert (EncoderConfig(name="sasrec").n_layers, EncoderConfig(name="sasrec").n_heads) == (6, 8)
    assert (EncoderConfig().name, EncoderConfig().n_layers, EncoderConfig().n_heads) == ("trm_pp", 4, 4)
    with pytest.raises(ConfigError, match="unknown encoder"):
        preset_config("tiny", VOCAB, name="bert4rec")
    with pytest.raises(ConfigError, match="n_heads"):
        preset_config("tiny", VOCAB, d_model=30, n_heads=4)
    with pytest.raises(ConfigError, match="vocab lacks"):
        preset_config("tiny", {"uni_seq_item_id": 10})
    assert preset_config("tiny", {"uni_seq_item_id": 10}, input_mode="no_side").input_mode == "no_side"
    with pytest.raises(ConfigError, match="input_mode"):
        preset_config("tiny", VOCAB, input_mode="text_only")
