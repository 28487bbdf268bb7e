"""Sequence encoders (pure PyTorch: no Ray, no DeepSpeed imports). See base.py and registry.py."""
from uqa_ray.encoders.base import SequenceEncoder, build_encoder, count_params
from uqa_ray.encoders.config import OFFICIAL_VOCAB, EncoderConfig
from uqa_ray.encoders.export import load_encoder, save_encoder
from uqa_ray.encoders.presets import PRESETS, SEQ_LENS, preset_config

__all__ = [
    "EncoderConfig", "OFFICIAL_VOCAB", "PRESETS", "SEQ_LENS", "SequenceEncoder", "build_encoder",
    "count_params", "load_encoder", "preset_config", "save_encoder",
]
