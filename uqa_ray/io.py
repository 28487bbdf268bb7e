"""Atomic outputs and clear input errors: bad input never leaves a partial file behind."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterator


class InputError(ValueError):
    """Bad input (file, column, type or value). The message names what is wrong; the CLI exits 2."""


def _tmp_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


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
    try:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError as e:
            raise FileExistsError(f"result record {path} already exists; refusing to overwrite") from e
    finally:
        tmp.unlink(missing_ok=True)
    return path
