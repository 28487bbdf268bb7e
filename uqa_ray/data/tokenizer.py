"""The LLM tokenizer: a byte-level BPE trained locally on catalog text, saved as an HF folder.

Layout mirrors Qwen2's tokenizer (the paper's LLM is Qwen2.5-3B-Instruct): NFC normalization,
Qwen2's pre-tokenization regex (every digit its own piece, letter runs such as Chinese words kept
whole) then byte-level BPE, ChatML turns with Qwen2's default system prompt. `<|endoftext|>` is id 0
and the pad token, so that id 0 means padding in the BPE bags of the Arrow files as well.

Known pitfall (transformers 5): `AutoTokenizer.from_pretrained` on a folder that also holds a Qwen2
`config.json` (as the tiny default LLM's folder does) builds `Qwen2Tokenizer`, which REBUILDS the
pre-tokenizer from its own definition instead of reading tokenizer.json. `load_tokenizer` therefore
loads our folders with `PreTrainedTokenizerFast(tokenizer_file=...)`.
"""
from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Iterable, Literal, Sequence

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")  # ids 0, 1, 2
PAD_TOKEN, EOS_TOKEN = "<|endoftext|>", "<|im_end|>"
MARKER = "uqa_ray_tokenizer"
DEFAULT_SYSTEM = "You are a helpful assistant."
CHAT_TEXT = ("system", "user", "assistant", DEFAULT_SYSTEM)  # what CHAT_TEMPLATE writes besides specials
QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
    r"""\s*[\r\n]+|\s+(?!\S)|\s+"""
)
# Qwen2-Instruct's ChatML template: a default system turn when the conversation has none.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\n" + DEFAULT_SYSTEM + "<|im_end|>\\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# Keys of tokenizer_config.json passed back to PreTrainedTokenizerFast when loading our folders.
_CONFIG_KEYS = ("bos_token", "eos_token", "pad_token", "unk_token", "model_max_length", "chat_template",
                "padding_side", "clean_up_tokenization_spaces")


def _backend(pre_tokenizer: str):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    tok = Tokenizer(models.BPE())
    if pre_tokenizer == "qwen2":
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    else:  # GPT-2 byte level (kept as an option; also the tests' witness of the AutoTokenizer pitfall)
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def train_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: str | Path,
                    pre_tokenizer: Literal["qwen2", "bytelevel"] = "qwen2", min_frequency: int = 2,
                    prompt_text: Sequence[str] = ()):
    """Train a byte-level BPE on `texts` (streamed) and save it as an HF tokenizer folder.

    `prompt_text` (the fixed text of the prompts, e.g. questions/render.prompt_text) and the chat
    template's own text (role names, the default system prompt) join the corpus `min_frequency` times
    each, so that BPE may merge every phrase of them; merges among the catalog's far more frequent pairs
    come first and are unchanged. The vocabulary may end below `vocab_size` when the text has fewer
    frequent pairs. Returns the loaded `PreTrainedTokenizerFast`.
    """
    from tokenizers import pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size {vocab_size} is below the byte alphabet + special tokens (259)")
    tok = _backend(pre_tokenizer)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    fixed = [*CHAT_TEXT, *prompt_text] * min_frequency
    tok.train_from_iterator(itertools.chain(texts, fixed), trainer)
    for i, t in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(t) == i, (t, tok.token_to_id(t))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN)
    fast.chat_template = CHAT_TEMPLATE
    out_dir = Path(out_dir)
    fast.save_pretrained(out_dir)
    cfg_path = out_dir / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg[MARKER] = True
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")
    return load_tokenizer(out_dir)


def _is_ours(path: Path) -> bool:
    if not (path / "tokenizer.json").is_file():
        return False
    cfg = _read_json(path / "tokenizer_config.json")
    if cfg.get(MARKER):
        return True
    return _read_json(path / "config.json").get("model_type") == "qwen2"


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def load_tokenizer(path_or_name: str | Path):
    """Our folders (and any tokenizer.json beside a Qwen2 config.json) load as PreTrainedTokenizerFast
    from tokenizer.json itself; anything else through `AutoTokenizer` (e.g. Qwen2.5's by local path)."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    path = Path(path_or_name)
    if path.is_dir() and _is_ours(path):
        cfg = _read_json(path / "tokenizer_config.json")
        kwargs = {k: cfg[k] for k in _CONFIG_KEYS if cfg.get(k) is not None}
        jinja = path / "chat_template.jinja"
        if "chat_template" not in kwargs and jinja.is_file():
            kwargs["chat_template"] = jinja.read_text()
        return PreTrainedTokenizerFast(tokenizer_file=str(path / "tokenizer.json"), **kwargs)
    return AutoTokenizer.from_pretrained(str(path_or_name))


def vocab_size(tokenizer) -> int:
    """Rows the shared BPE table needs: every id the tokenizer can emit, added tokens included."""
    return max(len(tokenizer), max(tokenizer.get_vocab().values()) + 1)
