"""`Scaling`: where and how a training stage runs - Ray Train workers, DeepSpeed ZeRO, restarts,
checkpoints and storage. One spec for pretraining (`PretrainConfig.scaling`) and alignment
(`AlignConfig.scaling`), so `scaling: {num_workers: 8, use_gpu: true, zero_stage: 3}` means the same in
both; each stage gives its own defaults (pretraining 2 CPU workers; alignment 0 = inside the Tune trial's
process) and says what 0 means where it differs.

Not part of a run's identity: the same config trains the same model on 2 CPUs or 8 GPUs, except that
ZeRO's stage and a DeepSpeed JSON shape the checkpoint (and may the optimizer), so pretraining keys its
runs by those two as well (pretrain/trainer.run_name).
"""
from __future__ import annotations

import dataclasses

ZERO_STAGES = (0, 1, 2, 3)


@dataclasses.dataclass(frozen=True)
class Scaling:
    num_workers: int = 1  # Ray Train workers, one per GPU on clusters (gloo between CPU workers)
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    resources_per_worker: dict[str, float] = dataclasses.field(default_factory=dict)
    zero_stage: int = 2  # 3 partitions the weights too (loaded partitioned under zero.Init)
    deepspeed: str = ""  # a DeepSpeed JSON whose keys override the generated config (offload, buckets, ...)
    # Ray Train FailureConfig: a lost worker (a preempted node) restarts the worker group from the latest
    # checkpoint, up to this many times (0 = the run fails at the first loss).
    max_failures: int = 2
    checkpoint_every: int = 0  # optimizer steps between mid-run checkpoints (0: the stage's default)
    # Checkpoints kept (Ray Train's num_to_keep): 2, not 1, so a truncated or corrupt latest one has a
    # previous one to fall back to (distributed.load_checkpoint).
    keep_checkpoints: int = 2
    storage: str = ""  # Ray Train storage: a shared folder or s3://, gs:// ("": the stage's default)

    def __post_init__(self) -> None:
        for name in ("num_workers", "max_failures", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.zero_stage not in ZERO_STAGES:
            raise ValueError(f"zero_stage must be one of {ZERO_STAGES}, got {self.zero_stage}")
        if self.cpus_per_worker <= 0:
            raise ValueError(f"cpus_per_worker must be > 0, got {self.cpus_per_worker}")
        if self.keep_checkpoints < 1:
            raise ValueError(f"keep_checkpoints must be >= 1 (2 or more to survive a corrupt one), "
                             f"got {self.keep_checkpoints}")
