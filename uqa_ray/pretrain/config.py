"""`PretrainConfig`: one pretraining run (encoder x size x length x loss) and how to scale it.

Defaults follow the official pretraining recipe (UQABENCH.md section 3): AdamW lr 4e-4 (the paper's text
says 1e-4; the released scripts use 4e-4), betas (0.9, 0.999), no weight decay, constant LR, 3 epochs,
micro-batch 4 per device. Scaling is config, so the same run goes from a laptop to many GPU nodes.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Literal

from uqa_ray.data.windows import Window
from uqa_ray.encoders.config import OFFICIAL_VOCAB
from uqa_ray.encoders.presets import PRESETS, preset_config
from uqa_ray.pretrain.losses import LIBRARY_CE, LossConfig
from uqa_ray.scaling import Scaling

TABLES = ("dense", "sparse")  # OptimConfig.tables


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    lr: float = 4e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip: float = 0.0  # 0 = off (the official pretraining does not clip)
    epochs: int = 3
    micro_batch: int = 4  # per worker (per GPU)
    grad_accum: int = 1
    # The learning rate over the run (DeepSpeed's schedulers, ds_config.py): "constant" as the release
    # (after `warmup_steps` of linear warm-up, if any); "cosine": linear warm-up, then a cosine decay to
    # `min_lr_ratio` x lr at the last optimizer step.
    schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1
    # The embedding tables' updates (pretrain/tables.py): "dense" = every row each step with the engine's
    # AdamW, as the release; "sparse" = only the rows the step read (row-sparse Adam, lazy moments).
    tables: Literal["dense", "sparse"] = "dense"

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.epochs < 1 or self.micro_batch < 1 or self.grad_accum < 1:
            raise ValueError("lr must be > 0 and epochs, micro_batch, grad_accum >= 1")
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"schedule must be 'constant' or 'cosine', got {self.schedule!r}")
        if self.warmup_steps < 0 or not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"need warmup_steps >= 0 and min_lr_ratio in [0, 1], got {self.warmup_steps}, "
                             f"{self.min_lr_ratio}")
        if self.tables not in TABLES:
            raise ValueError(f"tables must be one of {TABLES}, got {self.tables!r}")
        if self.tables == "sparse" and (self.weight_decay or self.grad_clip):
            # SparseAdam has no weight decay, and the engine's clipping norm would leave the tables out.
            raise ValueError("tables 'sparse' needs weight_decay 0 and grad_clip 0 (the row-sparse Adam has "
                             f"neither), got {self.weight_decay}, {self.grad_clip}")
        if self.schedule == "cosine" and self.warmup_steps < 1:  # DeepSpeed's WarmupCosineLR refuses 0
            raise ValueError("schedule 'cosine' needs warmup_steps >= 1 (DeepSpeed's WarmupCosineLR)")


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    data: str = ""  # a prepared data folder (uqa-ray prepare)
    preset: str = "trm_pp-official"  # a key of encoders.presets.PRESETS
    encoder: dict[str, Any] = dataclasses.field(default_factory=dict)  # EncoderConfig overrides
    max_len: int = 512  # table 6 varies this: 32 ... 512
    input_mode: Literal["full", "no_text", "no_side"] = "full"  # table 3
    # Training rows (data/windows.py): "last" = each user's last max_len clicks, as the official loader;
    # "sliding" = windows covering every click of long histories once per epoch.
    windows: Window = "last"
    # How a Ray Train worker gets its rows (pretrain/session.py): "ray_data" = streamed by Ray Data (any
    # storage, data larger than memory; a local shuffle buffer of `shuffle_buffer` rows); "arrow" = each
    # worker memory-maps the prepared Arrow files (a folder every worker reads) and takes its part of a
    # seeded permutation of all rows each epoch, as torchrun does. Another order, so another run.
    feed: Literal["ray_data", "arrow"] = "ray_data"
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    # Ray Train workers, ZeRO, restarts, checkpoints (`checkpoint_every` 0 = at the end of each epoch only)
    # and storage: the run lives at `<scaling.storage>/<name>`, a folder every worker can reach.
    scaling: Scaling = Scaling(num_workers=2, storage="runs/pretrain")
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    shuffle_buffer: int = 256  # rows; seeded per epoch, so the order is reproducible
    eval_users: int = 0  # 0 = every eval user
    # HR@k / NDCG@k over each eval user's last `eval_last` clicks, each from the clicks before it; 1 = the
    # official protocol (the last click). More targets per user: the same metric, less noise with few users.
    eval_last: int = 1
    eval_batch: int = 16
    ks: tuple[int, ...] = (1, 5, 10, 20, 50)
    max_steps: int = 0  # 0 = no limit (smoke runs and tests cap it)
    seed: int = 0
    name: str = ""  # run name under `scaling.storage`; "" = derived from the config hash

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"preset: unknown {self.preset!r}; known: {', '.join(PRESETS)}")
        if self.scaling.num_workers < 1 or not self.scaling.storage or "://" in self.scaling.storage:
            raise ValueError("pretraining needs scaling.num_workers >= 1 and scaling.storage a folder every "
                             f"worker can reach, got {self.scaling.num_workers}, {self.scaling.storage!r}")
        if self.optim.tables == "sparse" and self.scaling.zero_stage not in (1, 2):
            # ZeRO-0's fallback all-reduce walks every module parameter (the tables would be reduced twice);
            # ZeRO-3 partitions them.
            raise ValueError(f"optim.tables 'sparse' needs scaling.zero_stage 1 or 2, got {self.scaling.zero_stage}")
        if self.loss.kind == "ce" and self.loss.ce in LIBRARY_CE and not self.scaling.use_gpu:
            raise ValueError(f"loss.ce {self.loss.ce!r} is a CUDA kernel: it needs scaling.use_gpu true")
        if self.max_len < 2:
            raise ValueError(f"max_len must be >= 2 (one input and one target), got {self.max_len}")
        for name in ("eval_users", "max_steps", "seed", "shuffle_buffer"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.eval_batch < 1 or self.eval_last < 1:
            raise ValueError(f"eval_batch and eval_last must be >= 1, got {self.eval_batch}, {self.eval_last}")
        # Validate the encoder overrides now (with official vocab sizes) rather than on the workers.
        self.encoder_config(OFFICIAL_VOCAB)

    def encoder_config(self, vocab: dict[str, int]):
        return preset_config(
            self.preset, vocab, **{"max_len": self.max_len, "input_mode": self.input_mode, **self.encoder}
        )

    @property
    def seq_len(self) -> int:
        """Clicks per training row: the encoder's max_len (an `encoder.max_len` override wins)."""
        return self.encoder_config(OFFICIAL_VOCAB).max_len
