"""Strategies: what trains, where gradients reach, and the diverged status on a NaN loss."""
from __future__ import annotations

import copy

import numpy as np
import pyarrow as pa
import pytest
import torch

from uqa_ray.align.adapters import adapter_config, build_adapter
from uqa_ray.align.model import AlignedModel, DivergedError, lm_loss
from uqa_ray.align.soft_prompt import encode_chat
from uqa_ray.data.collate import collate
from uqa_ray.data.schema import ID_COLUMNS, PRETRAIN_SCHEMA, SEQ_COLUMNS
from uqa_ray.encoders import EncoderConfig, build_encoder
from uqa_ray.align.llm import TinyLMConfig, build_tiny_llm, load_llm
from tests.align.tiny_lm import QUESTIONS, TINY

ENC_DIM = 16


def _encoder():
    vocab = {c: 30 for c in ID_COLUMNS} | {"bpe": 400}
    cfg = EncoderConfig(name="trm_pp", d_model=ENC_DIM, n_layers=1, n_heads=2, max_len=16, vocab=vocab,
                        item_dim=8, side_dim=8, dropout=0.1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build_encoder(cfg)


def _seq_batch(lengths, seed=0):
    rng = np.random.default_rng(seed)
    rows = [{c: [[int(rng.integers(1, 30))] if c in ID_COLUMNS else rng.integers(1, 400, 2).tolist()
                 for _ in range(n)] for c in SEQ_COLUMNS} for n in lengths]
    return collate(pa.Table.from_pylist(rows, schema=PRETRAIN_SCHEMA), max_len=16)


def _model(llm_tok, strategy, adapter="mean_pool"):
    llm, tok = llm_tok
    over = {"enc_dim": ENC_DIM, "llm_dim": llm.config.hidden_size}
    if adapter == "qformer":
        over |= {"n_queries": 4, "d_model": 16, "heads": 2, "layers": 1}
    ad = build_adapter(adapter_config(adapter, over), seed=0)
    return AlignedModel(_encoder(), ad, copy.deepcopy(llm), strategy, pad_id=tok.pad_token_id), tok


def _batch(tok, placement="prefix"):
    return {"seq": _seq_batch([5, 9, 2, 7]), "chats": [encode_chat(tok, q, placement) for q in QUESTIONS]}


@pytest.mark.parametrize("strategy", ["adapter", "full", "lora"])
def test_gradients_reach_exactly_the_trainable_parts(llm_tok, strategy):
    model, tok = _model(llm_tok, strategy)
    model.train()
    assert not model.encoder.training  # frozen parts stay in eval mode
    loss = model(_batch(tok))
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is None for n, g in grads.items() if n.startswith("encoder."))
    assert all(g is not None and g.abs().sum() > 0 for n, g in grads.items() if n.startswith("adapter."))
    llm_grads = {n: g for n, g in grads.items() if n.startswith("llm.")}
    if strategy == "adapter":
        assert all(g is None for g in llm_grads.values()) and not model.llm.training
    elif strategy == "full":
        assert all(g is not None for g in llm_grads.values())
    else:  # LoRA: the adapter matrices train, the base weights do not
        lora = {n: g for n, g in llm_grads.items() if "lora_" in n}
        assert lora and all(g is not None for g in lora.values())
        assert all(g is None for n, g in llm_grads.items() if "lora_" not in n)
    trainable = {id(p) for p in model.trainable_parameters()}
    assert trainable == {id(p) for n, p in model.named_parameters() if grads[n] is not None}


def test_adapter_only_fits_a_batch(tok_dir, tmp_path):
    """A real optimisation signal through the frozen LLM: adapter-only loss falls on one batch.

    Needs an LLM whose output depends on its input: the 0.02-std init gives near-uniform logits that no
    prompt can move, so this one is initialised at std 0.2 (a stand-in for a trained LM's sharpness).
    """
    folder = build_tiny_llm(tok_dir, tmp_path, TinyLMConfig(**TINY, init_std=0.2))
    model, tok = _model(load_llm(folder, device="cpu"), "adapter", "qformer")
    batch = {"seq": _seq_batch([5, 9]), "chats": [encode_chat(tok, q, "prefix") for q in QUESTIONS[:2]]}
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=3e-2)
    model.train()
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = model(batch)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0], losses
    assert all(p.grad is None for p in model.llm.parameters())


def test_nan_loss_raises_diverged(llm_tok):
    model, tok = _model(llm_tok, "adapter")
    with torch.no_grad():
        model.adapter.up_proj.weight.fill_(float("nan"))
    with pytest.raises(DivergedError, match="non-finite"):
        model(_batch(tok))


def test_mismatched_dims_and_unknown_strategy(llm_tok):
    llm, tok = llm_tok
    with pytest.raises(ValueError, match="llm_dim"):
        AlignedModel(_encoder(), build_adapter(adapter_config("mean_pool", {"enc_dim": ENC_DIM, "llm_dim": 3})), llm)
    with pytest.raises(ValueError, match="enc_dim"):
        AlignedModel(_encoder(), build_adapter(adapter_config("mean_pool", {"enc_dim": 5, "llm_dim": 64})), llm)
    with pytest.raises(ValueError, match="strategy"):
        _model(llm_tok, "prefix_tuning")
    with pytest.raises(ValueError, match="no labelled token"):
        lm_loss(llm, [encode_chat(tok, QUESTIONS[0], "prefix", "answer", with_answer=False)], None, 0)
