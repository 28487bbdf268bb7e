"""Text-k baselines (paper table 2: Text20, Text50): the same LLM reads the last k clicks as text.

No encoder, no adapter, no soft tokens: the user turn is the Text-k prompt of questions/render.py (the
question's own encoder input, last k clicks, one line per click, a blank line, then the question in the
trial's answer format). The registry is data: a baseline name -> its k.
"""
from __future__ import annotations

from pathlib import Path

BASELINES: dict[str, int] = {
    "text20": 20,  # paper table 2: 1171 prompt tokens, 53.02
    "text50": 50,  # paper table 2: 2498 prompt tokens, 59.32
}


def text_k_messages(data_dir: str | Path, split: str, k: int, answer_format: str) -> list[list[dict]]:
    """The user turn of every question of the split, in row order, with its last-k-click history."""
    from uqa_ray.questions.render import text_k_prompts

    if k < 1:
        raise ValueError(f"a Text-k baseline needs k >= 1, got {k}")
    return [[{"role": "user", "content": p}] for p in text_k_prompts(data_dir, split, k, answer_format)]


def baseline_k(name: str) -> int:
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")
    return BASELINES[name]
