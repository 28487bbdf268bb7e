"""LLM loading and the tiny default: built once per (config, tokenizer), loaded like any HF causal LM."""
from __future__ import annotations

import pytest
import torch

from uqa_ray.align.llm import TINY_INFO_FILE, TinyLMConfig, build_tiny_llm, load_llm
from uqa_ray.config import ConfigError, build
from uqa_ray.io import InputError
from tests.align.tiny_lm import TINY


def test_loads_as_causal_lm_with_our_tokenizer(llm_tok, tok_dir):
    from transformers import PreTrainedTokenizerFast, Qwen2ForCausalLM

    model, tok = llm_tok
    assert isinstance(model, Qwen2ForCausalLM) and not model.training
    assert model.dtype == torch.float32  # CPU default
    assert model.config.tie_word_embeddings
    assert model.get_input_embeddings().weight.data_ptr() == model.get_output_embeddings().weight.data_ptr()
    assert model.get_input_embeddings().num_embeddings == len(tok)
    assert tok.pad_token_id == 0 and tok.convert_ids_to_tokens(0) == "<|endoftext|>"
    assert model.config.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    # The folder's tokenizer is our byte-level BPE, not a Qwen2 tokenizer rebuilt from config.json.
    orig = PreTrainedTokenizerFast.from_pretrained(tok_dir)
    text = "用户最感兴趣的3个类目 12345 A B\n\nC"
    assert tok.encode(text) == orig.encode(text)
    assert tok.chat_template == orig.chat_template


def test_build_reuses_folder_and_is_seeded(tok_dir, tiny_llm_dir, tmp_path):
    cfg = TinyLMConfig(**TINY)
    stamp = (tiny_llm_dir / "model.safetensors").stat().st_mtime_ns
    assert build_tiny_llm(tok_dir, tiny_llm_dir.parent, cfg) == tiny_llm_dir
    assert (tiny_llm_dir / "model.safetensors").stat().st_mtime_ns == stamp  # not rebuilt
    assert (tiny_llm_dir / TINY_INFO_FILE).is_file()
    # Same config in another place -> same weights; another seed -> another folder and weights.
    again = build_tiny_llm(tok_dir, tmp_path / "a", cfg)
    other = build_tiny_llm(tok_dir, tmp_path / "b", TinyLMConfig(**TINY, seed=1))
    assert again.name == tiny_llm_dir.name and other.name != tiny_llm_dir.name
    m0, m1, m2 = (load_llm(p, device="cpu")[0].state_dict() for p in (tiny_llm_dir, again, other))
    assert all(torch.equal(m0[k], m1[k]) for k in m0)
    assert not torch.equal(m0["model.embed_tokens.weight"], m2["model.embed_tokens.weight"])


def test_bad_inputs(tmp_path):
    with pytest.raises(ConfigError, match="divisible"):
        build(TinyLMConfig, {"hidden": 66, "heads": 4})
    with pytest.raises(ConfigError, match="unknown key"):
        build(TinyLMConfig, {"hiden": 64})
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no config.json"):
        load_llm(tmp_path / "empty")
    with pytest.raises(InputError, match="does not exist"):
        build_tiny_llm(tmp_path / "missing", tmp_path / "out")
