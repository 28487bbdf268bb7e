"""Batched evaluation primitives, with or without soft tokens, both LEFT-padded.

`greedy_one_token`: the official rule (UQABENCH.md section 5, release run_generation.py): the LLM greedily
generates exactly ONE token; if that token is an end token (eos, pad or <|im_end|>) the release stops
before appending it, so the prediction is the empty string; otherwise the prediction is the decoded token
(special tokens kept). The scorer then checks `prediction.startswith(gold)`.

`option_loglik` (and `score_prompts`, which also returns the greedy prediction from the same pass):
multiple-choice scoring as lm-eval-harness does it: for each option, the sum of the
log-probabilities of the option's content tokens after the prompt; the argmax is the answer. The option
is tokenized on its own, exactly as the training target is (soft_prompt.encode_chat), so the tokens
scored are the tokens the LLM was trained to produce.

Left padding puts every row's last prompt token in the last column, and the position ids count real
tokens only, so a batched row computes what it would alone (tested to 1e-4 against batch 1). Only the
last logits are computed (`logits_to_keep`), which matters for a 151k-token vocabulary.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

from uqa_ray.align.soft_prompt import EncodedChat, build_inputs, llm_kwargs


def stop_ids(llm: Any, tokenizer: Any) -> set[int]:
    """Token ids the official decoder treats as "generated nothing"."""
    ids = {tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.get_vocab().get("<|im_end|>")}
    eos = getattr(llm.config, "eos_token_id", None)
    ids.update(eos if isinstance(eos, (list, tuple)) else [eos])
    return {int(i) for i in ids if i is not None}


def _check(chats: Sequence[EncodedChat], soft: torch.Tensor | None) -> None:
    if not chats:
        raise ValueError("empty batch")
    if soft is not None and soft.shape[0] != len(chats):
        raise ValueError(f"soft has {soft.shape[0]} rows for {len(chats)} chats")


@torch.no_grad()
def next_token_logits(
    llm: Any, pad_id: int, chats: Sequence[EncodedChat], soft: torch.Tensor | None = None
) -> torch.Tensor:
    """(B, vocab) fp32 logits of the token after each prompt (their `target` must be empty)."""
    _check(chats, soft)
    if any(c.target for c in chats):
        raise ValueError("decoding takes prompts only: encode them with with_answer=False")
    inputs = build_inputs(chats, soft, llm.get_input_embeddings(), pad_id, padding_side="left")
    return llm(**llm_kwargs(inputs), logits_to_keep=1).logits[:, -1].float()


@torch.no_grad()
def greedy_one_token(
    llm: Any, tokenizer: Any, chats: Sequence[EncodedChat], soft: torch.Tensor | None = None
) -> tuple[torch.Tensor, list[str]]:
    """(argmax token ids (B,), predictions) for prompts (their `target` must be empty)."""
    ids = next_token_logits(llm, tokenizer.pad_token_id, chats, soft).argmax(-1).cpu()
    stops = stop_ids(llm, tokenizer)
    preds = ["" if int(t) in stops else tokenizer.decode([int(t)], skip_special_tokens=False) for t in ids]
    return ids, preds


def shared_prefix(chats: Sequence[EncodedChat], soft: bool) -> int:
    """Leading prompt tokens that every chat has in common and that no soft token can influence: the
    tokens before the soft slot (with soft tokens) or before the last prompt token (without). With the
    `user_turn` placement that is the chat template's system turn and the user turn's opening."""
    rows = [c.before if soft else c.after for c in chats]
    limit = min(len(r) for r in rows) - (0 if soft else 1)
    first, n = rows[0], 0
    while n < limit and all(r[n] == first[n] for r in rows):
        n += 1
    return n


def tokenize_options(tokenizer: Any, options: Sequence[Sequence[str]]) -> list[list[tuple[int, ...]]]:
    out = []
    for q, opts in enumerate(options):
        if not opts:
            raise ValueError(f"question {q} has no options")
        ids = [tuple(tokenizer.encode(o, add_special_tokens=False)) for o in opts]
        empty = [o for o, t in zip(opts, ids) if not t]
        if empty:
            raise ValueError(f"question {q}: option(s) {empty!r} tokenize to nothing")
        out.append(ids)
    return out


@torch.no_grad()
def score_prompts(
    llm: Any,
    tokenizer: Any,
    chats: Sequence[EncodedChat],
    options: Sequence[Sequence[str]],
    soft: torch.Tensor | None = None,
) -> tuple[torch.Tensor, list[str], list[torch.Tensor]]:
    """Both scorers from ONE forward pass of each prompt: (greedy ids, official predictions, per-question
    (n_options,) option log-likelihoods).

    The prompts' common head (`shared_prefix`) runs once and its KV cache is repeated for every row; the
    rest of the batch runs once with the cache on; its last logits give the greedy token AND the
    log-probability of every option's first token. Option j of every question then continues from the
    shared cache (right-padded, position ids continuing each row's own count) and the cache is cropped
    back to the prompt before option j + 1, so a question costs one prompt pass plus n_options short
    passes instead of n_options full prompt passes.
    """
    _check(chats, soft)
    if any(c.target for c in chats):
        raise ValueError("decoding takes prompts only: encode them with with_answer=False")
    if len(options) != len(chats):
        raise ValueError(f"{len(options)} option lists for {len(chats)} chats")
    opt_ids = tokenize_options(tokenizer, options)
    pad_id = tokenizer.pad_token_id
    embed = llm.get_input_embeddings()
    shared = shared_prefix(chats, soft is not None)
    cache = None
    if shared:  # the common head runs once, its cache is repeated for every row
        head = (chats[0].before if soft is not None else chats[0].after)[:shared]
        cache = llm(input_ids=torch.tensor([head], device=embed.weight.device), use_cache=True).cache
        cache.batch_repeat_interleave(len(chats))
        chats = [EncodedChat(c.before[shared:], c.after) if soft is not None else EncodedChat((), c.after[shared:])
                 for c in chats]
    inputs = build_inputs(chats, soft, embed, pad_id, padding_side="left")
    kwargs = llm_kwargs(inputs)
    if shared:
        kwargs["attention_mask"] = torch.cat([torch.ones_like(kwargs["attention_mask"][:, :1]).expand(-1, shared),
                                              kwargs["attention_mask"]], 1)
        kwargs["position_ids"] = kwargs["position_ids"] + shared
    out = llm(**kwargs, cache=cache, use_cache=True, logits_to_keep=1)
    first = F.log_softmax(out.logits[:, -1].float(), -1)  # (B, V): greedy token and options' first token
    ids = first.argmax(-1).cpu()
    stops = stop_ids(llm, tokenizer)
    preds = ["" if int(t) in stops else tokenizer.decode([int(t)], skip_special_tokens=False) for t in ids]
    # transformers 5.24 renamed past_key_values -> cache (the old name warns until 5.40).
    cache, attn = out.cache, kwargs["attention_mask"]
    width, device = attn.shape[1], attn.device
    next_pos = kwargs["position_ids"][:, -1:] + 1  # (B, 1): each row's own next position
    n_max = max(len(o) for o in opt_ids)
    scores = torch.full((len(chats), n_max), float("nan"))
    for j in range(n_max):
        # Questions with fewer options get a one-token dummy (pad) whose score is discarded.
        toks = [o[j] if j < len(o) else (pad_id,) for o in opt_ids]
        k = max(len(t) for t in toks)
        x = torch.full((len(toks), k), pad_id, dtype=torch.long)
        m = torch.zeros((len(toks), k), dtype=torch.long)
        for b, t in enumerate(toks):
            x[b, : len(t)] = torch.tensor(t)
            m[b, : len(t)] = 1
        x, m = x.to(device), m.to(device)
        lp = first.gather(1, x[:, :1]).squeeze(1)  # the first option token, from the prompt's last logits
        if k > 1:
            cont = llm(input_ids=x[:, :-1], attention_mask=torch.cat([attn, m[:, :-1]], 1),
                       position_ids=next_pos + torch.arange(k - 1, device=device), cache=cache,
                       use_cache=True)
            logp = F.log_softmax(cont.logits.float(), -1).gather(-1, x[:, 1:].unsqueeze(-1)).squeeze(-1)
            lp = lp + (logp * m[:, 1:]).sum(1)
            # transformers 5: a NEGATIVE argument removes that many tokens (a positive one is refused).
            cache.crop(width - cache.get_seq_length())
        scores[:, j] = lp.cpu()
    return ids, preds, [scores[b, : len(o)] for b, o in enumerate(opt_ids)]


@torch.no_grad()
def option_loglik(
    llm: Any,
    tokenizer: Any,
    chats: Sequence[EncodedChat],
    options: Sequence[Sequence[str]],
    soft: torch.Tensor | None = None,
    max_rows: int | None = None,
) -> list[torch.Tensor]:
    """Per question, a (n_options,) fp32 tensor: sum of log p(option token | prompt, earlier tokens).

    `max_rows` bounds the questions per forward pass (the options share their prompt's KV cache).
    """
    _check(chats, soft)
    if len(options) != len(chats):
        raise ValueError(f"{len(options)} option lists for {len(chats)} chats")
    step = max_rows or len(chats)
    out: list[torch.Tensor] = []
    for s in range(0, len(chats), step):
        part_soft = None if soft is None else soft[s:s + step]
        out += score_prompts(llm, tokenizer, chats[s:s + step], options[s:s + step], part_soft)[2]
    return out
