"""The LLM side: load any Hugging Face causal LM, or build the embedded tiny default once.

`load_llm(path_or_name)` is the one way every stage gets an LLM: a local folder (our tiny default, or a
downloaded checkpoint) or a hub name (Qwen/Qwen2.5-3B-Instruct on a cluster, UQABENCH.md section 4).
fp32 on CPU and bf16 on GPU unless told otherwise.

`build_tiny_llm(tokenizer_dir, out_dir, cfg)` makes the embedded default: a small randomly initialised
`Qwen2ForCausalLM` over the tokenizer from data preparation, saved with `save_pretrained` into
`<out_dir>/tiny-<hash>` where the hash covers the config AND the tokenizer files, so a rerun with the same
inputs reuses the folder and a different tokenizer never silently reuses a model with the wrong vocab.
(Teaching it the task - instruction tuning on Text-k questions - is a later stage that starts from here.)
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from uqa_ray.align.lm_cache import tokenizer_fingerprint
from uqa_ray.config import content_hash, to_dict
from uqa_ray.io import InputError, atomic_path

TINY_INFO_FILE = "uqa_tiny_llm.json"  # written beside the model: config + tokenizer fingerprint


@dataclasses.dataclass(frozen=True)
class TinyLMConfig:
    """Shape of the embedded default LLM. The issue's measurements used 2 layers x 128 wide (486k params)."""

    layers: int = 2
    hidden: int = 128
    heads: int = 4
    kv_heads: int = 2  # grouped-query attention, as in Qwen2.5
    intermediate: int = 512
    max_positions: int = 4096
    rope_theta: float = 10000.0
    init_std: float = 0.02
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("layers", "hidden", "heads", "kv_heads", "intermediate", "max_positions"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.hidden % self.heads:
            raise ValueError(f"hidden {self.hidden} is not divisible by heads {self.heads}")
        if self.heads % self.kv_heads:
            raise ValueError(f"heads {self.heads} is not divisible by kv_heads {self.kv_heads}")
        if (self.hidden // self.heads) % 2:
            raise ValueError(f"head dim {self.hidden // self.heads} must be even for rotary embeddings")
        if not self.init_std > 0:
            raise ValueError(f"init_std must be > 0, got {self.init_std}")


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    # bf16 on GPU as the official alignment runs (FSDP bf16); fp32 on CPU where bf16 matmuls are slow
    # and the batch-1 / batched equality tests need full precision.
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def load_tokenizer_for(path_or_name: str | Path):
    """The tokenizer of an LLM folder or hub name, loaded through the data stage's `load_tokenizer`.

    Pitfall this avoids: `AutoTokenizer` on a folder whose config.json says Qwen2 builds a
    Qwen2TokenizerFast and swaps our byte-level pre-tokenizer, so our own folders must be loaded as
    PreTrainedTokenizerFast - which `load_tokenizer` does.
    """
    from uqa_ray.data.tokenizer import load_tokenizer

    tok = load_tokenizer(path_or_name)
    if tok.pad_token_id is None:
        # Padding positions are masked out everywhere; any id works, eos is the usual choice.
        tok.pad_token = tok.eos_token
    if tok.pad_token_id is None:
        raise InputError(f"{path_or_name}: tokenizer has neither a pad nor an eos token")
    return tok


def load_llm(
    path_or_name: str | Path,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    attn_implementation: str | None = None,
) -> tuple[Any, Any]:
    """(model, tokenizer) for any HF causal LM by local folder or hub name; the model is in eval mode.

    `attn_implementation` is passed through ("sdpa" by default in transformers; "flash_attention_2"
    on a GPU cluster as the official code uses).
    """
    from transformers import AutoModelForCausalLM

    device = torch.device(device) if device is not None else default_device()
    dtype = dtype or default_dtype(device)
    local = Path(path_or_name)
    if local.exists() and not (local / "config.json").is_file():
        raise InputError(f"{local}: not an LLM folder (no config.json)")
    kwargs: dict[str, Any] = {"dtype": dtype}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path_or_name), **kwargs)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot load LLM {path_or_name!s}: {e}") from e
    tok = load_tokenizer_for(path_or_name)
    if model.get_input_embeddings().num_embeddings < len(tok):
        raise InputError(
            f"{path_or_name}: tokenizer has {len(tok)} tokens but the model embeds only "
            f"{model.get_input_embeddings().num_embeddings}"
        )
    return model.to(device).eval(), tok


def tiny_llm_dir(tokenizer_dir: str | Path, out_dir: str | Path, cfg: TinyLMConfig = TinyLMConfig()) -> Path:
    """Where `build_tiny_llm` puts (or finds) the model for this tokenizer and config."""
    fp = tokenizer_fingerprint(Path(tokenizer_dir))
    return Path(out_dir) / f"tiny-{content_hash(cfg, fp)}"


def build_tiny_llm(tokenizer_dir: str | Path, out_dir: str | Path, cfg: TinyLMConfig = TinyLMConfig()) -> Path:
    """Create (once) and save the tiny Qwen2 default; return its folder, loadable with `load_llm`."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer_dir = Path(tokenizer_dir)
    if not tokenizer_dir.is_dir():
        raise InputError(f"tokenizer folder {tokenizer_dir} does not exist")
    folder = tiny_llm_dir(tokenizer_dir, out_dir, cfg)
    if (folder / TINY_INFO_FILE).is_file():
        return folder  # built before with the same config and tokenizer: reuse
    tok = load_tokenizer_for(tokenizer_dir)
    eos = tok.convert_tokens_to_ids("<|im_end|>") if "<|im_end|>" in tok.get_vocab() else tok.eos_token_id
    config = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=cfg.hidden,
        intermediate_size=cfg.intermediate,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        num_key_value_heads=cfg.kv_heads,
        max_position_embeddings=cfg.max_positions,
        rope_theta=cfg.rope_theta,
        initializer_range=cfg.init_std,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=eos,  # the end of an assistant turn, as Qwen2.5-Instruct's generation config
        pad_token_id=tok.pad_token_id,
    )
    # HF initialises from the global RNG; fork it so that building a model never shifts the caller's
    # random stream, and seed it so the same config gives the same weights.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = Qwen2ForCausalLM(config)
    with atomic_path(folder) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        info = {"tiny_lm_config": to_dict(cfg), "tokenizer_dir": str(tokenizer_dir),
                "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer_dir),
                "parameters": sum(p.numel() for p in model.parameters()),
                "taught": None}  # the instruction-tuning stage records what it taught here
        (tmp / TINY_INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return folder
