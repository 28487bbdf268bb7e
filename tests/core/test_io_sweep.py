"""Temporaries left by killed writers are swept; those of live writers (a concurrent run) never are."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from uqa_ray.io import sweep_stale_tmp, write_new_json

ROOT = Path(__file__).resolve().parents[2]
# A writer that opens atomic writes of a file and a folder, says so, and stays inside them.
WRITER = """import sys, time
from pathlib import Path
from uqa_ray.io import atomic_path
with atomic_path(sys.argv[1]) as f, atomic_path(sys.argv[2]) as d:
    f.write_text('half')
    d.mkdir(); (d / 'part').write_text('half')
    print('in', flush=True)
    time.sleep(600)
"""


def _writer(folder: Path) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", WRITER, str(folder / "r.json"), str(folder / "sub" / "d")],
                         cwd=ROOT, stdout=subprocess.PIPE)
    assert p.stdout.readline() == b"in\n"
    return p


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name.split(".tmp-")[0] for p in folder.rglob(".*"))


def test_sweep_removes_only_what_dead_writers_left(tmp_path):
    dead, live = tmp_path / "dead", tmp_path / "live"
    killed = _writer(dead)
    killed.kill()  # SIGKILL: its `finally` never runs, the temporaries stay
    killed.wait()
    running = _writer(live)
    try:
        assert _hidden(dead) == _hidden(live) == [".d", ".r.json"]
        write_new_json(dead / "done.json", {"ok": 1})
        # Another node's temporaries: its pid means nothing here, only age tells.
        # (The older naming without a host counts as another node's: its node is unknown.)
        young = dead / ".x.json.tmp-othernode-1-0123abcd"
        legacy = dead / ".z.json.tmp-1-0123abcd"
        old = dead / ".y.json.tmp-othernode-1-0123abcd"
        young.write_text("?")
        legacy.write_text("?")
        old.write_text("?")
        os.utime(old, (time.time() - 7200, time.time() - 7200))
        (dead / ".hidden-but-not-a-temporary").write_text("keep")

        removed = sweep_stale_tmp(tmp_path)
        assert sorted(p.name.split(".tmp-")[0] for p in removed) == [".d", ".r.json", ".y.json"]
        assert sorted(p.name for p in dead.rglob("*")) == sorted(
            [".hidden-but-not-a-temporary", young.name, legacy.name, "done.json", "sub"])
        assert _hidden(live) == [".d", ".r.json"]  # the live writer is not disturbed
    finally:
        running.kill()
        running.wait()
    assert sweep_stale_tmp(tmp_path / "missing") == []
