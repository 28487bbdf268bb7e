"""Soft prompts: splice adapter vectors into a chat prompt through `inputs_embeds`, with masked labels.

Placement (UQABENCH.md section 4):
  prefix     official: the soft tokens stand before the whole chat prompt, system turn included
             (`torch.cat([user_embeds, word_embeds])` in the release's models/align.py).
  user_turn  not official: inside the user turn, where a Text-k history would stand, at `MARKER` (put in
             front of the question by USER_TURN_LAYOUT if absent; the marker never reaches the tokenizer).

The prompt is the tokenizer's own chat template rendered with `add_generation_prompt=True` (exactly what
generation sees); the target is the rest of the full rendered chat ("<answer><|im_end|>\n" for ChatML),
tokenized on its own, so training and evaluation share the prompt tokens bit for bit.

Labels (IGNORE = -100 carries no loss; soft positions never do):
  official  as the release's dataloader.preprocess: the answer, its closing <|im_end|> and newline, plus
            the <|im_start|>, <|im_end|> and newline of every prompt turn (role names, system text and the
            question carry none); the first text token gets none either, as the release shifts labels past
            the soft tokens (`logits[offset:-1]` vs `labels[1:]`). Needs ChatML special tokens.
  answer    only the answer tokens and the closing delimiter (the target); works with any template.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import torch

IGNORE = -100
MARKER = "<<user-embedding>>"  # plain text, removed before tokenization; never a token itself
# Where a Text-k history stands (questions/render.py: history, a blank line, then the question).
USER_TURN_LAYOUT = "{marker}\n\n{content}"
PLACEMENTS = ("prefix", "user_turn")
LABEL_MODES = ("official", "answer")


@dataclasses.dataclass(frozen=True)
class EncodedChat:
    """One tokenized chat: before + [soft slot] + after + target."""

    before: tuple[int, ...]  # prompt tokens before the soft slot (empty for `prefix`)
    after: tuple[int, ...]  # prompt tokens after the slot, ending with the generation prompt
    target: tuple[int, ...] = ()  # answer + closing delimiter (training), an option (likelihood), () (decode)
    prompt_labels: tuple[int, ...] | None = None  # `official` labels over before + after, else None

    def __post_init__(self) -> None:
        if self.prompt_labels is not None and len(self.prompt_labels) != len(self.before) + len(self.after):
            raise ValueError("prompt_labels must have one entry per prompt token")

    def prompt_tokens(self, n_soft: int) -> int:
        """Tokens the LLM reads before answering (table 7's prompt length)."""
        return len(self.before) + n_soft + len(self.after)

    def with_target(self, target: Sequence[int]) -> "EncodedChat":
        """The same prompt with another continuation and no prompt loss (option likelihood)."""
        return EncodedChat(self.before, self.after, tuple(int(t) for t in target), None)


def _ids(tokenizer: Any, text: str) -> list[int]:
    # The rendered template already holds every special token; never let the tokenizer add more.
    return list(tokenizer.encode(text, add_special_tokens=False)) if text else []


def _render(tokenizer: Any, messages: list[dict[str, str]], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def _official_labels(tokenizer: Any, ids: list[int]) -> list[int]:
    vocab = tokenizer.get_vocab()
    if "<|im_start|>" not in vocab or "<|im_end|>" not in vocab:
        raise ValueError("label_mode 'official' needs a ChatML tokenizer (<|im_start|>, <|im_end|>)")
    im_start, im_end = vocab["<|im_start|>"], vocab["<|im_end|>"]
    nl = _ids(tokenizer, "\n")
    nl = nl[0] if len(nl) == 1 else None
    labels = [IGNORE] * len(ids)
    for i, t in enumerate(ids):
        if t in (im_start, im_end) or (i > 0 and ids[i - 1] == im_end and t == nl):
            labels[i] = t
    if labels:
        labels[0] = IGNORE  # the release never predicts the first text token (see module doc)
    return labels


def encode_chat(
    tokenizer: Any,
    messages: list[dict[str, str]],
    placement: str = "prefix",
    label_mode: str = "official",
    with_answer: bool = True,
) -> EncodedChat:
    """Tokenize one chat. The last message may be the assistant's answer: it becomes the target when
    `with_answer`, and is dropped otherwise (decoding, likelihood)."""
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
    if label_mode not in LABEL_MODES:
        raise ValueError(f"label_mode must be one of {LABEL_MODES}, got {label_mode!r}")
    has_answer = bool(messages) and messages[-1]["role"] == "assistant"
    if with_answer and not has_answer:
        raise ValueError("with_answer=True needs the chat to end with an assistant message")
    prompt_msgs = [dict(m) for m in (messages[:-1] if has_answer else messages)]
    if not any(m["role"] == "user" for m in prompt_msgs):
        raise ValueError("the chat has no user message")
    if placement == "user_turn":
        last_user = max(i for i, m in enumerate(prompt_msgs) if m["role"] == "user")
        if not any(MARKER in m["content"] for m in prompt_msgs):
            content = prompt_msgs[last_user]["content"]
            prompt_msgs[last_user]["content"] = USER_TURN_LAYOUT.format(marker=MARKER, content=content)
    prompt = _render(tokenizer, prompt_msgs, generation_prompt=True)
    if placement == "user_turn":
        parts = prompt.split(MARKER)
        if len(parts) != 2:
            raise ValueError(f"the marker {MARKER!r} must occur exactly once in the prompt, "
                             f"found {len(parts) - 1}")
        before, after = _ids(tokenizer, parts[0]), _ids(tokenizer, parts[1])
    else:
        before, after = [], _ids(tokenizer, prompt)
    target: list[int] = []
    if with_answer:
        answer_msgs = prompt_msgs + [dict(messages[-1])]
        full = _render(tokenizer, answer_msgs, generation_prompt=False)
        if not full.startswith(prompt):
            raise ValueError("the chat template does not render the answer as a continuation of the "
                             "generation prompt; cannot separate prompt and answer tokens")
        target = _ids(tokenizer, full[len(prompt):])
        if not target:
            raise ValueError("empty answer")
    labels = _official_labels(tokenizer, before + after) if label_mode == "official" else None
    return EncodedChat(tuple(before), tuple(after), tuple(target), None if labels is None else tuple(labels))


def build_inputs(
    chats: Sequence[EncodedChat],
    soft: torch.Tensor | None,
    embed: torch.nn.Module,
    pad_id: int,
    padding_side: str = "right",
) -> dict[str, torch.Tensor]:
    """Batch chats into `inputs_embeds`, `attention_mask`, `position_ids`, `labels` and `soft_mask`.

    Row b is before + soft[b] (S vectors) + after + target, padded on `padding_side` (right for
    training, left for decoding and likelihood so that every row ends at the last column). Position ids
    count real tokens only (cumsum of the mask), so a left-padded row sees the same positions as alone.
    `soft` is (B, S, H) or None for no soft tokens (S = 0).
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    n = len(chats)
    if n == 0:
        raise ValueError("empty batch")
    s = 0 if soft is None else soft.shape[1]
    if soft is not None and (soft.dim() != 3 or soft.shape[0] != n):
        raise ValueError(f"soft must be (B={n}, S, H), got {tuple(soft.shape)}")
    rows, flags, labs = [], [], []
    for c in chats:
        pl = c.prompt_labels or (IGNORE,) * (len(c.before) + len(c.after))
        rows.append([*c.before, *([pad_id] * s), *c.after, *c.target])
        flags.append([False] * len(c.before) + [True] * s + [False] * (len(c.after) + len(c.target)))
        labs.append([*pl[: len(c.before)], *([IGNORE] * s), *pl[len(c.before):], *c.target])
    width = max(len(r) for r in rows)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    soft_mask = torch.zeros((n, width), dtype=torch.bool)
    attn = torch.zeros((n, width), dtype=torch.long)
    labels = torch.full((n, width), IGNORE, dtype=torch.long)
    for b, (r, f, lab) in enumerate(zip(rows, flags, labs)):
        sl = slice(0, len(r)) if padding_side == "right" else slice(width - len(r), width)
        ids[b, sl] = torch.tensor(r, dtype=torch.long)
        soft_mask[b, sl] = torch.tensor(f, dtype=torch.bool)
        attn[b, sl] = 1
        labels[b, sl] = torch.tensor(lab, dtype=torch.long)
    weight = embed.weight
    ids, soft_mask, attn, labels = (t.to(weight.device) for t in (ids, soft_mask, attn, labels))
    embeds = embed(ids)
    if s:
        # masked_scatter fills the True slots in row-major order, i.e. soft[0, 0], soft[0, 1], ...,
        # soft[1, 0], ...: each row's S slots are consecutive and in order, so row b gets soft[b].
        embeds = embeds.masked_scatter(soft_mask.unsqueeze(-1), soft.to(embeds.dtype))
    position_ids = (attn.cumsum(1) - 1).clamp(min=0)
    return {"inputs_embeds": embeds, "attention_mask": attn, "position_ids": position_ids,
            "labels": labels, "soft_mask": soft_mask}


def llm_kwargs(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The subset of `build_inputs` that an HF causal LM's forward takes."""
    return {k: inputs[k] for k in ("inputs_embeds", "attention_mask", "position_ids")}
