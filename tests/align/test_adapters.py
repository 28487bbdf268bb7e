"""Adapters: the official Mean-Pool formula, order-preserving chunks, Q-Former masking, exact save/load."""
from __future__ import annotations

import pytest
import torch

from uqa_ray.align.adapters import ADAPTERS, adapter_config, build_adapter, load_adapter, save_adapter
from uqa_ray.align.adapters.mean_pool import chunk_weights
from uqa_ray.config import ConfigError


def _states(lengths, t=9, d=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    states = torch.randn(len(lengths), t, d, generator=g)
    mask = torch.arange(t).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    return states, mask


def test_mean_pool_equals_official_simple_pooler():
    states, mask = _states([9, 4, 1])
    ad = build_adapter(adapter_config("mean_pool", {"enc_dim": 12, "llm_dim": 7}), seed=0)
    # The release's SimplePooler: project every position, zero the padding, divide by the length.
    x = ad.up_proj(states)
    ref = ((x * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)).unsqueeze(1)
    out = ad(states, mask)
    assert out.shape == (3, 1, 7)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_chunks_keep_time_order_and_are_never_empty():
    mask = torch.arange(10).unsqueeze(0) < torch.tensor([[10], [3], [1]])
    w = chunk_weights(mask, 4)
    assert w.shape == (3, 4, 10)
    torch.testing.assert_close(w.sum(-1), torch.ones(3, 4))
    assert (w[~mask.unsqueeze(1).expand_as(w)] == 0).all()  # no weight on padding
    pos = torch.arange(10.0)
    centers = (w * pos).sum(-1)  # mean click position of each chunk
    assert (centers[:, 1:] >= centers[:, :-1]).all() and (centers[0, 1:] > centers[0, :-1]).all()
    assert torch.equal(w[0, 0, :3] > 0, torch.tensor([True, True, False]))  # 10 clicks: chunk 0 = 0..1
    assert (w[2, :, 0] == 1).all()  # one click feeds all four tokens


@pytest.mark.parametrize("name,over,n", [("mean_pool", {"n_tokens": 3}, 3),
                                         ("qformer", {"n_queries": 5, "d_model": 16, "heads": 2}, 5),
                                         ("mlp", {"n_tokens": 4, "hidden": 8}, 4),
                                         ("mlp", {"n_tokens": 3, "hidden": 8, "pool": "chunks"}, 3)])
def test_padding_invariance_and_shapes(name, over, n):
    ad = build_adapter(adapter_config(name, {"enc_dim": 12, "llm_dim": 7, **over}), seed=0).eval()
    states, mask = _states([6, 2])
    out = ad(states, mask)
    assert out.shape == (2, n, 7) and torch.isfinite(out).all()
    # Garbage in the padding and extra padded columns must not change anything.
    wide = torch.cat([states, 1e3 * torch.randn(2, 4, 12)], 1)
    wide[~torch.cat([mask, torch.zeros(2, 4, dtype=torch.bool)], 1)] = 1e3
    torch.testing.assert_close(ad(wide, torch.cat([mask, torch.zeros(2, 4, dtype=torch.bool)], 1)), out)
    # Left padding gives the same tokens as right padding.
    left = torch.zeros_like(states)
    lmask = torch.zeros_like(mask)
    for b, n_valid in enumerate(mask.sum(1).tolist()):
        left[b, -n_valid:] = states[b, :n_valid]
        lmask[b, -n_valid:] = True
    torch.testing.assert_close(ad(left, lmask), out, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="empty sequence"):
        ad(states, torch.zeros_like(mask))


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_save_load_exact(name, tmp_path):
    cfg = adapter_config(name, {"enc_dim": 12, "llm_dim": 7})
    ad = build_adapter(cfg, seed=3)
    with torch.no_grad():
        for p in ad.parameters():
            p.add_(torch.randn_like(p))  # not the init: a trained-looking state
    save_adapter(ad, tmp_path / "ad")
    back = load_adapter(tmp_path / "ad")
    assert back.cfg == cfg
    sd, sd2 = ad.state_dict(), back.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)
    states, mask = _states([5, 9])
    assert torch.equal(ad.eval()(states, mask), back.eval()(states, mask))
    a, b = build_adapter(cfg, seed=3).state_dict(), build_adapter(cfg, seed=3).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # seeded init is reproducible


def test_mlp_reads_the_last_states_oldest_first():
    states, mask = _states([6, 2], t=7)
    ad = build_adapter(adapter_config("mlp", {"enc_dim": 12, "llm_dim": 7, "n_tokens": 3, "hidden": 8}), seed=0)
    out = ad(states, mask)
    # Row 0 (6 clicks): the states of clicks 3, 4, 5. Row 1 (2 clicks): the oldest repeats: 0, 0, 1.
    torch.testing.assert_close(out[0], ad.proj(states[0, 3:6]))
    torch.testing.assert_close(out[1], ad.proj(states[1, [0, 0, 1]]))
    # Only the picked states matter: changing an older click's state leaves the tokens unchanged.
    older = states.clone()
    older[0, :3] += 5.0
    torch.testing.assert_close(ad(older, mask), out)


def test_config_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown adapter"):
        adapter_config("perceiver")
    with pytest.raises(ConfigError, match="divisible"):
        adapter_config("qformer", {"d_model": 10, "heads": 4})
    with pytest.raises(ConfigError, match="n_tokens"):
        adapter_config("mean_pool", {"n_tokens": 0})
    with pytest.raises(ConfigError, match="pool"):
        adapter_config("mlp", {"pool": "max"})
    from uqa_ray.io import InputError

    with pytest.raises(InputError, match="not a saved adapter"):
        load_adapter(tmp_path)
