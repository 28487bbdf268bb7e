"""The adapter registry is data: one line per adapter (its config, its module, the label tables print).

Targets are "module:Class" strings imported only when an adapter is built, so that reading the registry
(the analysis does, for names and labels) imports no torch. An adapter takes frozen encoder states
(B, T, enc_dim) + mask (B, T) and returns soft tokens (B, n_soft, llm_dim); its config dataclass has
`enc_dim` and `llm_dim` fields. A new adapter is one file under `align/adapters/` and one line here (or
one `register` call, for an adapter that lives outside the package).
"""
from __future__ import annotations

import importlib
from typing import NamedTuple


class Entry(NamedTuple):
    config: str | type  # "module:Class" of its frozen config dataclass (or the class)
    module: str | type  # "module:Class" of its nn.Module (or the class)
    label: str  # its row label in the analysis tables


ADAPTERS: dict[str, Entry] = {
    "mean_pool": Entry("uqa_ray.align.adapters.mean_pool:MeanPoolConfig", "uqa_ray.align.adapters.mean_pool:MeanPool",
                       "Mean Pooling"),  # official: 1 soft token
    "qformer": Entry("uqa_ray.align.adapters.qformer:QFormerConfig", "uqa_ray.align.adapters.qformer:QFormer",
                     "Q-Former"),  # paper table 4: 16 learned queries
    "mlp": Entry("uqa_ray.align.adapters.mlp:MLPConfig", "uqa_ray.align.adapters.mlp:MLPAdapter",
                 "MLP (last states, ours)"),  # ours: last 8 states through a GELU MLP (the embedded default)
}


def register(name: str, entry: Entry) -> None:
    """Add an adapter defined outside this package (a name already taken is an error)."""
    if name in ADAPTERS:
        raise ValueError(f"adapter {name!r} is already registered")
    ADAPTERS[name] = entry


def resolve(target: str | type) -> type:
    """The class a registry target names."""
    if isinstance(target, type):
        return target
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)
