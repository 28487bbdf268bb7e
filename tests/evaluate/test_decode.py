"""Batched one-token decoding and option likelihood equal their batch-1 results (left padding)."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from uqa_ray.align.soft_prompt import encode_chat
from uqa_ray.evaluate.decode import greedy_one_token, next_token_logits, option_loglik, stop_ids
from tests.align.tiny_lm import QUESTIONS

OPTIONS = [["手机", "耳机", "咖啡 茶叶"], ["A", "B", "C", "D"], ["猫粮 狗粮 帐篷", "运动鞋"], ["title brand shop", "x"]]


def _prompts(tok, placement):
    return [encode_chat(tok, q, placement, with_answer=False) for q in QUESTIONS]


def _soft(n, s, h):
    return torch.randn(n, s, h, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("placement,n_soft", [("prefix", 0), ("prefix", 2), ("user_turn", 3)])
def test_greedy_batched_equals_batch_one(llm_tok, placement, n_soft):
    llm, tok = llm_tok
    chats = _prompts(tok, placement)
    soft = _soft(len(chats), n_soft, llm.config.hidden_size) if n_soft else None
    ids, preds = greedy_one_token(llm, tok, chats, soft)
    logits = next_token_logits(llm, tok.pad_token_id, chats, soft)
    for b, c in enumerate(chats):
        i1, p1 = greedy_one_token(llm, tok, [c], None if soft is None else soft[b:b + 1])
        assert int(i1[0]) == int(ids[b]) and p1[0] == preds[b]
        one = next_token_logits(llm, tok.pad_token_id, [c], None if soft is None else soft[b:b + 1])[0]
        torch.testing.assert_close(one, logits[b], atol=1e-4, rtol=0)
        # Independent reference: the full forward of the single row, no padding, no logits_to_keep.
        x = torch.tensor([[*c.before, *c.after]])
        emb = llm.get_input_embeddings()(x)
        if soft is not None:
            k = len(c.before)
            emb = torch.cat([emb[:, :k], soft[b:b + 1], emb[:, k:]], 1)
        with torch.no_grad():
            ref = llm(inputs_embeds=emb).logits[0, -1]
        torch.testing.assert_close(ref, logits[b], atol=1e-4, rtol=0)
        assert int(ref.argmax()) == int(ids[b])


def test_end_token_predicts_empty_string(llm_tok):
    llm, tok = llm_tok
    dead = copy.deepcopy(llm)
    with torch.no_grad():
        dead.model.norm.weight.zero_()  # every logit 0: argmax is token 0 = <|endoftext|> (pad)
    ids, preds = greedy_one_token(dead, tok, _prompts(tok, "prefix")[:2])
    assert ids.tolist() == [0, 0] and preds == ["", ""]
    assert {0, tok.convert_tokens_to_ids("<|im_end|>")} <= stop_ids(llm, tok)


@pytest.mark.parametrize("placement,n_soft", [("prefix", 0), ("user_turn", 2)])
def test_option_loglik_batched_equals_batch_one_and_reference(llm_tok, placement, n_soft):
    llm, tok = llm_tok
    chats = _prompts(tok, placement)
    soft = _soft(len(chats), n_soft, llm.config.hidden_size) if n_soft else None
    scores = option_loglik(llm, tok, chats, OPTIONS, soft)
    chunked = option_loglik(llm, tok, chats, OPTIONS, soft, max_rows=3)
    assert [s.shape[0] for s in scores] == [len(o) for o in OPTIONS]
    for b, c in enumerate(chats):
        one = option_loglik(llm, tok, [c], [OPTIONS[b]], None if soft is None else soft[b:b + 1])[0]
        torch.testing.assert_close(one, scores[b], atol=1e-4, rtol=0)
        torch.testing.assert_close(chunked[b], scores[b], atol=1e-4, rtol=0)
        for j, opt in enumerate(OPTIONS[b]):  # reference: log-softmax over the full unpadded row
            t = tok.encode(opt, add_special_tokens=False)
            x = torch.tensor([[*c.before, *c.after, *t]])
            emb = llm.get_input_embeddings()(x)
            if soft is not None:
                emb = torch.cat([emb[:, :len(c.before)], soft[b:b + 1], emb[:, len(c.before):]], 1)
            with torch.no_grad():
                logp = F.log_softmax(llm(inputs_embeds=emb).logits[0].float(), -1)
            ref = sum(logp[emb.shape[1] - len(t) - 1 + i, tok_id] for i, tok_id in enumerate(t))
            assert abs(float(ref) - float(scores[b][j])) < 1e-4


def test_bad_input(llm_tok):
    llm, tok = llm_tok
    chats = _prompts(tok, "prefix")
    with pytest.raises(ValueError, match="prompts only"):
        greedy_one_token(llm, tok, [encode_chat(tok, QUESTIONS[0])])
    with pytest.raises(ValueError, match="no options"):
        option_loglik(llm, tok, chats[:1], [[]])
    with pytest.raises(ValueError, match="tokenize to nothing"):
        option_loglik(llm, tok, chats[:1], [["", "a"]])
    with pytest.raises(ValueError, match="soft has 1 rows"):
        greedy_one_token(llm, tok, chats, _soft(1, 1, llm.config.hidden_size))


def test_the_scored_batches_share_their_common_head(llm_tok):
    """The reference checks above run through the shared-head path: it is taken for these prompts."""
    from uqa_ray.evaluate.decode import shared_prefix

    _, tok = llm_tok
    turn, plain = _prompts(tok, "user_turn"), _prompts(tok, "prefix")
    assert shared_prefix(turn, soft=True) == len(turn[0].before) > 0  # system turn + the user turn's opening
    assert 0 < shared_prefix(plain, soft=False) < min(len(c.after) for c in plain)
    assert shared_prefix(plain, soft=True) == 0  # soft tokens first: nothing precedes them
    one = plain[:1]
    assert shared_prefix(one, soft=False) == len(one[0].after) - 1  # the last token is scored from
