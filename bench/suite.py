"""The benchmark suite: run every benchmark of bench/ as a subprocess, collect the headline figures in one JSON.

    python bench/suite.py                          # full sizes (~80 min on 2 quiet CPUs)
    python bench/suite.py --quick                  # smaller sizes, a smoke run (~22 min)
    python bench/suite.py --only evaluate prompt_tokens
    python bench/suite.py --dry-run [--quick]      # print the commands, run nothing
    python bench/suite.py --markdown               # the numbers table of the latest suite JSON
    python bench/suite.py --update-md              # ... written into BENCHMARKS.md's generated section
    python bench/suite.py --markdown --from-results bench/results   # table of the standalone scripts' JSONs

Each benchmark runs its own script's CLI (bench/<name>.py; main_command runs the README's main command
cold) with its JSON output sent into this run's folder, so the suite never touches the standalone
results bench/results/<name>.json. Files:
  bench/results/runs/<run>/<name>.json   each benchmark's own JSON, as its script wrote it
  bench/results/runs/<run>/suite.json    this run's figures (never overwritten: the run id is a UTC time)
  --out (default bench/results/suite.json)   the latest figures, replaced atomically; with --only the
        others are carried over from the previous --out with their own run id, command and date.
  bench/work/suite/<run>/<name>.log      each benchmark's full output (git-ignored)
--quick runs are smoke runs, not numbers to commit: they live under the git-ignored bench/work/. One
failing benchmark does not lose the others (its entry records the error; the suite exits 1 at the end).
"""
from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import threading
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import suite_figures as F  # noqa: E402
from uqa_ray.io import atomic_path, write_json  # noqa: E402

# name -> (script, full-size args, quick args, the flag its JSON path goes to, expected minutes full/quick
# on 2 quiet CPUs). Ordered cheap first, so that a broken environment shows in minutes.
BENCHMARKS: dict[str, dict] = {
    "prompt_tokens": {"script": "bench/prompt_tokens.py", "full": ["--preset", "small"], "quick": ["--preset", "tiny"],
                      "out_flag": "--out", "minutes": (2, 1)},
    "evaluate": {"script": "bench/evaluate.py", "full": [],
                 "quick": ["--questions", "64", "--text-questions", "16", "--threads", "2", "--repeat", "1"],
                 "out_flag": "--out", "minutes": (5, 1)},
    "align_workers": {"script": "bench/align_workers.py", "full": [],
                      "quick": ["--steps", "4", "--strategies", "adapter"],
                      "out_flag": "--out", "minutes": (4, 2)},
    # --items only sizes the CE-memory half; the shorter sequence makes the throughput half cheap.
    "pretrain": {"script": "bench/pretrain.py", "full": ["--rounds", "2"],
                 "quick": ["--items", "250000", "--steps", "1", "--seq", "128"], "out_flag": "--out",
                 "minutes": (14, 3)},
    "questions": {"script": "bench/questions.py", "full": [], "quick": ["--users", "20000"],
                  "out_flag": "--result", "minutes": (6, 3)},
    "prepare": {"script": "bench/prepare.py", "full": ["--preset", "paper"], "quick": ["--preset", "small"],
                "out_flag": "--out", "minutes": (10, 2)},
    "encoders": {"script": "bench/encoders.py", "full": [],
                 "quick": ["--encoders", "sasrec", "trm_pp", "--ladder", "16", "32", "64"],
                 "out_flag": "--out", "minutes": (35, 9)},
    "main_command": {"script": "bench/main_command.py", "full": [], "quick": ["--config", "ci", "--seeds", "0"],
                     "out_flag": "--out", "minutes": (11, 5)},
}
TIMEOUT_S = 3600  # per benchmark: a hung benchmark must not hold the other figures hostage forever


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict:
    """Facts that change what a figure means. Versions from package metadata (importing torch or ray here
    would cost seconds and memory in the driver that times the others)."""
    def version(pkg: str) -> str | None:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None

    def git(*args: str) -> str:
        p = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return p.stdout.strip() if p.returncode == 0 else ""

    try:
        import psutil

        mem = round(psutil.virtual_memory().total / 1024**3, 1)
    except ImportError:
        mem = None
    return {"cpus": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)), "mem_total_gib": mem,
            "host": platform.node(), "python": platform.python_version(), "torch": version("torch"),
            "ray": version("ray"), "deepspeed": version("deepspeed"), "transformers": version("transformers"),
            "git_rev": git("rev-parse", "HEAD") or None, "git_dirty": bool(git("status", "--porcelain")),
            # inherited by every benchmark: thread counts and Ray's worker priority change the figures
            "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAY_worker_niceness",
                                                   "RAY_ADDRESS", "CUDA_VISIBLE_DEVICES")},
            "loadavg_start": loadavg()}


