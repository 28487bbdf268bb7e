"""Precision choice: fp32 on CPU, bf16 on GPU (`precision: auto`), an explicit choice wins. Tested on the
functions that decide it (`resolve_precision`, `deepspeed_config`) and on the loop's wiring from
`torch.cuda.is_available()` to the DeepSpeed config, with CUDA faked: no GPU needed, no DeepSpeed engine.
"""
from __future__ import annotations

import pytest
import torch

from uqa_ray.config import build, to_dict
from uqa_ray.encoders.config import OFFICIAL_VOCAB
from uqa_ray.pretrain import loop
from uqa_ray.pretrain.config import PretrainConfig
from uqa_ray.pretrain.ds_config import deepspeed_config, resolve_precision


def _cfg(**over) -> PretrainConfig:
    return build(PretrainConfig, {"preset": "tiny", "max_len": 32}, over)


@pytest.mark.parametrize(("precision", "on_gpu", "expected"), [
    ("auto", False, "fp32"), ("auto", True, "bf16"),
    ("fp32", True, "fp32"), ("fp32", False, "fp32"),
    ("bf16", False, "bf16"), ("bf16", True, "bf16"),
])
def test_resolve_precision(precision, on_gpu, expected):
    assert resolve_precision(precision, on_gpu) == expected


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_cpu_config_is_fp32_with_torch_adam(stage):
    ds = deepspeed_config(_cfg(scaling={"zero_stage": stage}), on_gpu=False)
    assert ds["bf16"] == {"enabled": False}
    assert not ds.get("fp16", {}).get("enabled", False)
    assert ds["optimizer"]["params"]["torch_adam"] is True  # no JIT-built fused Adam on CPU
    assert ds["zero_optimization"]["stage"] == stage


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_gpu_config_is_bf16(stage):
    ds = deepspeed_config(_cfg(scaling={"zero_stage": stage}), on_gpu=True)
    assert ds["bf16"] == {"enabled": True}
    assert not ds.get("fp16", {}).get("enabled", False)
    assert "torch_adam" not in ds["optimizer"]["params"]  # DeepSpeed's fused Adam on GPU
    assert ds["zero_optimization"]["stage"] == stage


def test_explicit_precision_wins():
    assert deepspeed_config(_cfg(precision="fp32"), on_gpu=True)["bf16"] == {"enabled": False}
    assert deepspeed_config(_cfg(precision="bf16"), on_gpu=False)["bf16"] == {"enabled": True}


class _Stop(Exception):
    pass


def _config_the_loop_builds(monkeypatch) -> tuple[bool, dict]:
    """Runs `train_loop` up to its `build_engine` call and returns (on_gpu, the DeepSpeed config)."""
    seen = {}

    def fake_build_engine(cfg, enc_cfg, on_gpu, total_steps):
        seen["on_gpu"], seen["ds"] = on_gpu, deepspeed_config(cfg, on_gpu, total_steps)
        raise _Stop

    monkeypatch.setattr(loop, "build_engine", fake_build_engine)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # the CPU path's; keep the test's threads
    cfg_dict = {**to_dict(_cfg()), "_run": {"vocab": dict(OFFICIAL_VOCAB), "steps_per_epoch": 1}}
    with pytest.raises(_Stop):
        loop.train_loop(cfg_dict, session_factory=lambda c: object())
    return seen["on_gpu"], seen["ds"]


def test_loop_on_cpu_builds_fp32(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    on_gpu, ds = _config_the_loop_builds(monkeypatch)
    assert on_gpu is False and ds["bf16"]["enabled"] is False


def test_loop_with_cuda_available_builds_bf16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    on_gpu, ds = _config_the_loop_builds(monkeypatch)
    assert on_gpu is True and ds["bf16"]["enabled"] is True
