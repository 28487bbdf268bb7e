"""Node loss on a multi-node Ray cluster, with Ray's own multi-node harness (`ray.cluster_utils.Cluster`): a
head that schedules no work (as cluster/*.yaml have it) and two worker nodes with their own resources.

`experiments/scale_model_size.py --config ci` (one size, the encoder trial) joins the cluster twice, each
time in a fresh workdir: once undisturbed, once with a worker node removed while Ray Train's workers
pretrain on it, and another removed while a Tune trial runs on it (each replaced by a fresh node, as an
autoscaler would). The interrupted run ends with every planned run and trial ok and the same numbers as
the undisturbed one, and nothing of a removed node outlives it.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.lab.test_driver_kill import EXPERIMENT, ROOT, _env, _kill, _training

pytestmark = pytest.mark.slow
SETS = ["variants=[{encoder: {d_model: 16, n_layers: 1, n_heads: 2}}]", "grid.methods=[encoder]", "x=none",
        "table=0"]


def _raylet_pid(node) -> int:
    return node.all_processes["raylet"][0].process.pid


def _processes_on(raylet: int) -> list[psutil.Process]:
    """The Ray workers a raylet started (they carry its pid as RAY_RAYLET_PID)."""
    found = []
    for p in psutil.process_iter():
        try:
            if int(p.environ().get("RAY_RAYLET_PID", -1)) == raylet:
                found.append(p)
        except (psutil.Error, ValueError):
            pass
    return found


def _node_running(cluster, workers: list, title: str):
    """The worker node whose raylet started a process titled `title...` (None if none runs yet)."""
    for node in workers:
        for p in _processes_on(_raylet_pid(node)):
            try:
                if (p.cmdline() or [""])[0].startswith(title):
                    return node
            except psutil.Error:
                pass
    return None


class NodeRemover:
    """Removes the worker node that runs the pretraining workers once the run trains, then the one that
    runs a Tune trial 3 s into it, each replaced by a fresh node; `tick` is called from the main thread
    (the harness's add/remove use signals). Records what it removed and the removed nodes' processes."""

    def __init__(self, cluster, workers: list, log: Path):
        self.cluster, self.workers, self.log = cluster, workers, log
        self.removed: list[tuple[str, list[psutil.Process]]] = []
        self.seen: float | None = None

    def tick(self) -> None:
        if not self.removed:
            node = _node_running(self.cluster, self.workers, "ray::RayTrainWorker") if _training(self.log, 1) else None
            if node is not None:
                self._remove("pretraining", node)
        elif len(self.removed) == 1:
            node = _node_running(self.cluster, self.workers, "ray::ImplicitFunc.train")
            if node is not None:
                self.seen = self.seen or time.monotonic()
                if time.monotonic() - self.seen > 3:
                    self._remove("trial", node)

    def _remove(self, what: str, node) -> None:
        procs = _processes_on(_raylet_pid(node))
        self.cluster.remove_node(node, allow_graceful=False)
        self.workers.remove(node)
        self.workers.append(self.cluster.add_node(num_cpus=2))
        self.removed.append((what, procs))


def _run(address: str, work: Path, log: Path, cache: Path, tick=None) -> tuple[int, str]:
    with open(log, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-u", f"experiments/{EXPERIMENT}.py", "--config", "ci",
                                 "--workdir", str(work), "--set", *SETS], cwd=ROOT,
                                env={**_env(), "RAY_ADDRESS": address, "UQA_RAY_CACHE": str(cache)}, stdout=f,
                                stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 1200
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if tick:
                tick()
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            _kill(proc, grace=30)
    return proc.returncode, log.read_text()


def _numbers(work: Path) -> tuple[dict, dict]:
    """(pretraining metrics, the trial's scores) of a run."""
    summary = json.loads(next((work / "runs").glob("*/summary.json")).read_text())
    record = json.loads(next((work / "results" / EXPERIMENT).glob("*.json")).read_text())
    assert record["status"] == "ok"
    return summary["metrics"], record["scores"]


def test_worker_nodes_lost_mid_pretraining_and_mid_trial(tmp_path):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        workers = [cluster.add_node(num_cpus=2) for _ in range(2)]
        cache = tmp_path / "user-cache"
        rc, out = _run(cluster.address, tmp_path / "calm", tmp_path / "calm.log", cache)
        assert rc == 0, out[-5000:]
        calm = _numbers(tmp_path / "calm")

        log = tmp_path / "lossy.log"
        remover = NodeRemover(cluster, workers, log)
        rc, out = _run(cluster.address, tmp_path / "lossy", log, cache, remover.tick)
        assert [what for what, _ in remover.removed] == ["pretraining", "trial"], out[-5000:]
        assert rc == 0, out[-5000:]
        done = json.loads([ln[ln.index('{"experiment"'):] for ln in out.splitlines() if '{"experiment"' in ln][-1])
        assert done["planned"] == done["trials"] == done["ok"] == 1 and done["not_ok"] == 0
        metrics, scores = _numbers(tmp_path / "lossy")
        same = [k for k in calm[0] if k.startswith("eval/") or k == "train_loss"]  # not the timings
        assert "eval/HR@10" in same and "eval/loss" in same
        for k in same:
            assert metrics[k] == pytest.approx(calm[0][k], rel=1e-5, abs=1e-6), k
        assert scores == calm[1]
        # nothing of a removed node outlives it (the raylet takes its workers with it)
        deadline = time.monotonic() + 60
        alive = []
        while time.monotonic() < deadline:
            alive = [p for _, procs in remover.removed for p in procs if p.is_running()
                     and p.status() != psutil.STATUS_ZOMBIE]
            if not alive:
                break
            time.sleep(0.5)
        assert not alive, [p.pid for p in alive]
    finally:
        cluster.shutdown()
