"""The local Ray that every stage starts must let Ray Train's own actors find it (raysetup._init_local)."""
from __future__ import annotations


def test_actors_of_this_job_reach_this_cluster_and_its_state_api(ray_local):
    ray = ray_local

    @ray.remote(num_cpus=0)
    class Probe:
        def check(self):
            import os

            from ray.train.v2._internal.state.util import is_actor_alive

            # What Ray Train V2's PlacementGroupCleaner does every few seconds: without RAY_ADDRESS and the
            # dashboard it dies with "Timed out while waiting for GCS" mid-run.
            return os.environ.get("RAY_ADDRESS"), is_actor_alive(ray.get_runtime_context().get_actor_id(), 30)

    address, alive = ray.get(Probe.remote().check.remote(), timeout=120)
    assert address == ray.get_runtime_context().gcs_address
    assert alive is True


def test_rays_own_console_lines_show_only_when_verbose(monkeypatch, tmp_path):
    """Ray Train's INFO lines (a controller's "Requesting resources ...", a worker's "Setting up process
    group ...") and progress bars stay off in a log unless UQA_VERBOSE=1, which `--verbose` sets."""
    import logging
    import os
    from pathlib import Path

    from uqa_ray.lab.script import main
    from uqa_ray.raysetup import VERBOSE_ENV, _WorkerConsole, progress_bars, ray_log_level, verbose

    train_info = logging.LogRecord("ray.train", logging.INFO, f"{os.sep}x{os.sep}ray{os.sep}train{os.sep}v2.py", 1,
                                   "Requesting resources", None, None)
    warning = logging.LogRecord("ray.train", logging.WARNING, train_info.pathname, 1, "a worker died", None, None)
    monkeypatch.setenv(VERBOSE_ENV, "0")
    monkeypatch.delenv("UQA_PROGRESS", raising=False)
    assert not verbose() and ray_log_level() == "WARNING"
    assert not _WorkerConsole(teed=False).filter(train_info) and _WorkerConsole(teed=False).filter(warning)
    script = Path(__file__).resolve().parents[2] / "experiments" / "scale_model_size.py"
    assert main(str(script), "", ["--verbose", "--config", str(tmp_path / "missing.yaml")]) == 2  # a bad config
    assert os.environ[VERBOSE_ENV] == "1" and verbose() and ray_log_level() == "INFO" and progress_bars()
    assert _WorkerConsole(teed=False).filter(train_info)
    monkeypatch.setenv("UQA_PROGRESS", "0")
    assert not progress_bars()
