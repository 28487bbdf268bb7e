"""End to end, as a researcher runs it: a Ray head, `ray job submit -- python experiments/scale_model_size.py`
on the CI preset, then the fit, plot and table it wrote. Several minutes on 2 cores."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    ray = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
    gcs, dash, agent, agent_grpc, metrics, rt_env, client = (_free_port() for _ in range(7))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")}
    # Token authentication on, as Ray 2.5x heads have it: the head and every client read the same token,
    # here from a file of this test's own (a user's is ~/.ray/auth_token, the default path; README).
    token = tmp_path_factory.mktemp("auth") / "auth_token"
    token.write_text(secrets.token_hex(32))
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))
    # --block keeps `ray start` in the foreground; terminating it stops THIS head only (`ray stop` would
    # kill every Ray instance on the machine, the test session's own included).
    # Every port of this head is a free one: the agent's defaults (52365 ...) are taken by the test
    # session's own Ray, and a head whose job agent cannot bind answers every submission with
    # "No available agent to submit job" (what CI saw).
    head = subprocess.Popen([ray, "start", "--head", "--block", f"--port={gcs}", "--num-cpus=2",
                             "--include-dashboard=true", f"--dashboard-port={dash}", "--dashboard-host=127.0.0.1",
                             f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
                             f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={rt_env}",
                             f"--ray-client-server-port={client}", "--disable-usage-stats"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    address = f"http://127.0.0.1:{dash}"
    try:
        # `ray job list` answers as soon as the dashboard is up, but a submission also needs the node's
        # job agent, which registers later. So the probe is a real, trivial job: ready once one has run.
        probe = [ray, "job", "submit", "--address", address, "--", "python", "-c", "pass"]
        deadline, last = time.monotonic() + 180, None
        while time.monotonic() < deadline:
            last = subprocess.run(probe, env=env, capture_output=True, text=True, timeout=120)
            if last.returncode == 0 and "succeeded" in last.stdout:
                break
            time.sleep(2)
        else:
            raise RuntimeError("the Ray head did not accept a job within 180 s:\n"
                               + (last.stdout[-1500:] + last.stderr[-1500:] if last else ""))
        yield ray, address, env
    finally:
        head.terminate()
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()


def test_ray_job_submit_scale_model_size(ray_head, tmp_path):
    ray, address, env = ray_head
    # Without the token the head refuses the submission (what a user meets before setting RAY_AUTH_MODE).
    bare = {k: v for k, v in env.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")}
    refused = subprocess.run([ray, "job", "submit", "--address", address, "--", "python", "-c", "pass"],
                             env=bare, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "uthenticat" in refused.stdout + refused.stderr, refused.stderr[-2000:]
    work = tmp_path / "lab"
    proc = subprocess.run(
        [ray, "job", "submit", "--address", address, "--working-dir", str(ROOT), "--",
         "python", "experiments/scale_model_size.py", "--config", "ci", "--workdir", str(work)],
        env=env, capture_output=True, text=True, timeout=1500,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "succeeded" in proc.stdout, proc.stdout[-2000:]
    out = proc.stdout
    # Ray Data's progress bars end without a newline (carriage returns and cursor-up escapes), so the
    # lab's summary can share a line with the last one: read it from where it starts.
    found = [line[line.index('{"experiment"'):] for line in out.splitlines() if '{"experiment"' in line]
    summary = json.loads(found[-1])
    assert summary["trials"] == summary["ok"] >= 3

    records = sorted((work / "results" / "scale_model_size").glob("*.json"))
    assert len(records) == summary["trials"]
    sizes = {json.loads(r.read_text())["encoder"]["params_dense"] for r in records
             if json.loads(r.read_text())["method"] == "trm_pp"}
    assert len(sizes) == 3

    reports = work / "reports" / "scale_model_size"
    fit = json.loads((reports / "fit_params.json").read_text())
    assert fit and (reports / "fit_params.json").stat().st_size > 100
    pngs, svgs = list(reports.glob("*.png")), list(reports.glob("*.svg"))
    assert pngs and svgs and all(p.stat().st_size > 10_000 for p in pngs)
    tables = list(reports.glob("*.md")) + list(reports.glob("*.csv"))
    assert len(tables) >= 2 and any("3.2M" in t.read_text() or "Overall" in t.read_text() for t in tables)

    # A rerun reuses every stage and trial: no new record, nothing re-trained.
    again = subprocess.run(
        [ray, "job", "submit", "--address", address, "--working-dir", str(ROOT), "--",
         "python", "experiments/scale_model_size.py", "--config", "ci", "--workdir", str(work)],
        env=env, capture_output=True, text=True, timeout=900,
    )
    assert again.returncode == 0, again.stdout[-3000:]
    assert "reusing finished run" in again.stdout
    assert sorted((work / "results" / "scale_model_size").glob("*.json")) == records
