"""Where a training worker gets its rank, batches and checkpoints from: Ray Train, or plain torchrun.

The per-worker loop (`loop.py`) only talks to a `Session`, so the same plain torch + DeepSpeed code runs
under Ray Train (data streamed by Ray Data, checkpoints reported to Ray) and under `torchrun` for
debugging (data read straight from the Arrow file, checkpoints in a local folder).
"""
from __future__ import annotations

import contextlib
import json
import os
import posixpath
import shutil
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator

import numpy as np
import pyarrow as pa

from uqa_ray.data.schema import PRETRAIN_FILES
from uqa_ray.data.windows import sliding_windows


def eval_rows(batch: pa.Table, rank: int, world: int) -> tuple[pa.Table, bool]:
    """This rank's stride of an eval batch (rows rank, rank + world, ...), so every eval row is scored by
    exactly one rank whatever the world size. A rank whose stride is empty gets the batch's first row
    and `False` (score nothing): it must still run the forward, whose ZeRO-3 gathers are collectives."""
    mine = np.arange(rank, batch.num_rows, world)
    return (batch.take(mine), True) if len(mine) else (batch.slice(0, 1), False)


@contextlib.contextmanager
def _as_path(checkpoint) -> Iterator[Path]:
    with checkpoint.as_directory() as d:  # local storage: the folder itself; remote: a downloaded copy
        yield Path(d)


class RaySession:
    """Inside a Ray Train worker: dataset shards from `get_dataset_shard`, checkpoints via `report`."""

    def __init__(self, cfg) -> None:
        import ray.train

        self._train = ray.train
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.cfg = cfg

    def train_batches(self, epoch: int) -> Iterator[pa.Table]:
        # The shard's order is deterministic (preserve_order + equal split); the local shuffle is seeded
        # per epoch, so a resumed run sees exactly the batches an uninterrupted run would.
        shard = self._train.get_dataset_shard("train")
        return shard.iter_batches(
            batch_size=self.cfg.optim.micro_batch,
            batch_format="pyarrow",
            drop_last=True,  # every rank takes the same number of steps (ZeRO collectives)
            local_shuffle_buffer_size=self.cfg.shuffle_buffer or None,
            local_shuffle_seed=self.cfg.seed * 10_007 + epoch if self.cfg.shuffle_buffer else None,
        )

    def eval_batches(self) -> Iterator[pa.Table]:
        """The WHOLE eval set on every rank (it is not split), in batches of eval_batch x world rows; each
        rank scores its stride of each batch (`eval_rows`)."""
        shard = self._train.get_dataset_shard("eval")
        return shard.iter_batches(batch_size=self.cfg.eval_batch * self.world, batch_format="pyarrow")

    def checkpoints(self) -> list[tuple[str, Callable[[], ContextManager[Path]]]]:
        """This run's checkpoints, newest first: (where it lives, opener of a local folder).

        Ray Train hands a worker only the latest checkpoint; the older ones it keeps (num_to_keep) are the
        `checkpoint_<timestamp>` siblings of that folder in the run's storage, and the timestamps sort as
        strings. Siblings newer than the latest are partial writes Ray never registered, so they are left out.
        """
        from pyarrow.fs import FileSelector, FileType
        from ray.train import Checkpoint

        latest = self._train.get_checkpoint()
        if latest is None:
            return []
        fs, path = latest.filesystem, latest.path.rstrip("/")
        parent, name = posixpath.split(path)
        older = sorted(
            (info.path for info in fs.get_file_info(FileSelector(parent))
             if info.type == FileType.Directory and info.base_name.startswith("checkpoint_")
             and info.base_name < name),
            reverse=True,
        )
        found = [latest] + [Checkpoint(p, filesystem=fs) for p in older]
        return [(c.path, lambda c=c: _as_path(c)) for c in found]

    def report(self, metrics: dict[str, Any], ckpt_dir: Path | None) -> None:
        from ray.train import Checkpoint

        checkpoint = Checkpoint.from_directory(str(ckpt_dir)) if ckpt_dir is not None else None
        self._train.report(metrics, checkpoint=checkpoint)


class TorchrunSession:
    """Under `torchrun` (debugging): rows read from the Arrow files, strided by rank."""

    def __init__(self, cfg, run_dir: Path) -> None:
        import torch.distributed as dist

        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.cfg, self.run_dir = cfg, run_dir
        self._tables = {
            split: pa.ipc.open_file(pa.memory_map(str(Path(cfg.data) / name), "r")).read_all()
            for split, name in PRETRAIN_FILES.items()
        }
        if cfg.windows == "sliding":
            self._tables["train"] = sliding_windows(self._tables["train"], cfg.seq_len)

    def _rows(self, split: str, order: np.ndarray, batch: int, drop_last: bool) -> Iterator[pa.Table]:
        table = self._tables[split]
        per_rank = len(order) // self.world  # equal rows per rank, as Ray's equal split gives
        mine = order[self.rank * per_rank : (self.rank + 1) * per_rank]
        stop = len(mine) - (len(mine) % batch if drop_last else 0)
        for s in range(0, stop, batch):
            yield table.take(mine[s : s + batch])

    def train_batches(self, epoch: int) -> Iterator[pa.Table]:
        n = self._tables["train"].num_rows
        order = np.random.default_rng([self.cfg.seed, epoch]).permutation(n)
        return self._rows("train", order, self.cfg.optim.micro_batch, drop_last=True)

    def eval_batches(self) -> Iterator[pa.Table]:
        """As `RaySession.eval_batches`: the whole eval set on every rank."""
        table = self._tables["eval"]
        n = min(table.num_rows, self.cfg.eval_users) if self.cfg.eval_users else table.num_rows
        step = self.cfg.eval_batch * self.world
        for s in range(0, n, step):
            yield table.slice(s, min(step, n - s))

    def checkpoints(self) -> list[tuple[str, Callable[[], ContextManager[Path]]]]:
        """`latest`, then `previous` (what `report` rotates), where they exist."""
        root = self.run_dir / "checkpoints"
        found = [root / n for n in ("latest", "previous") if (root / n).is_dir()]
        return [(str(d), lambda d=d: contextlib.nullcontext(d)) for d in found]

    def report(self, metrics: dict[str, Any], ckpt_dir: Path | None) -> None:
        import torch.distributed as dist

        if self.rank == 0:
            print(json.dumps(metrics), flush=True)
            self.run_dir.mkdir(parents=True, exist_ok=True)
            with open(self.run_dir / "metrics.jsonl", "a") as f:  # one line per report, like Ray's result log
                f.write(json.dumps(metrics) + "\n")
        if ckpt_dir is None:
            return
        # Every rank copies its own shard files into the shared folder, then rank 0 publishes it.
        staging = self.run_dir / "checkpoints" / ".staging"
        staging.mkdir(parents=True, exist_ok=True)
        shutil.copytree(ckpt_dir, staging, dirs_exist_ok=True)
        dist.barrier()
        if self.rank == 0:
            latest = self.run_dir / "checkpoints" / "latest"
            old = latest.with_name("previous")
            if old.exists():
                shutil.rmtree(old)
            if latest.exists():
                os.replace(latest, old)
            os.replace(staging, latest)
        dist.barrier()
