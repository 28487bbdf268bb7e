"""The embedded tokenizer: byte-level BPE, special ids, ChatML template, and the AutoTokenizer pitfall."""
from __future__ import annotations

import json

import pytest

from uqa_ray.data.tokenizer import (
    CHAT_TEMPLATE, DEFAULT_SYSTEM, MARKER, SPECIAL_TOKENS, load_tokenizer, train_tokenizer, vocab_size,
)

TEXTS = ["华为 新款 轻薄 手机", "佳安 原装 环保 戒指", "戒指", "手机", "hello world 2024", "Pro Max 12"] * 40
QWEN2_CONFIG = {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "vocab_size": 512,
                "hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
                "intermediate_size": 64}


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok") / "tokenizer"
    train_tokenizer(TEXTS, 512, d)
    return d


def test_special_tokens_and_marker(tok_dir):
    tok = load_tokenizer(tok_dir)
    assert [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == [0, 1, 2]
    assert tok.pad_token == "<|endoftext|>" and tok.pad_token_id == 0  # id 0 = padding in BPE bags too
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == 2
    assert json.loads((tok_dir / "tokenizer_config.json").read_text())[MARKER] is True
    assert vocab_size(tok) == len(tok) <= 512


@pytest.mark.parametrize("text", ["华为 新款 轻薄 手机", "戒指", "hello world 2024", "未见过的字 ünïcödé 🙂"])
def test_round_trip(tok_dir, text):
    tok = load_tokenizer(tok_dir)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text  # byte-level: even unseen characters round-trip
    assert 0 not in ids


def test_frequent_words_are_single_tokens(tok_dir):
    tok = load_tokenizer(tok_dir)
    assert len(tok("手机", add_special_tokens=False)["input_ids"]) == 1
    assert len(tok("1234", add_special_tokens=False)["input_ids"]) == 4  # Qwen2 splits every digit


def test_chat_template_inserts_default_system(tok_dir):
    tok = load_tokenizer(tok_dir)
    msgs = [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "A"}]
    text = tok.apply_chat_template(msgs, tokenize=False)
    assert text == (f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n<|im_start|>user\n你好<|im_end|>\n"
                    "<|im_start|>assistant\nA<|im_end|>\n")
    own = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]
    assert tok.apply_chat_template(own, tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n")
    ids = tok.apply_chat_template(own, tokenize=True, add_generation_prompt=False)
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    assert ids[0] == 1 and ids.count(2) == 2  # <|im_start|> and two <|im_end|> as single special ids


def test_qwen2_config_beside_does_not_change_encodings(tmp_path):
    """The pitfall: AutoTokenizer + a Qwen2 config.json rebuilds the pre-tokenizer. A GPT-2 style
    tokenizer (which Qwen2's regex would split differently) must still encode exactly as trained."""
    from tokenizers import Tokenizer

    d = tmp_path / "llm"
    train_tokenizer(TEXTS, 400, d, pre_tokenizer="bytelevel")
    raw = Tokenizer.from_file(str(d / "tokenizer.json"))
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    del cfg[MARKER]  # the Qwen2 config.json alone must be enough to route to the safe loader
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    (d / "config.json").write_text(json.dumps(QWEN2_CONFIG))
    tok = load_tokenizer(d)
    for text in ["hello world 2024", "Pro Max 12", "华为 手机 12345"]:
        assert tok(text, add_special_tokens=False)["input_ids"] == raw.encode(text, add_special_tokens=False).ids
    assert tok.chat_template == CHAT_TEMPLATE


def test_foreign_folder_goes_through_autotokenizer(tmp_path, tok_dir):
    """A folder without our marker or a Qwen2 config is loaded the standard way (real HF tokenizers)."""
    from transformers import PreTrainedTokenizerFast

    plain = PreTrainedTokenizerFast(tokenizer_file=str(tok_dir / "tokenizer.json"), eos_token="<|im_end|>")
    plain.save_pretrained(tmp_path / "plain")
    tok = load_tokenizer(tmp_path / "plain")
    assert tok("手机")["input_ids"] == load_tokenizer(tok_dir)("手机")["input_ids"]


def test_too_small_vocab(tmp_path):
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(TEXTS, 100, tmp_path / "t")


def test_prompt_text_becomes_a_few_tokens_and_leaves_the_catalog_alone(tmp_path):
    from uqa_ray.questions.render import prompt_text
    from uqa_ray.questions.templates import stem

    plain = train_tokenizer(TEXTS, 1024, tmp_path / "a")
    taught = train_tokenizer(TEXTS, 1024, tmp_path / "b", prompt_text=prompt_text())
    question = stem("DF.last_k", "zh", "cate", k=3)

    def n(tok, text):
        return len(tok(text, add_special_tokens=False)["input_ids"])

    assert n(plain, question) > 3 * len(question) // 2  # byte tokens: ~2-3 per Chinese character
    assert n(taught, question) <= 4  # "用户最后", "3", "次...什么？" (no piece spans the number)
    assert n(plain, DEFAULT_SYSTEM) == 6  # the chat template's own text is always learnt: one token a word
    for name in ("华为 新款 轻薄 手机", "戒指", "Pro Max 12"):  # the catalog's merges come first
        assert plain.tokenize(name) == taught.tokenize(name)  # the same pieces (their ids may move)


def test_prompt_text_never_joins_words_across_a_number_or_value():
    from uqa_ray.questions.render import prompt_text

    text = prompt_text()
    assert "用户第" in text and not any("用户第次" in t for t in text)
    assert not any("{" in t or "}" in t for t in text)
    assert "候选答案：" in text and "标题" in text
