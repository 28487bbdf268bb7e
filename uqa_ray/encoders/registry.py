"""The encoder registry is data: one line per encoder (the class to build and its official depth/heads).

Targets are "module:Class" strings imported only when an encoder is built, so that reading a config
never imports every backbone. A backbone class takes an `EncoderConfig` and implements
`forward(x (B,T,d), mask (B,T) bool, ts (B,T) int64 | None) -> (B,T,d)`; it may define
`validate(cfg)` (a classmethod raising ValueError) for its own constraints.
"""
from __future__ import annotations

import importlib
from typing import NamedTuple


class Entry(NamedTuple):
    target: str  # "module:Class"
    n_layers: int  # official depth (UQABENCH.md section 3), used when EncoderConfig.n_layers == 0
    n_heads: int  # official heads (1 where the encoder has none), used when n_heads == 0
    input_dropout: bool = False  # its own paper drops out the input embeddings (learning default only)
    cosine: bool = False  # its own paper scores items by cosine similarity / temperature (learning default only)


ENCODERS: dict[str, Entry] = {
    "gru4rec": Entry("uqa_ray.encoders.gru4rec:GRU4Rec", n_layers=2, n_heads=1),
    "sasrec": Entry("uqa_ray.encoders.sasrec:SASRec", n_layers=6, n_heads=8, input_dropout=True),
    "mamba4rec": Entry("uqa_ray.encoders.mamba4rec:Mamba4Rec", n_layers=4, n_heads=1),
    "hstu": Entry("uqa_ray.encoders.hstu:HSTU", n_layers=4, n_heads=8, input_dropout=True, cosine=True),
    "trm_pp": Entry("uqa_ray.encoders.trm_pp:TrmPP", n_layers=4, n_heads=4),
}


def backbone_class(name: str) -> type:
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; known: {', '.join(ENCODERS)}")
    module, cls = ENCODERS[name].target.split(":")
    return getattr(importlib.import_module(module), cls)
