"""Text-k baselines (paper table 2, Text20 / Text50): a user's last k clicks written out as text.

Each click is one line with its title, category, brand and shop, oldest first, followed by the question
prompt. The history is the question's own encoder input (its row of align_data_{split}.arrow), so an
IP/AP question's text history also lacks the held-out next click. The header avoids every routing
substring, so a Text-k prompt still routes to its sub-task. Token counts (paper table 7) use the LLM
tokenizer saved in the prepared folder, without special tokens (the chat template adds its own).
"""
from __future__ import annotations

import string
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow.parquet as pq

from uqa_ray.data.schema import ALIGN_FILES, QUESTIONS_FILES, TOKENIZER_DIR
from uqa_ray.io import InputError
from uqa_ray.questions.source import ATTRS, ITEM_COL, Catalog, load_catalog, open_arrow
from uqa_ray.questions.templates import ATTR_PLURAL, ATTR_WORD, PROMPT_TAIL, TEMPLATES

_LAYOUT = {
    "zh": ("用户最近的{n}条浏览记录（从早到晚）：", "；", "："),
    "en": ("The user's last {n} clicks (oldest first):", "; ", ": "),
}


def _literals(fmt: str, **fill: str) -> list[str]:
    """The text of `fmt` with the named fields filled, cut where another field (a number, a catalog
    value) stands, so that no piece joins words the prompt never writes side by side."""
    pieces = [""]
    for lit, field, _, _ in string.Formatter().parse(fmt):
        pieces[-1] += lit
        if field in fill:
            pieces[-1] += fill[field]
        elif field is not None:
            pieces.append("")
    return [p for p in pieces if p]


def prompt_text() -> list[str]:
    """Every fixed piece of text the LLM reads besides catalog names and numbers: each question template
    with each attribute word, the candidate list's head and tail, the Text-k layout, the attribute words,
    in both languages. The embedded tokenizer is trained on these as well as on the catalog
    (data/prepare.py), as a real LLM's tokenizer has learnt its language: otherwise each Chinese
    character of a question costs two or three byte tokens and the prompt is mostly boilerplate."""
    out = []
    for _, attrs, zh, en in TEMPLATES.values():
        for lang, text in (("zh", zh), ("en", en)):
            for a in attrs:
                word = ATTR_WORD[lang].get(a, "")
                out += _literals(text, attr=word, attrs=ATTR_PLURAL[lang].get(a, word))
    for lang in ("zh", "en"):
        out += [*PROMPT_TAIL[lang], *ATTR_WORD[lang].values(), *(p for x in _LAYOUT[lang] for p in _literals(x))]
    return out


def load_tokenizer(data: str | Path):
    """The LLM tokenizer of a prepared folder (an HF tokenizer.json)."""
    from transformers import PreTrainedTokenizerFast

    path = Path(data) / TOKENIZER_DIR / "tokenizer.json"
    if not path.exists():
        raise InputError(f"{path}: tokenizer file not found")
    return PreTrainedTokenizerFast(tokenizer_file=str(path))


def count_tokens(tokenizer, texts: Sequence[str]) -> np.ndarray:
    """Tokens per text (no special tokens)."""
    enc = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return np.array([len(e) for e in enc], np.int64)


class HistoryRenderer:
    def __init__(self, catalog: Catalog, lang: str = "zh"):
        self.catalog, self.lang = catalog, lang

    @classmethod
    def from_folder(cls, data: str | Path, lang: str = "zh") -> "HistoryRenderer":
        return cls(load_catalog(Path(data)), lang)

    def click(self, item: int) -> str:
        _, sep, colon = _LAYOUT[self.lang]
        words = ATTR_WORD[self.lang]
        parts = []
        for a in ATTRS:
            attr = self.catalog.attrs[a]
            parts.append(f"{words[a]}{colon}{attr.text[attr.key_of_item[item]]}")
        return sep.join(parts)

    def render(self, items: Sequence[int], k: int) -> str:
        """The last k of `items` (oldest first), one numbered line per click."""
        last = list(items)[-k:] if k > 0 else []
        head = _LAYOUT[self.lang][0].format(n=len(last))
        return "\n".join([head] + [f"{i}. {self.click(int(it))}" for i, it in enumerate(last, 1)])


def text_k_prompts(data: str | Path, split: str, k: int, answer_format: str = "letter",
                   lang: str | None = None) -> list[str]:
    """One Text-k prompt per question of a generated split, in question-row order:
    the last k clicks of the question's encoder input, a blank line, then the question prompt."""
    data = Path(data)
    qpath = data / QUESTIONS_FILES[split]
    if not qpath.exists():
        raise InputError(f"{qpath}: file not found (run `uqa-ray questions` first)")
    q = pq.read_table(qpath, columns=["row", "lang", f"prompt_{answer_format}"])
    langs = set(q["lang"].to_pylist())
    renderer = HistoryRenderer.from_folder(data, lang or (langs.pop() if len(langs) == 1 else "zh"))
    prompts = q[f"prompt_{answer_format}"].to_pylist()
    rows = q["row"].to_numpy()
    reader = open_arrow(data / ALIGN_FILES[split])
    out, row = [None] * len(prompts), 0
    where = {int(r): i for i, r in enumerate(rows)}
    for b in range(reader.num_record_batches):
        col = reader.get_batch(b).column(ITEM_COL)
        off = np.concatenate([[0], np.cumsum(col.value_lengths().to_numpy(zero_copy_only=False))])
        items = col.flatten().flatten().to_numpy(zero_copy_only=False)  # one id per click
        for i in range(len(col)):
            if row in where:
                seq = items[max(off[i], off[i + 1] - k) : off[i + 1]]
                out[where[row]] = renderer.render(seq, k) + "\n\n" + prompts[where[row]]
            row += 1
    if any(o is None for o in out):
        raise InputError(f"{qpath}: row {rows[[o is None for o in out]][0]} is not in {ALIGN_FILES[split]}")
    return out
