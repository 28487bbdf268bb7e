"""What the two DeepSpeed training loops (pretrain/loop.py, align/distributed.py) share across ranks.

- `allreduce_sum` / `all_agree`: the small collectives every rank must enter together (a rank that
  learns alone of a NaN or a bad checkpoint would leave the others blocked in the next ZeRO collective).
- Checkpoints a restarted worker group resumes from: a DeepSpeed checkpoint (every rank writes its ZeRO
  shard) plus each rank's RNG state and the loop's own state, handed to a checkpoint sink (`report`).
  `load_checkpoint` takes the newest checkpoint that every rank can load; a truncated or corrupt one
  (torch files are zip archives: a lost central directory or a CRC mismatch) is skipped with a warning
  for the one before it.
- `RayCheckpoints`: that sink and source inside a Ray Train worker (every rank reports its folder into
  one checkpoint; Ray hands back only the latest, the older ones are found beside it);
  `FolderCheckpoints`: the same in a local folder (torchrun, tests).
Plain torch + DeepSpeed; Ray is imported only by `RayCheckpoints`, which only a Ray Train worker builds.
"""
from __future__ import annotations

import contextlib
import json
import os
import posixpath
import re
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator, Protocol

import torch
import torch.distributed as dist

CKPT_TAG = "ckpt"  # DeepSpeed's tag folder inside every checkpoint


class CheckpointSink(Protocol):
    """Where checkpoints go and come from (RayCheckpoints, FolderCheckpoints)."""

    rank: int

    def checkpoints(self) -> list[tuple[str, Callable[[], ContextManager[Path]]]]: ...

    def report(self, metrics: dict[str, Any], ckpt_dir: Path | None) -> None: ...


def allreduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sums over all ranks (float64; the values themselves without a process group)."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_initialized():
        dist.all_reduce(t)
    return t.tolist()


def all_agree(ok: bool, device: torch.device) -> bool:
    """True when `ok` holds on every rank (every rank gets the same answer)."""
    return allreduce_sum([0.0 if ok else 1.0], device)[0] == 0.0


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save_checkpoint(engine, sink: CheckpointSink, state: dict[str, Any], metrics: dict[str, Any],
                    exclude_frozen: bool = False) -> None:
    """Every rank: its DeepSpeed shard, its RNG state and the loop's `state`, reported with `metrics`.
    `exclude_frozen` leaves out frozen weights (an LLM that the alignment does not train)."""
    with tempfile.TemporaryDirectory(prefix="uqa-ckpt-") as d:
        engine.save_checkpoint(d, tag=CKPT_TAG, client_state=state, exclude_frozen_parameters=exclude_frozen)
        rng_dir = Path(d) / "rng"
        rng_dir.mkdir(exist_ok=True)
        torch.save(rng_state(), rng_dir / f"rank{sink.rank}.pt")
        sink.report(metrics, Path(d))


def _own_files(d: Path, rank: int) -> list[Path]:
    """The torch files of a checkpoint that this rank reads: shared ones and its own ZeRO shard and RNG."""
    mine = []
    for f in sorted(d.rglob("*.pt")):
        shard = re.search(r"zero_pp_rank_(\d+)_", f.name) or re.fullmatch(r"rank(\d+)\.pt", f.name)
        if shard is None or int(shard.group(1)) == rank:
            mine.append(f)
    return mine


def damage(d: Path, rank: int) -> str | None:
    """Why this rank cannot trust the checkpoint at `d`, or None. Reads only this rank's files (a shard is
    read anyway by the load that follows)."""
    if not (d / CKPT_TAG).is_dir():
        return f"no {CKPT_TAG}/ folder"
    for f in _own_files(d, rank):
        try:
            with zipfile.ZipFile(f) as z:
                bad = z.testzip()
        except (OSError, zipfile.BadZipFile) as e:
            return f"{f.relative_to(d)}: truncated or corrupt ({type(e).__name__}: {e})"
        if bad is not None:
            return f"{f.relative_to(d)}: corrupt (CRC mismatch in {bad})"
    return None


