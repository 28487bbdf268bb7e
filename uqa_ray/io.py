"""Atomic outputs and clear input errors: bad input never leaves a partial file behind."""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Iterator


class InputError(ValueError):
    """Bad input (file, column, type or value). The message names what is wrong; the CLI exits 2."""


# Exit codes: 0 done; 2 bad input or config (InputError, ConfigError: nothing run or written; every
# command); 3 incomplete: a planned trial or pretraining run has no ok result after its retries (each is
# named in the output; the report marks them; the experiment scripts and `uqa-ray tune`).
EXIT_BAD_INPUT, EXIT_INCOMPLETE = 2, 3


def say(line: str) -> None:
    """Print one progress line in ONE write: print() writes the text and the newline apart, so lines
    of concurrent threads (the lab's side-by-side pretraining runs) would run into each other."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def reason(e: BaseException) -> str:
    """A library error (Arrow, OS, JSON) as one line, for an InputError's message: the CLI prints the
    message as its one error line, and Arrow appends C++ source locations on further lines."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__


# Temporaries are named after their writer (host and pid), so that `sweep_stale_tmp` can tell the
# leftovers of a killed writer (SIGKILL skips every `finally`) from the work of a live one. The host
# matters on a cluster: trials on several nodes write into one shared results folder, and a pid is
# only meaningful on its own node.
_HOST = re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname())[:64] or "host"
_TMP_RE = re.compile(r"^\.(?P<name>.+)\.tmp-(?:(?P<host>[A-Za-z0-9_.]+)-)?(?P<pid>\d+)-[0-9a-f]{8}$")


def _tmp_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it onto `path` only if the block succeeds.

    Works for files and folders: the block writes whatever it likes at the yielded path. On error the
    temporary is removed and an existing `path` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path)
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            # os.replace cannot replace a non-empty folder: move the old one aside, then drop it.
            old = _tmp_sibling(path)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n")


def write_new_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write a record that must never overwrite an existing one (result records).

    The content goes to a temporary sibling first; `os.link` then publishes it under its final name,
    failing if that name exists, so two writers can never clobber each other and a reader never sees
    a half-written record.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path)
    data = (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n").encode()
    try:
        # Flushed to disk before it is published: a record is the only copy of a finished trial, and a
        # machine that crashes right after the link must not come back with an empty file under its name.
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError as e:
            raise FileExistsError(f"result record {path} already exists; refusing to overwrite") from e
    finally:
        tmp.unlink(missing_ok=True)
    return path


def append_jsonl(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Append one JSON line in one O_APPEND write: lines of concurrent writers never interleave, and no
    earlier line is ever rewritten."""
    line = (json.dumps(record, sort_keys=True, default=str) + "\n").encode()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def _writer_alive(pid: int, since: float) -> bool:
    """Whether process `pid` of this host may still own a temporary last modified at `since`."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by another user
    try:
        import psutil  # a Ray dependency; without it a live pid counts as the owner

        # A pid recycled by a process started after the temporary was last written is not its writer.
        return psutil.Process(pid).create_time() <= since + 1.0
    except ImportError:
        return True
    except psutil.Error:
        return False


def sweep_stale_tmp(folder: str | os.PathLike, foreign_after_s: float = 3600.0) -> list[Path]:
    """Remove the temporaries (of `atomic_path` / `write_new_json`) under `folder` whose writer is gone.

    A writer killed mid-write leaves its hidden `.<name>.tmp-<host>-<pid>-<id>` behind; a rerun calls
    this before writing there again. A temporary of this host is stale once its pid is dead (or reused
    since); one of another host (its pid cannot be checked from here) once it is older than
    `foreign_after_s`. Live writers' temporaries are kept, so a concurrent run is never disturbed.
    Returns what was removed.
    """
    folder, now, removed = Path(folder), time.time(), []
    if not folder.is_dir():
        return removed
    for tmp in sorted(folder.rglob(".*.tmp-*")):
        m = _TMP_RE.match(tmp.name)
        if not m:
            continue
        try:
            mtime = tmp.lstat().st_mtime
        except FileNotFoundError:  # finished (renamed) or removed by its writer meanwhile
            continue
        if m["host"] == _HOST:
            stale = not _writer_alive(int(m["pid"]), mtime)
        else:  # another node's, or of the older naming without a host (whose node is unknown)
            stale = now - mtime > foreign_after_s
        if not stale:
            continue
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed
