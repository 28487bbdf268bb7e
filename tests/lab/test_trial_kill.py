"""A Tune trial's worker process SIGKILLed mid-trial (what a preempted node does to it), as in issue 14:
`experiments/scale_model_size.py --config ci` runs; the first `ray::ImplicitFunc.train` process of the run
is killed a few seconds into its trial.

- retries off (`grid.max_failures=0`): the trial stays missing, and the command says so - exit 3, the
  trial named with Tune's reason and its log folder, the fit document and the table marking it - instead
  of printing `done` over a silent subset;
- the same command again with the default retries, killed the same way: Tune runs the killed trial again
  and the run ends with every planned trial ok, exit 0.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from tests.lab.test_driver_kill import EXPERIMENT, ROOT, _env, _kill
from uqa_ray.config import load_yaml
from uqa_ray.io import EXIT_INCOMPLETE
from uqa_ray.lab.events import read_events

pytestmark = pytest.mark.slow


class TrialKiller(threading.Thread):
    """SIGKILLs the first Tune trial process (`ray::ImplicitFunc.train`) of the run whose Ray workers carry
    `cache` as UQA_RAY_CACHE, `after` seconds after first seeing it."""

    def __init__(self, cache: Path, after: float = 3.0):
        super().__init__(daemon=True)
        self.cache, self.after, self.killed, self.stop = str(cache), after, None, threading.Event()

    def _trial(self) -> psutil.Process | None:
        for p in psutil.process_iter(["cmdline"]):
            try:
                if (p.info["cmdline"] or [""])[0].startswith("ray::ImplicitFunc.train") \
                        and p.environ().get("UQA_RAY_CACHE") == self.cache:
                    return p
            except (psutil.Error, IndexError):
                pass
        return None

    def run(self) -> None:
        while not self.stop.is_set():
            p = self._trial()
            if p is not None:
                time.sleep(self.after)
                try:
                    os.kill(p.pid, signal.SIGKILL)
                    self.killed = p.pid
                except ProcessLookupError:  # the trial ended meanwhile: wait for the next one
                    continue
                return
            time.sleep(0.2)


def _run(work: Path, log: Path, *sets: str, cache: Path | None = None,
         kill: bool = True) -> tuple[int, str, int | None]:
    """(exit code, output, the killed pid) of the CI preset in `work`; bench/trial_kill.py runs it too."""
    cache = cache or work.parent / "user-cache"
    killer = TrialKiller(cache)
    if kill:
        killer.start()
    with open(log, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-u", f"experiments/{EXPERIMENT}.py", "--config", "ci",
                                 "--workdir", str(work), *(["--set", *sets] if sets else [])], cwd=ROOT,
                                env={**_env(), "UQA_RAY_CACHE": str(cache)}, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        rc = proc.wait(timeout=1200)
    finally:
        killer.stop.set()
        if proc.poll() is None:
            _kill(proc, grace=30)
    return rc, log.read_text(), killer.killed


def _done(out: str) -> dict:
    return json.loads([ln for ln in out.splitlines() if ln.startswith('{"experiment"')][-1])


def test_a_killed_trial_is_named_without_retries_and_retried_with_them(tmp_path):
    work = tmp_path / "lab"
    ci = load_yaml(ROOT / "experiments" / "configs" / EXPERIMENT / "ci.yaml")
    planned = len(ci["variants"]) * len(ci["grid"]["methods"])

    rc, out, killed = _run(work, tmp_path / "run0.log", "grid.max_failures=0")
    assert killed, f"no trial process was seen to kill:\n{out[-3000:]}"
    assert rc == EXIT_INCOMPLETE, out[-5000:]
    done = _done(out)
    assert (done["planned"], done["trials"], done["ok"], done["not_ok"]) == (planned, planned - 1, planned - 1, 1)
    gone = [ln for ln in out.splitlines() if "[lab] NOT OK " in ln]
    assert len(gone) == 1 and "after 0 retries" in gone[0] and "(log: " in gone[0], out[-3000:]
    tid = gone[0].split("[lab] NOT OK ")[1].split(":")[0]
    assert not (work / "results" / EXPERIMENT / f"{tid}.json").exists()
    log_dir = Path(gone[0].rsplit("(log: ", 1)[1].rstrip(")"))
    assert log_dir.is_dir() and (log_dir / "error.txt").is_file()
    reports = work / "reports" / EXPERIMENT
    fit = json.loads((reports / "fit_params.json").read_text())
    assert [m["trial_id"] for m in fit["ours"]["missing"]] == [tid]
    assert f"MISSING (planned, no record): {tid}" in (reports / "table5.md").read_text()
    assert "1 planned trial(s) MISSING" in out
    # The console: a line per trial event instead of Tune's tables, and each worker line once (Ray Train's
    # print patch used to bring every line twice).
    assert f"[tune] FAILED {tid} after its retries" in out and "Trial status" not in out
    # ... and none of Ray Train's own INFO lines, nor a loader's progress bar redrawn line by line in the log
    assert "Requesting resources" not in out and "Loading weights" not in out
    epochs = [ln.split(") ", 1)[-1] for ln in out.splitlines() if "[pretrain] epoch 1 done:" in ln]
    assert len(epochs) == len(set(epochs)) == len(ci["variants"]), epochs
    # The event log: a line per stage of this run, the trial counts as the done line says them.
    first = read_events(work)
    assert [e["stage"] for e in first] == ["data", "questions", "pretrain", "trials", "analysis", "run"]
    assert first[3]["figures"] == {"trials": planned - 1, "ok": planned - 1, "missing": 1}
    assert first[-1]["figures"]["not_ok"] == 1 and all(e["error"] is None and e["wall_s"] >= 0 for e in first)
    assert first[-1]["figures"]["config"]["grid"]["max_failures"] == 0  # the resolved config, overrides included

    # The same command with the default retries: the killed trial runs again (and is killed again once).
    rc, out, killed = _run(work, tmp_path / "run1.log")
    assert killed and rc == 0, out[-5000:]
    done = _done(out)
    assert done["planned"] == done["trials"] == done["ok"] == planned and done["not_ok"] == 0
    assert "NOT OK" not in out and "INCOMPLETE" not in out
    assert f"[tune] {tid} lost its process: running it again" in out and f"[tune] ok {tid}, " in out
    record = json.loads((work / "results" / EXPERIMENT / f"{tid}.json").read_text())
    assert record["status"] == "ok"
    assert json.loads((reports / "fit_params.json").read_text())["ours"]["missing"] == []
    second = read_events(work)  # the rerun's lines follow the first run's, which stay
    assert second[-1]["figures"]["ok"] == planned and second[0]["run"] != first[0]["run"]
    assert read_events(work, first[0]["run"]) == first
