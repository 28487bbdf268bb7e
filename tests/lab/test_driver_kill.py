"""Kill the experiment driver mid-way (SIGKILL, its whole process group) and rerun the same command:
finished stages and trials are reused, nothing is lost, nothing is counted twice, nothing half-written
stays behind, and no process of the killed run outlives it.

One command (`experiments/scale_model_size.py --config ci`, starting its own local Ray) is killed twice -
while the second pretraining run trains (Ray Train + DeepSpeed workers in flight), then once the first
trial record exists (a Ray Tune experiment in flight) - and then run to the end. About the time of one
uninterrupted run plus two restarts (a few minutes on 2 idle cores)."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from uqa_ray.config import load_yaml

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENT = "scale_model_size"
pytestmark = pytest.mark.slow


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own local Ray, as a user runs it
    env.update(UQA_PROGRESS="0", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def _start(work: Path, log: Path) -> subprocess.Popen:
    with open(log, "wb") as f:  # a file, not a pipe: nobody has to drain it while the test polls
        # start_new_session: the driver leads a process group of its own, which the test kills whole.
        return subprocess.Popen([sys.executable, "-u", f"experiments/{EXPERIMENT}.py", "--config", "ci",
                                 "--workdir", str(work)], cwd=ROOT,
                                # a user cache of its own: the LM is taught in this test's runs (checked below)
                                env={**_env(), "UQA_RAY_CACHE": str(work.parent / "user-cache")}, stdout=f,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _wait_for(what: str, cond, proc: subprocess.Popen, log: Path, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            pytest.fail(f"the driver ended (rc {proc.returncode}) before {what}:\n{log.read_text()[-4000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout:.0f}s:\n{log.read_text()[-4000:]}")
        time.sleep(0.2)


def _processes_of(driver: int, raylets: set[int]) -> dict[int, float]:
    """{pid: start time} of the run's processes: the driver's descendants, its process group, and the Ray
    workers of its raylets (the raylet puts each worker in a process group of its own, and a worker
    orphaned by the kill is no descendant of anything any more - but it keeps RAY_RAYLET_PID)."""
    found = {}
    try:
        tree = [psutil.Process(driver), *psutil.Process(driver).children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    for p in tree:
        try:
            found[p.pid] = p.create_time()
            if p.name() == "raylet":
                raylets.add(p.pid)
        except psutil.NoSuchProcess:
            pass
    for p in psutil.process_iter(["pid", "create_time"]):
        try:
            if os.getpgid(p.pid) == driver or (
                    raylets and int(p.environ().get("RAY_RAYLET_PID", -1)) in raylets):
                found[p.pid] = p.info["create_time"]
        except (psutil.Error, ProcessLookupError, PermissionError, ValueError):
            pass
    return found


def _alive(procs: dict[int, float]) -> dict[int, float]:
    out = {}
    for pid, t in procs.items():
        try:
            p = psutil.Process(pid)
            if p.create_time() == t and p.status() != psutil.STATUS_ZOMBIE:
                out[pid] = t
        except psutil.NoSuchProcess:
            pass
    return out


def _kill(proc: subprocess.Popen, grace: float = 60) -> None:
    """SIGKILL the driver's process group, then require every process of that run to be gone within
    `grace` (Ray's own fate sharing: raylet/GCS die with the group, workers when their raylet is gone).
    Survivors are killed either way, so that a failure here leaves nothing running."""
    raylets: set[int] = set()
    procs = _processes_of(proc.pid, raylets)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        procs.update(_processes_of(proc.pid, raylets))
        if not _alive(procs):
            return
        time.sleep(0.5)
    left = _alive(procs)
    names = {}
    for pid in left:
        try:
            names[pid] = " ".join(psutil.Process(pid).cmdline())[:120]
            os.kill(pid, signal.SIGKILL)
        except (psutil.Error, ProcessLookupError):
            pass
    if left:
        pytest.fail(f"processes of the killed run still alive {grace:.0f}s after the kill: {names}")


def _started(log: Path) -> list[str]:
    """The pretraining runs the driver has handed to Ray Train so far, in order."""
    return re.findall(r"^\[pretrain\] (\S+): \d+ workers, ZeRO", log.read_text(), re.M)


def _training(log: Path, n: int) -> bool:
    """Whether the n-th pretraining run has logged a training step (its workers are training)."""
    started = _started(log)
    if len(started) < n:
        return False
    after = log.read_text().split(f"[pretrain] {started[n - 1]}: ", 1)[1]
    return re.search(r"\[pretrain\] epoch \d+/\d+ step \d+/", after) is not None


def _records(results: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in results.glob("*.json") if not p.name.startswith(".")}


def _leftovers(*folders: Path) -> list[str]:
    """Temporaries or half-written files: hidden entries (every atomic write's temporary is one)."""
    return sorted(str(p) for f in folders if f.exists() for p in f.rglob("*")
                  if p.name.startswith(".") or ".tmp" in p.name or ".part" in p.name)


def _killed_writer(*targets: Path) -> None:
    """A writer killed inside its atomic writes, as a trial or the analysis would be if the kill hit
    them mid-write (the driver's kill lands there only by chance): leaves their temporaries behind."""
    code = ("import sys, contextlib, time\nfrom uqa_ray.io import atomic_path\n"
            "with contextlib.ExitStack() as s:\n"
            "    for t in sys.argv[1:]:\n"
            "        s.enter_context(atomic_path(t)).write_text('half a rec')\n"
            "    print('written', flush=True)\n"
            "    time.sleep(600)\n")
    w = subprocess.Popen([sys.executable, "-c", code, *map(str, targets)], cwd=ROOT, stdout=subprocess.PIPE)
    try:
        assert w.stdout.readline() == b"written\n"
    finally:
        w.kill()
        w.wait()


def test_killed_driver_resumes_without_loss_or_duplicates(tmp_path):
    work, logs = tmp_path / "lab", [tmp_path / f"run{i}.log" for i in range(3)]
    results, reports = work / "results" / EXPERIMENT, work / "reports" / EXPERIMENT
    ci = load_yaml(ROOT / "experiments" / "configs" / EXPERIMENT / "ci.yaml")
    n_trials = len(ci["variants"]) * len(ci["grid"]["methods"])
    runs = lambda: sorted(p for p in (work / "runs").glob("tiny-*") if p.is_dir())  # noqa: E731
    procs: list[subprocess.Popen] = []
    try:
        # 1. Killed while the DeepSpeed workers of the second pretraining run train (the first one finished).
        procs.append(_start(work, logs[0]))
        _wait_for("a second pretraining run training", lambda: _training(logs[0], 2), procs[-1], logs[0])
        _kill(procs[-1])
        first, second = (work / "runs" / name for name in _started(logs[0])[:2])
        assert (first / "summary.json").is_file() and not (second / "summary.json").exists(), \
            "the kill did not land inside the second pretraining run"
        first_summary = (first / "summary.json").read_bytes()

        # 2. Rerun: every finished stage reused; then killed once the first trial has its record.
        procs.append(_start(work, logs[1]))
        _wait_for("a trial record", lambda: len(_records(results)) >= 1, procs[-1], logs[1])
        _kill(procs[-1])
        out = logs[1].read_text()
        for stage in ("synth: reusing", "prepare: reusing", "questions: reusing",
                      f"[pretrain] {first.name}: reusing finished run"):
            assert stage in out, f"{stage!r} not in the rerun's output:\n{out[-3000:]}"
        assert f"[pretrain] {second.name}: reusing" not in out  # it had not finished: run again
        assert (first / "summary.json").read_bytes() == first_summary
        before = _records(results)
        stamps = {n: (results / n).stat().st_mtime_ns for n in before}
        assert 1 <= len(before) < n_trials, "the kill did not land inside the trials"
        llm = sorted((work / "tune" / "llm").glob("instruct-*"))
        assert len(llm) == 1 and "[instruct] taught" in out

        # 3. Half-written outputs of a killed writer, then the rerun to the end.
        _killed_writer(results / "stale.json", reports / "table5.md")
        assert len(_leftovers(results, reports)) == 2
        procs.append(_start(work, logs[2]))
        assert procs[-1].wait(timeout=1200) == 0, logs[2].read_text()[-5000:]
        out = logs[2].read_text()
    finally:
        for p in procs:  # a failed wait above must not leave a driver (or its Ray) running
            if p.poll() is None:
                _kill(p, grace=30)

    summary = json.loads([ln for ln in out.splitlines() if ln.startswith('{"experiment"')][-1])
    assert summary["trials"] == summary["ok"] == n_trials
    for stage in ["synth: reusing", "prepare: reusing", "questions: reusing", "[tune] restoring",
                  *(f"[pretrain] {r.name}: reusing finished run" for r in runs())]:
        assert stage in out, f"{stage!r} not in the last run's output:\n{out[-3000:]}"
    assert len(runs()) == len(ci["variants"])
    assert "[instruct] taught" not in out and sorted((work / "tune" / "llm").glob("instruct-*")) == llm
    assert "temporaries of an interrupted run" in out

    # One record per trial id, as many as an uninterrupted run writes; the early ones untouched.
    after = _records(results)
    ids = [json.loads(b)["trial_id"] for b in after.values()]
    assert len(after) == n_trials and len(set(ids)) == n_trials
    assert sorted(after) == sorted(f"{i}.json" for i in ids)
    assert {json.loads(b)["status"] for b in after.values()} == {"ok"}
    for name, data in before.items():
        assert after[name] == data and (results / name).stat().st_mtime_ns == stamps[name]
    preds = sorted(p.stem for p in (results / "predictions").glob("*.parquet"))
    assert preds == sorted(n[:-5] for n in after)
    assert _leftovers(results, reports) == []
    assert (reports / "fit_params.json").is_file() and list(reports.glob("*.png"))
