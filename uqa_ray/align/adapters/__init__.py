"""Adapters: frozen encoder states (B, T, enc_dim) + mask (B, T) -> soft tokens (B, n_soft, llm_dim).

The registry is data (`align/registry.py`: name -> config, module, label). A saved adapter is
a folder with `config.json` ({"adapter": name, "config": {...}}) and `model.safetensors`; loading it
rebuilds the module from the config and loads the weights strictly, so the round trip is exact.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import load_file, save_file

from uqa_ray.align.registry import ADAPTERS, resolve
from uqa_ray.config import build, to_dict
from uqa_ray.io import InputError, atomic_path

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def adapter_name(cfg: Any) -> str:
    for name, entry in ADAPTERS.items():
        if type(cfg) is resolve(entry.config):
            return name
    raise ValueError(f"{type(cfg).__name__} is not a registered adapter config ({sorted(ADAPTERS)})")


def adapter_config(name: str, overrides: Mapping[str, Any] | None = None) -> Any:
    if name not in ADAPTERS:
        raise ValueError(f"unknown adapter {name!r}; registered: {sorted(ADAPTERS)}")
    return build(resolve(ADAPTERS[name].config), overrides)


def build_adapter(cfg: Any, seed: int | None = None) -> torch.nn.Module:
    """The module for a config; `seed` makes the initial weights reproducible without touching the
    caller's global RNG stream."""
    cls = resolve(ADAPTERS[adapter_name(cfg)].module)
    if seed is None:
        return cls(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls(cfg)


def save_adapter(adapter: torch.nn.Module, out_dir: str | Path) -> Path:
    out_dir = Path(out_dir)
    meta = {"adapter": adapter_name(adapter.cfg), "config": to_dict(adapter.cfg)}
    state = {k: v.detach().to("cpu").contiguous() for k, v in adapter.state_dict().items()}
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        save_file(state, str(tmp / WEIGHTS_FILE))
    return out_dir


def load_adapter(path: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    path = Path(path)
    try:
        meta = json.loads((path / CONFIG_FILE).read_text())
        state = load_file(str(path / WEIGHTS_FILE), device=str(device))
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: not a saved adapter ({e})") from e
    if meta.get("adapter") not in ADAPTERS:
        raise InputError(f"{path / CONFIG_FILE}: unknown adapter {meta.get('adapter')!r}")
    adapter = build_adapter(adapter_config(meta["adapter"], meta["config"]))
    try:
        adapter.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise InputError(f"{path / WEIGHTS_FILE}: weights do not match the config: {e}") from e
    return adapter.to(device)
