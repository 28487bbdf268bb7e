"""Where a training worker gets its rank, batches and checkpoints from: Ray Train, or plain torchrun.

The per-worker loop (`loop.py`) only talks to a `Session`, so the same plain torch + DeepSpeed code runs
under Ray Train (checkpoints reported to Ray) and under `torchrun` for debugging (checkpoints in a local
folder). Rows come from Ray Data (`feed: ray_data`: streamed, any storage, a local shuffle buffer) or
straight from the memory-mapped Arrow files (`ArrowRows`: torchrun always, Ray Train with `feed: arrow`;
each rank takes its stride of a seeded permutation of all rows per epoch).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import torch

from uqa_ray.data.schema import PRETRAIN_FILES
from uqa_ray.data.windows import sliding_windows
from uqa_ray.distributed import FolderCheckpoints, RayCheckpoints


def eval_rows(batch: pa.Table, rank: int, world: int) -> tuple[pa.Table, bool]:
    """This rank's stride of an eval batch (rows rank, rank + world, ...), so every eval row is scored by
    exactly one rank whatever the world size. A rank whose stride is empty gets the batch's first row
    and `False` (score nothing): it must still run the forward, whose ZeRO-3 gathers are collectives."""
    mine = np.arange(rank, batch.num_rows, world)
    return (batch.take(mine), True) if len(mine) else (batch.slice(0, 1), False)


class ArrowRows:
    """Batches read from the prepared Arrow files, memory-mapped (one copy in the page cache per node):
    every epoch a seeded permutation of all training rows, equal parts per rank (as Ray's equal split
    gives), whole micro-batches only; the whole eval set on every rank."""

    def __init__(self, cfg, rank: int, world: int) -> None:
        self.cfg, self.rank, self.world = cfg, rank, world
        self._tables = {
            split: pa.ipc.open_file(pa.memory_map(str(Path(cfg.data) / name), "r")).read_all()
            for split, name in PRETRAIN_FILES.items()
        }
        if cfg.windows == "sliding":
            self._tables["train"] = sliding_windows(self._tables["train"], cfg.seq_len)

    def train_batches(self, epoch: int) -> Iterator[pa.Table]:
        table, batch = self._tables["train"], self.cfg.optim.micro_batch
        order = np.random.default_rng([self.cfg.seed, epoch]).permutation(table.num_rows)
        per_rank = len(order) // self.world
        mine = order[self.rank * per_rank : (self.rank + 1) * per_rank]
        for s in range(0, len(mine) - len(mine) % batch, batch):
            yield table.take(mine[s : s + batch])

    def eval_batches(self) -> Iterator[pa.Table]:
        """As `RaySession.eval_batches`: the whole eval set on every rank."""
        table = self._tables["eval"]
        n = min(table.num_rows, self.cfg.eval_users) if self.cfg.eval_users else table.num_rows
        step = self.cfg.eval_batch * self.world
        for s in range(0, n, step):
            yield table.slice(s, min(step, n - s))


class RaySession(RayCheckpoints):
    """Inside a Ray Train worker: dataset shards from `get_dataset_shard` (or `ArrowRows` with `feed:
    arrow`), checkpoints via `report`."""

    def __init__(self, cfg) -> None:
        super().__init__()
        self.cfg = cfg
        self._arrow = ArrowRows(cfg, self.rank, self.world) if cfg.feed == "arrow" else None

    def train_batches(self, epoch: int) -> Iterator[pa.Table]:
        if self._arrow:
            return self._arrow.train_batches(epoch)
        # The shard's order is deterministic (preserve_order + equal split); the local shuffle is seeded
        # per epoch, so a resumed run sees exactly the batches an uninterrupted run would.
        shard = self._train.get_dataset_shard("train")
        return shard.iter_batches(
            batch_size=self.cfg.optim.micro_batch,
            batch_format="pyarrow",
            drop_last=True,  # every rank takes the same number of steps (ZeRO collectives)
            local_shuffle_buffer_size=self.cfg.shuffle_buffer or None,
            local_shuffle_seed=self.cfg.seed * 10_007 + epoch if self.cfg.shuffle_buffer else None,
            # On a GPU the prefetch thread overlaps feeding with compute; on CPU it only takes cores from
            # the step's own threads (bench/train_overhead.py, docs/decisions.md).
            prefetch_batches=1 if torch.cuda.is_available() else 0,
        )

    def eval_batches(self) -> Iterator[pa.Table]:
        """The WHOLE eval set on every rank (it is not split), in batches of eval_batch x world rows; each
        rank scores its stride of each batch (`eval_rows`)."""
        if self._arrow:
            return self._arrow.eval_batches()
        shard = self._train.get_dataset_shard("eval")
        return shard.iter_batches(batch_size=self.cfg.eval_batch * self.world, batch_format="pyarrow")


class TorchrunSession(FolderCheckpoints):
    """Under `torchrun` (debugging): `ArrowRows` whatever `feed` says; checkpoints and metrics in
    `run_dir`."""

    def __init__(self, cfg, run_dir: Path) -> None:
        super().__init__(run_dir)
        self._arrow = ArrowRows(cfg, self.rank, self.world)

    def train_batches(self, epoch: int) -> Iterator[pa.Table]:
        return self._arrow.train_batches(epoch)

    def eval_batches(self) -> Iterator[pa.Table]:
        return self._arrow.eval_batches()
