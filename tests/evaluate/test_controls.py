"""Controls: random embedding of the same norm (seeded, batch-invariant) and the planted-truth oracle."""
from __future__ import annotations

import pytest
import torch

from uqa_ray.evaluate.controls import oracle_soft, random_like


def test_random_like_matches_norms_and_is_seeded_per_row():
    soft = torch.randn(3, 4, 16) * torch.tensor([1.0, 5.0, 0.1]).view(3, 1, 1)
    r = random_like(soft, keys=[10, 11, 12], seed=7)
    torch.testing.assert_close(r.norm(dim=-1), soft.norm(dim=-1))
    assert torch.equal(r, random_like(soft, keys=[10, 11, 12], seed=7))
    # A row's vector depends on (seed, key) only, not on its batch-mates or position in the batch.
    assert torch.equal(random_like(soft[1:2], keys=[11], seed=7)[0], r[1])
    assert not torch.allclose(random_like(soft, keys=[10, 11, 12], seed=8), r)
    cos = torch.nn.functional.cosine_similarity(r, soft, dim=-1)
    assert cos.abs().max() < 0.9  # not the real direction
    with pytest.raises(ValueError, match="keys"):
        random_like(soft, keys=[1], seed=0)


def test_oracle_is_mean_name_embedding(llm_tok):
    llm, tok = llm_tok
    emb = llm.get_input_embeddings()
    names = [["手机", "咖啡 茶叶"], ["猫粮", "帐篷"]]
    out = oracle_soft(emb, tok, names)
    assert out.shape == (2, 2, llm.config.hidden_size) and not out.requires_grad
    ids = tok.encode("咖啡 茶叶", add_special_tokens=False)
    assert len(ids) > 1
    torch.testing.assert_close(out[0, 1], emb.weight[ids].mean(0))
    with pytest.raises(ValueError, match="same positive number"):
        oracle_soft(emb, tok, [["a"], ["a", "b"]])
