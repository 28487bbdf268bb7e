"""Encoder export: a folder any stage loads without Ray or DeepSpeed.

`<dir>/config.json` (the EncoderConfig) + `<dir>/model.safetensors` (fp32 state dict of the
SequenceEncoder), written atomically (a failed save leaves any previous export untouched).
`load_encoder` builds on the meta device and assigns the loaded tensors, so a 1.2B encoder is
materialized once, not twice.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from uqa_ray.config import ConfigError, build, to_dict
from uqa_ray.encoders.base import SequenceEncoder, build_encoder
from uqa_ray.encoders.config import EncoderConfig
from uqa_ray.io import InputError, atomic_path

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT = "uqa-ray-encoder/1"


def save_encoder(model: SequenceEncoder, cfg: EncoderConfig, dir: str | Path) -> Path:
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    with atomic_path(dir) as tmp:
        tmp.mkdir()
        (tmp / CONFIG_FILE).write_text(json.dumps({"format": FORMAT, "encoder": to_dict(cfg)}, indent=2) + "\n")
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": FORMAT})
    return Path(dir)


def load_encoder(dir: str | Path, device: str | torch.device = "cpu") -> tuple[SequenceEncoder, EncoderConfig]:
    dir = Path(dir)
    try:
        meta = json.loads((dir / CONFIG_FILE).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"cannot read encoder config {dir / CONFIG_FILE}: {e}") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InputError(f"{dir / CONFIG_FILE}: not an encoder export (expected format {FORMAT!r})")
    try:
        cfg = build(EncoderConfig, meta["encoder"])
    except ConfigError as e:
        raise InputError(f"{dir / CONFIG_FILE}: {e}") from e
    try:
        state = load_file(str(dir / WEIGHTS_FILE), device=str(device))
    except Exception as e:  # safetensors raises several types for a missing or corrupt file
        raise InputError(f"cannot read encoder weights {dir / WEIGHTS_FILE}: {e}") from e
    with torch.device("meta"):
        model = build_encoder(cfg)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as e:
        raise InputError(f"{dir / WEIGHTS_FILE} does not match its config: {e}") from e
    return model.eval(), cfg
