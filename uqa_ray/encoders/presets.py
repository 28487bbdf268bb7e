"""Size presets are a table: name -> EncoderConfig overrides.

The eight Trm++ sizes are the paper's table 5 (layers, d_model, heads); `PAPER_DENSE` holds the sizes it
quotes (dense backbone only), which tests compare against `count_params`. The other encoders appear at
their official ~20M-class settings (UQABENCH.md section 3). Table 6's sequence lengths are `SEQ_LENS`;
pass `max_len=...` to `preset_config`. Note: the paper's default Trm++ (4 layers, 4 heads, d 512,
FFN 1536; ~13.6M dense) is `trm_pp-official`, although table 5 lists its score under "25M" (8, 512, 8).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from uqa_ray.config import build
from uqa_ray.encoders.config import OFFICIAL_VOCAB, EncoderConfig
from uqa_ray.encoders.registry import ENCODERS
from uqa_ray.io import InputError

TRM_SIZES: dict[str, tuple[int, int, int]] = {  # table 5: (layers, d_model, heads)
    "3.2M": (4, 256, 4),
    "13M": (4, 512, 8),
    "25M": (8, 512, 8),
    "57M": (8, 768, 12),
    "85M": (12, 768, 12),
    "303M": (24, 1024, 8),
    "680M": (24, 1536, 12),
    "1.2B": (24, 2048, 16),
}
PAPER_DENSE: dict[str, float] = {
    "3.2M": 3.2e6, "13M": 13e6, "25M": 25e6, "57M": 57e6,
    "85M": 85e6, "303M": 303e6, "680M": 680e6, "1.2B": 1.2e9,
}
SEQ_LENS = (32, 64, 128, 256, 512)

PRESETS: dict[str, dict[str, Any]] = {
    **{k: {"name": "trm_pp", "n_layers": l, "d_model": d, "n_heads": h} for k, (l, d, h) in TRM_SIZES.items()},
    # The official configurations with this lab's learning default, and with the release's exact modules.
    **{f"{n}-official": {"name": n} for n in ENCODERS},
    **{f"{n}-release": {"name": n, "release": True} for n in ENCODERS},
    # Small enough for CPU tests and `tiny` data.
    "tiny": {"name": "trm_pp", "n_layers": 2, "d_model": 64, "n_heads": 2, "max_len": 64},
}


def preset_config(name: str, vocab: Mapping[str, int] | None = None, /, **overrides: Any) -> EncoderConfig:
    """The preset's EncoderConfig with `vocab` (default: official sizes) and validated overrides."""
    if name not in PRESETS:
        raise InputError(f"unknown encoder preset {name!r}; known: {', '.join(PRESETS)}")
    return build(EncoderConfig, PRESETS[name], {"vocab": dict(vocab or OFFICIAL_VOCAB)}, overrides)



def load_vocab(path: str | Path) -> dict[str, int]:
    """Vocabulary sizes from a prepared folder's meta.json (its "vocab" mapping)."""
    path = Path(path)
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"cannot read vocabulary sizes from {path}: {e}") from e
    vocab = meta.get("vocab") if isinstance(meta, dict) else None
    if not isinstance(vocab, dict) or not all(isinstance(v, int) for v in vocab.values()):
        raise InputError(f"{path}: expected a 'vocab' mapping of column -> integer size")
    return vocab