def command(name: str, quick: bool, raw: Path) -> list[str]:
    b = BENCHMARKS[name]
    return [sys.executable, b["script"], *(b["quick"] if quick else b["full"]), b["out_flag"], str(raw)]


def shown(argv: list[str]) -> str:
    return shlex.join(["python", *argv[1:]]) if argv[0] == sys.executable else shlex.join(argv)


def run_logged(argv: list[str], log: Path, timeout: float) -> tuple[int, float, list[str]]:
    """Run `argv` in its own process group (its Ray workers included), output to `log`; returns the exit
    code, wall seconds and the output's last lines."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               PYTHONUNBUFFERED="1")
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace", env=env, start_new_session=True)
    timed_out = threading.Event()

    def kill():
        timed_out.set()
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # only the group this suite started
        except ProcessLookupError:
            pass

    timer = threading.Timer(timeout, kill)
    timer.start()
    tail: collections.deque[str] = collections.deque(maxlen=40)
    with open(log, "w") as f:
        for line in proc.stdout:
            f.write(line)
            line = line.rstrip("\n")
            tail.append(line)
    rc = proc.wait()
    timer.cancel()
    if timed_out.is_set():
        tail.append(f"[suite] killed after the {timeout:.0f} s timeout")
        rc = rc or -9
    return rc, time.perf_counter() - t0, list(tail)


def run_one(name: str, quick: bool, run_dir: Path, log_dir: Path, timeout: float, run_id: str) -> dict:
    path = (run_dir / f"{name}.json").resolve()
    # the benchmarks run in ROOT: a path relative to it keeps the command readable
    raw = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    argv = command(name, quick, raw)
    entry = {"status": "failed", "run": run_id, "quick": quick, "created": now().isoformat(timespec="seconds"),
             "command": shown(argv), "argv": argv, "source": str(raw), "log": str(log_dir / f"{name}.log"),
             "loadavg_start": loadavg(), "error": None}
    print(f"[suite] {name}: {entry['command']}", flush=True)
    try:
        rc, wall, tail = run_logged(argv, log_dir / f"{name}.log", timeout)
        entry.update(returncode=rc, wall_s=round(wall, 1), loadavg_end=loadavg())
        if rc != 0:
            raise RuntimeError(f"exit code {rc}; last output:\n" + "\n".join(tail[-15:]))
        if not path.is_file():
            raise RuntimeError(f"{raw} was not written; last output:\n" + "\n".join(tail[-15:]))
        entry["figures"] = F.COLLECTORS[name](json.loads(path.read_text()))
        entry["status"] = "ok"
    except Exception as e:  # noqa: BLE001 - any failure of one benchmark is recorded, the suite goes on
        entry["error"] = f"{type(e).__name__}: {e}"
        entry.setdefault("loadavg_end", loadavg())
    print(f"[suite] {name}: {entry['status']} in {entry.get('wall_s', 0):.0f}s"
          + (f" - {entry['error'].splitlines()[0]}" if entry["error"] else ""), flush=True)
    return entry


def merge_previous(doc: dict, out: Path) -> None:
    """Carry over the benchmarks this run did not rerun from the previous latest file."""
    if not out.is_file():
        return
    try:
        prev = json.loads(out.read_text())
    except json.JSONDecodeError:
        print(f"[suite] {out} is not valid JSON: nothing carried over", flush=True)
        return
    for name, e in prev.get("benchmarks", {}).items():
        if name not in doc["benchmarks"]:
            # its own run's machine facts go with it: the top-level ones describe this run only
            doc["benchmarks"][name] = {**e, "carried_over": True, "machine": e.get("machine", prev.get("machine"))}


def run_suite(names: list[str], quick: bool, out: Path, timeout: float, results: Path, work: Path) -> int:
    run_id = now().strftime("%Y%m%dT%H%M%SZ") + ("-quick" if quick else "")
    run_dir, log_dir = results / "runs" / run_id, work / "suite" / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    doc = {"suite_version": 1, "run": run_id, "quick": quick, "only": names, "machine": machine(), "benchmarks": {}}
    for name in names:
        doc["benchmarks"][name] = run_one(name, quick, run_dir, log_dir, timeout, run_id)
        write_json(run_dir / "suite.json", doc)  # after each: an interrupted suite keeps what it measured
    doc["machine"]["loadavg_end"] = loadavg()
    doc["wall_s"] = round(time.perf_counter() - t0, 1)
    failed = [n for n, e in doc["benchmarks"].items() if e["status"] != "ok"]
    doc["failed"] = failed
    write_json(run_dir / "suite.json", doc)
    latest = dict(doc, benchmarks=dict(doc["benchmarks"]))
    merge_previous(latest, out)
    if out.is_file():
        print(f"[suite] replacing {out} (its runs stay in {results / 'runs'}/)", flush=True)
    write_json(out, latest)
    print(f"[suite] wrote {run_dir / 'suite.json'} and {out} in {doc['wall_s']:.0f}s"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""), flush=True)
    return 1 if failed else 0


def update_md(path: Path, table: str) -> None:
    text = F.replace_section(path.read_text(), table)
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    print(f"[suite] updated the generated section of {path}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n", 2)[2],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run; figures not comparable)")
    ap.add_argument("--only", nargs="+", choices=list(BENCHMARKS), metavar="NAME",
                    help=f"run only these, in the suite's order ({', '.join(BENCHMARKS)})")
    ap.add_argument("--out", default=None, help="the latest suite JSON (default bench/results/suite.json; "
                                                "bench/work/suite-quick.json with --quick)")
    ap.add_argument("--timeout", type=float, default=TIMEOUT_S, help="seconds per benchmark before it is killed")
    ap.add_argument("--dry-run", action="store_true", help="print the commands and expected times, run nothing")
    ap.add_argument("--markdown", action="store_true", help="print the numbers table of --out, run nothing")
    ap.add_argument("--from-results", metavar="DIR", help="with --markdown/--update-md: tabulate the standalone "
                                                          "scripts' JSONs in DIR instead of a suite JSON")
    ap.add_argument("--update-md", nargs="?", const=str(ROOT / "BENCHMARKS.md"), metavar="FILE",
                    help="write the table into FILE's generated section (default BENCHMARKS.md), run nothing")
    ap.add_argument("--results", default=str(ROOT / "bench" / "results"), help=argparse.SUPPRESS)
    ap.add_argument("--work", default=str(ROOT / "bench" / "work"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    # quick = a smoke run: kept out of the committed results (see the module doc)
    results = Path(args.work if args.quick else args.results)
    out = Path(args.out or (results / "suite-quick.json" if args.quick else results / "suite.json"))
    names = [n for n in BENCHMARKS if not args.only or n in args.only]
    if args.markdown or args.update_md or args.from_results:
        if not args.from_results and not out.is_file():
            print(f"suite: {out} does not exist: run the suite first, or use --from-results bench/results",
                  file=sys.stderr)
            return 2
        doc = F.from_results(args.from_results) if args.from_results else json.loads(out.read_text())
        table = F.markdown(doc)
        if args.update_md:
            update_md(Path(args.update_md), table)
        if args.markdown:
            print(table, end="")
        return 0
    if args.dry_run:
        total = 0
        for n in names:
            minutes = BENCHMARKS[n]["minutes"][1 if args.quick else 0]
            total += minutes
            print(f"{n:<17} ~{minutes:>2} min  {shown(command(n, args.quick, Path('RUN') / f'{n}.json'))}")
        print(f"expected total ~{total} min on 2 quiet CPUs; results -> {out}")
        return 0
    return run_suite(names, args.quick, out, args.timeout, results, Path(args.work))


if __name__ == "__main__":
    sys.exit(main())
