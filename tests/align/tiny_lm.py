"""Shared test material: a small ChatML tokenizer and the tiny Qwen2 default built from it.

Used by tests/align and tests/evaluate (imported as `tests.align.tiny_lm`). The tokenizer is the data
stage's own (`train_tokenizer`: byte-level BPE, <|endoftext|> = 0 = pad, ChatML with a default system
prompt), trained on a small mixed Chinese/English corpus.
"""
from __future__ import annotations

from pathlib import Path

CORPUS = [
    "手机 耳机 连衣裙 运动鞋 口红 笔记本电脑 咖啡 茶叶 猫粮 狗粮 婴儿车 帐篷",
    "The user clicked these items. Which category is the user most interested in?",
    "A B C D option answer category brand shop title next item",
    "You are a helpful assistant. 用户最感兴趣的3个类目 用户近期最感兴趣的 偏好的转移路径是什么",
] * 20


def make_tokenizer(out_dir: Path, vocab_size: int = 400) -> Path:
    from uqa_ray.data.tokenizer import train_tokenizer

    train_tokenizer(CORPUS, vocab_size, out_dir)
    return Path(out_dir)


# --- fixtures (imported by tests/align/conftest.py and tests/evaluate/conftest.py) -----------------
import pytest  # noqa: E402

TINY = dict(layers=2, hidden=64, heads=4, kv_heads=2, intermediate=128)


@pytest.fixture(scope="session")
def tok_dir(tmp_path_factory) -> Path:
    return make_tokenizer(tmp_path_factory.mktemp("tokenizer") / "tok")


@pytest.fixture(scope="session")
def tiny_llm_dir(tok_dir, tmp_path_factory) -> Path:
    from uqa_ray.align.llm import TinyLMConfig, build_tiny_llm

    return build_tiny_llm(tok_dir, tmp_path_factory.mktemp("llm"), TinyLMConfig(**TINY))


@pytest.fixture(scope="session")
def llm_tok(tiny_llm_dir):
    """(model, tokenizer), fp32 on CPU, eval mode. Tests must not modify the weights in place."""
    from uqa_ray.align.llm import load_llm

    return load_llm(tiny_llm_dir, device="cpu")


def chat(question: str, answer: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


QUESTIONS = [
    chat("Which category is the user most interested in? A 手机 B 耳机 C 咖啡 D 茶叶", "手机"),
    chat("next item", "B"),
    chat("用户最感兴趣的3个类目 The user clicked these items. " * 3, "猫粮 狗粮 帐篷"),
    chat("title brand shop", "运动鞋"),
]
