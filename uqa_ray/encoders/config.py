"""`EncoderConfig`: the one frozen schema for every encoder (shared fields + per-encoder extras).

Defaults are the official configurations (UQABENCH.md section 3): `n_layers`/`n_heads` of 0 mean the
named encoder's official value (filled in at construction from the registry, so `to_dict` shows real
numbers); `ffn_dim` of 0 stays 0 and means "derive from d_model by the encoder's rule" (Trm++:
256*ceil(8/3*d/256); SASRec: 3*d), so that changing d_model with `config.replace` re-derives it.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

from uqa_ray import vocab
from uqa_ray.data.schema import BPE_COLUMNS, BPE_VOCAB_KEY, ID_COLUMNS
from uqa_ray.encoders.registry import ENCODERS, backbone_class

# Official vocabulary sizes (UQABENCH.md section 2), used when no prepared data's meta.json is given.
OFFICIAL_VOCAB: dict[str, int] = {
    "uni_seq_item_id": 994_447,
    "uni_seq_cate_id": 9_330,
    "uni_seq_brand_id": 149_750,
    "uni_seq_shop_id": 268_446,
    "uni_seq_seller_id": 268_446,
    BPE_VOCAB_KEY: 151_936,
}
INPUT_MODES = tuple(vocab.INPUT_MODES)


def input_columns(mode: str) -> tuple[str, ...]:
    """Columns an input mode reads (table 3: w/o Text drops the BPE columns, w/o Side keeps the item)."""
    return {"full": ID_COLUMNS + BPE_COLUMNS, "no_text": ID_COLUMNS, "no_side": ID_COLUMNS[:1]}[mode]


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    name: str = "trm_pp"
    d_model: int = 512
    n_layers: int = 0  # 0 = the encoder's official depth
    n_heads: int = 0  # 0 = the encoder's official heads
    ffn_dim: int = 0  # 0 = derive from d_model by the encoder's rule
    dropout: float = 0.1
    max_len: int = 512
    input_mode: Literal["full", "no_text", "no_side"] = "full"
    vocab: dict[str, int] = dataclasses.field(default_factory=lambda: dict(OFFICIAL_VOCAB))
    item_dim: int = 128  # item-id table width (official); the output head is tied to it
    side_dim: int = 64  # every other table (official)
    init_std: float = 0.02
    # The official release's exact module facts (UQABENCH.md section 3) where this lab's learning default
    # departs from them (docs/encoders.md): input projection and head as plain nn.Linear (bias, PyTorch
    # init) instead of an identity copy path, truncated-normal tables without a padding row, softmax over
    # every row of the item table, no final norm on Trm++/HSTU/Mamba4Rec, HSTU without its (never
    # applied) relative bias. The `*-release` presets set it.
    release: bool = False
    # How the next-item head scores items: dot product (the release), or cosine similarity over a
    # temperature (HSTU's own recipe: L2-normalised query and item embeddings). "auto" is the encoder's
    # learning default (registry `cosine`), always "dot" with `release`.
    similarity: Literal["auto", "dot", "cosine"] = "auto"
    temperature: float = 0.1  # cosine similarity only (docs/encoders.md: measured)
    # GRU4Rec
    gru_hidden: int = 1024
    # Mamba4Rec (Mamba2 blocks)
    mamba_d_state: int = 128
    mamba_expand: int = 2
    mamba_head_dim: int = 64
    mamba_d_conv: int = 4
    mamba_chunk: int = 64  # SSD chunk length of the pure-PyTorch path
    mamba_impl: Literal["auto", "torch"] = "auto"  # auto: mamba_ssm's Triton kernel on CUDA if importable
    # HSTU (per-head widths, as in the official HSTU code)
    hstu_linear_dim: int = 256
    hstu_attn_dim: int = 256
    hstu_time_buckets: int = 128
    use_rel_bias: bool = False  # off as in the official run (hstu.py); docs/encoders.md: measured
    # Trm++
    rope_base: float = 10000.0

    @property
    def input_dropout(self) -> float:
        """Dropout on the input embeddings where the backbone's own paper has one: SASRec (Kang &
        McAuley 2018) and HSTU (its input preprocessor, Zhai et al. 2024). The release has none
        (UQABENCH.md section 3), nor do the other backbones."""
        return self.dropout if ENCODERS[self.name].input_dropout and not self.release else 0.0

    @property
    def cosine(self) -> bool:
        """Whether the head scores items by cosine similarity / `temperature` (see `similarity`)."""
        if self.similarity == "auto":
            return ENCODERS[self.name].cosine and not self.release
        return self.similarity == "cosine"

    def __post_init__(self) -> None:
        if self.name not in ENCODERS:
            raise ValueError(f"name: unknown encoder {self.name!r}; known: {', '.join(ENCODERS)}")
        entry = ENCODERS[self.name]
        if self.n_layers == 0:
            object.__setattr__(self, "n_layers", entry.n_layers)
        if self.n_heads == 0:
            object.__setattr__(self, "n_heads", entry.n_heads)
        for f in ("d_model", "n_layers", "n_heads", "max_len", "item_dim", "side_dim"):
            if getattr(self, f) < 1:
                raise ValueError(f"{f} must be >= 1, got {getattr(self, f)}")
        if self.ffn_dim < 0:
            raise ValueError(f"ffn_dim must be >= 0 (0 = derived), got {self.ffn_dim}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.input_mode not in INPUT_MODES:
            raise ValueError(f"input_mode must be one of {INPUT_MODES}, got {self.input_mode!r}")
        if self.similarity not in ("auto", "dot", "cosine"):
            raise ValueError(f"similarity must be auto, dot or cosine, got {self.similarity!r}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.init_std <= 0:
            raise ValueError(f"init_std must be > 0, got {self.init_std}")
        need = [c for c in input_columns(self.input_mode) if c in ID_COLUMNS]
        if self.input_mode == "full":
            need.append(BPE_VOCAB_KEY)
        missing = [k for k in need if k not in self.vocab]
        if missing:
            raise ValueError(f"vocab lacks {missing} needed by input_mode {self.input_mode!r}")
        small = {k: v for k, v in self.vocab.items() if k in need and (not isinstance(v, int) or v < 2)}
        if small:
            raise ValueError(f"vocab sizes must be integers >= 2 (id 0 is padding), got {small}")
        validate = getattr(backbone_class(self.name), "validate", None)
        if validate is not None:
            validate(self)
