"""The pretraining lr schedule (OptimConfig.schedule): DeepSpeed's own schedulers, wired by ds_config and
stepped by the engine. One real DeepSpeed engine in a child process (a world of one, gloo)."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from uqa_ray.config import build
from uqa_ray.pretrain.config import PretrainConfig
from uqa_ray.pretrain.ds_config import deepspeed_config
from uqa_ray.pretrain.loop import total_optimizer_steps


def _cfg(**optim) -> PretrainConfig:
    return build(PretrainConfig, {"preset": "tiny", "max_len": 32, "optim": {"lr": 1e-3, "epochs": 2, **optim}})


def test_schedule_config_and_its_length():
    assert "scheduler" not in deepspeed_config(_cfg(), on_gpu=False, total_steps=100)  # constant: the release
    warm = deepspeed_config(_cfg(warmup_steps=5), on_gpu=False, total_steps=100)["scheduler"]
    assert warm["type"] == "WarmupLR" and warm["params"]["warmup_num_steps"] == 5
    cos = deepspeed_config(_cfg(schedule="cosine", warmup_steps=5, min_lr_ratio=0.2), on_gpu=False, total_steps=100)
    assert cos["scheduler"]["type"] == "WarmupCosineLR"
    assert ({"total_num_steps": 100, "warmup_num_steps": 5, "cos_min_ratio": 0.2}.items()
            <= cos["scheduler"]["params"].items())
    assert total_optimizer_steps(_cfg(), 30) == 60
    assert total_optimizer_steps(_cfg(grad_accum=2), 30) == 30
    assert total_optimizer_steps(build(PretrainConfig, to_over(_cfg(), max_steps=17)), 30) == 17
    with pytest.raises(ValueError, match="schedule"):
        _cfg(schedule="linear")
    with pytest.raises(ValueError, match="min_lr_ratio"):
        _cfg(min_lr_ratio=1.5)
    with pytest.raises(ValueError, match="warmup_steps >= 1"):  # caught here, not by DeepSpeed in a worker
        _cfg(schedule="cosine")


def to_over(cfg: PretrainConfig, **over) -> dict:
    from uqa_ray.config import to_dict

    return {**to_dict(cfg), **over}


_CHILD = r"""
import json, os, sys
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[1], RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
import torch, torch.distributed as dist
torch.set_num_threads(1)
dist.init_process_group("gloo", rank=0, world_size=1)
from uqa_ray.config import build
from uqa_ray.encoders.config import OFFICIAL_VOCAB
from uqa_ray.pretrain import loop
from uqa_ray.pretrain.config import PretrainConfig
vocab = {k: min(v, 500) for k, v in OFFICIAL_VOCAB.items()}
out = {}
for name, optim in (("cosine", {"schedule": "cosine", "warmup_steps": 4, "min_lr_ratio": 0.1}), ("constant", {})):
    cfg = build(PretrainConfig, {"preset": "tiny", "max_len": 8, "scaling": {"zero_stage": 0},
                                 "optim": {"lr": 1e-3, **optim}})
    engine, _, _ = loop.build_engine(cfg, cfg.encoder_config(vocab), False, total_steps=20)
    lrs = [engine.get_lr()[0]]
    for _ in range(20):
        if engine.lr_scheduler is not None:
            engine.lr_scheduler.step()
        lrs.append(engine.get_lr()[0])
    out[name] = lrs
print(json.dumps(out))
"""


def test_engine_follows_the_schedule():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = subprocess.run([sys.executable, "-c", _CHILD, str(port)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    lrs = json.loads(res.stdout.strip().splitlines()[-1])
    cos, const = lrs["cosine"], lrs["constant"]
    assert all(v == pytest.approx(1e-3) for v in const)
    peak = max(range(len(cos)), key=cos.__getitem__)
    assert cos[0] < cos[peak] and cos[peak] == pytest.approx(1e-3, rel=2e-2) and peak <= 5  # linear warm-up
    after = cos[peak:]
    assert all(b <= a for a, b in zip(after, after[1:]))  # then a monotone decay ...
    assert cos[20] == pytest.approx(1e-4, rel=1e-3) and not math.isnan(sum(cos))  # ... to min_lr_ratio x lr
