"""The splice: soft vectors land exactly in their slots, tokens keep their embeddings, labels mask the prompt."""
from __future__ import annotations

import json

import pytest
import torch

from uqa_ray.align.soft_prompt import IGNORE, MARKER, EncodedChat, build_inputs, encode_chat, llm_kwargs
from uqa_ray.data.schema import parse_chat
from uqa_ray.io import InputError
from tests.align.tiny_lm import QUESTIONS


def _soft(n, s, h, seed=0):
    return torch.randn(n, s, h, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("placement", ["prefix", "user_turn"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_splice_row_by_row(llm_tok, placement, side):
    model, tok = llm_tok
    emb = model.get_input_embeddings()
    chats = [encode_chat(tok, q, placement) for q in QUESTIONS]
    soft = _soft(len(chats), 3, emb.embedding_dim)
    inp = build_inputs(chats, soft, emb, tok.pad_token_id, padding_side=side)
    width = inp["inputs_embeds"].shape[1]
    for b, c in enumerate(chats):
        ids = [*c.before, *c.after, *c.target]
        n = len(ids) + 3
        start = 0 if side == "right" else width - n
        row = inp["inputs_embeds"][b, start:start + n]
        k = len(c.before)
        assert torch.equal(row[k:k + 3], soft[b])  # the vectors, exactly, in order
        expect = emb(torch.tensor(ids))
        assert torch.equal(torch.cat([row[:k], row[k + 3:]]), expect)  # every token keeps its embedding
        assert inp["attention_mask"][b].sum() == n
        assert inp["attention_mask"][b, start:start + n].all()
        assert inp["soft_mask"][b].nonzero().flatten().tolist() == list(range(start + k, start + k + 3))
        assert inp["position_ids"][b, start:start + n].tolist() == list(range(n))
    if placement == "prefix":
        assert all(c.before == () for c in chats)
    else:
        text = tok.decode(chats[0].before)
        assert text.endswith("<|im_start|>user\n") and MARKER not in tok.decode(chats[0].after)
        assert tok.decode(chats[0].after).startswith("\n\nWhich category")


def test_prompt_is_the_generation_prompt_and_target_the_answer(llm_tok):
    _, tok = llm_tok
    for q in QUESTIONS:
        c = encode_chat(tok, q, "prefix", "answer")
        gen = tok.apply_chat_template(q[:1], tokenize=False, add_generation_prompt=True)
        assert list(c.after) == tok.encode(gen, add_special_tokens=False)
        assert gen.startswith("<|im_start|>system\n")  # the template's default system prompt
        assert tok.decode(c.target) == q[1]["content"] + "<|im_end|>\n"
        # Eval encoding has the same prompt tokens and no target.
        e = encode_chat(tok, q, "prefix", with_answer=False)
        assert e.after == c.after and e.target == () and e.prompt_tokens(1) == len(c.after) + 1


def test_labels_answer_mode_mask_exactly_the_prompt(llm_tok):
    model, tok = llm_tok
    chats = [encode_chat(tok, q, "user_turn", "answer") for q in QUESTIONS]
    inp = build_inputs(chats, _soft(4, 2, model.config.hidden_size), model.get_input_embeddings(), 0, "right")
    for b, c in enumerate(chats):
        lab = inp["labels"][b]
        p = c.prompt_tokens(2)
        assert (lab[:p] == IGNORE).all()
        assert lab[p:p + len(c.target)].tolist() == list(c.target)
        assert (lab[p + len(c.target):] == IGNORE).all()  # padding


def test_labels_official_mode(llm_tok):
    model, tok = llm_tok
    c = encode_chat(tok, QUESTIONS[0], "prefix", "official")
    inp = build_inputs([c], _soft(1, 1, model.config.hidden_size), model.get_input_embeddings(), 0, "right")
    lab = inp["labels"][0]
    p = c.prompt_tokens(1)
    prompt_labelled = [tok.convert_ids_to_tokens(int(t)) for t in lab[:p] if t != IGNORE]
    # system + user + assistant turns: the first <|im_start|> is never predicted (release's shift).
    im_start, im_end = "<|im_start|>", "<|im_end|>"
    assert sorted(prompt_labelled) == sorted([im_start, im_start, im_end, im_end] + [tok.convert_ids_to_tokens(
        tok.encode("\n")[0])] * 2)
    assert lab[0] == IGNORE and lab[1] == IGNORE  # soft slot, first text token
    assert lab[p:].tolist() == list(c.target)
    assert tok.decode(c.target) == "手机<|im_end|>\n"  # answer + closing delimiter + newline


def test_prompt_tokens_without_soft_and_llm_kwargs(llm_tok):
    model, tok = llm_tok
    c = encode_chat(tok, QUESTIONS[1], "prefix", with_answer=False)
    inp = build_inputs([c], None, model.get_input_embeddings(), 0, "left")
    assert inp["inputs_embeds"].shape[1] == len(c.after) and not inp["soft_mask"].any()
    assert set(llm_kwargs(inp)) == {"inputs_embeds", "attention_mask", "position_ids"}


def test_bad_input(llm_tok):
    model, tok = llm_tok
    with pytest.raises(InputError, match="row 7"):
        parse_chat("not json", where="row 7")
    with pytest.raises(InputError, match="unknown role"):
        parse_chat(json.dumps([{"role": "bot", "content": "x"}]))
    assert parse_chat(json.dumps(QUESTIONS[0])) == QUESTIONS[0]
    with pytest.raises(ValueError, match="assistant"):
        encode_chat(tok, QUESTIONS[0][:1], "prefix", with_answer=True)
    with pytest.raises(ValueError, match="placement"):
        encode_chat(tok, QUESTIONS[0], "middle")
    with pytest.raises(ValueError, match="exactly once"):
        encode_chat(tok, [{"role": "user", "content": MARKER + MARKER}], "user_turn", with_answer=False)
    with pytest.raises(ValueError, match=r"soft must be \(B=1"):
        build_inputs([EncodedChat((), (1, 2))], _soft(2, 1, 64), model.get_input_embeddings(), 0)