def _load(engine, d: Path, rank: int, keys: tuple[str, ...], strict: bool) -> dict[str, Any]:
    _, client = engine.load_checkpoint(str(d), tag=CKPT_TAG, load_module_strict=strict)
    if client is None:
        raise RuntimeError(f"DeepSpeed found no tag {CKPT_TAG!r} in {d}")
    # DeepSpeed's "client state" comes back mixed with its own metadata (param shapes, ds_config, ...), and
    # saving that again fails (0.19: "client_state contains reserved checkpoint key"): keep the loop's keys.
    state = {k: client[k] for k in keys if k in client}
    rng = d / "rng" / f"rank{rank}.pt"
    if rng.exists():
        set_rng_state(torch.load(rng, weights_only=False))
    return state


def load_checkpoint(engine, sink: CheckpointSink, device: torch.device, keys: tuple[str, ...], label: str,
                    strict: bool = True) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """Resume from the newest checkpoint that every rank can load (module doc). Returns (the loop's `keys`
    of the checkpoint, or None for a fresh run; facts to report: `resumed_from_step` = the checkpoint's
    value of `keys[0]`, the loop's step counter, and the checkpoints skipped). `strict` False for
    checkpoints saved without frozen weights. `label` prefixes the warnings."""
    skipped: list[str] = []
    for where, opener in sink.checkpoints():
        with contextlib.ExitStack() as stack:
            try:
                d = stack.enter_context(opener())  # a remote checkpoint is downloaded here
                error = damage(d, sink.rank)
            except Exception as e:  # noqa: BLE001 - a checkpoint that cannot be fetched is skipped too
                error = f"{type(e).__name__}: {e}"
            # Agreed before DeepSpeed's load: a rank raising inside it would leave the others in a collective.
            if all_agree(error is None, device):
                try:
                    state = _load(engine, d, sink.rank, keys, strict)
                except Exception as e:  # noqa: BLE001 - any failure to load means: try the previous one
                    error = f"{type(e).__name__}: {e}"
                if all_agree(error is None, device):
                    info = {"resumed_from_step": state[keys[0]]}
                    if skipped:
                        info["skipped_checkpoints"] = skipped
                    return state, info
        if error is not None or sink.rank == 0:
            print(f"[{label}] WARNING: checkpoint {where} cannot be loaded (rank {sink.rank}: "
                  f"{error or 'failed on another rank'}); falling back to the previous one", flush=True)
        skipped.append(f"{where}: {error or 'cannot be loaded on another rank'}")
    if skipped:
        raise RuntimeError("no checkpoint of this run can be loaded (tried newest first):\n  " + "\n  ".join(skipped))
    return None, {}


@contextlib.contextmanager
def _as_path(checkpoint) -> Iterator[Path]:
    with checkpoint.as_directory() as d:  # local storage: the folder itself; remote: a downloaded copy
        yield Path(d)


class RayCheckpoints:
    """Inside a Ray Train worker: checkpoints reported with `ray.train.report` and read back from the run."""

    def __init__(self) -> None:
        import ray.train

        self._train = ray.train
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()

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


class FolderCheckpoints:
    """Checkpoints in a local folder shared by the ranks (`run_dir/checkpoints/latest`, `previous`), and
    rank 0's metrics in `run_dir/metrics.jsonl`: torchrun runs and tests without Ray."""

    def __init__(self, run_dir: Path) -> None:
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.run_dir = Path(run_dir)

    def checkpoints(self) -> list[tuple[str, Callable[[], ContextManager[Path]]]]:
        """`latest`, then `previous` (what `report` rotates), where they exist."""
        root = self.run_dir / "checkpoints"
        found = [root / n for n in ("latest", "previous") if (root / n).is_dir()]
        return [(str(d), lambda d=d: contextlib.nullcontext(d)) for d in found]

    def report(self, metrics: dict[str, Any], ckpt_dir: Path | None) -> None:
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
