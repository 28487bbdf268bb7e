"""The README's main command, cold: does it show the scaling law, and how long does it take?

    python bench/main_command.py                      # seeds 0 and 1, ~5.5 min each on 2 quiet CPUs
    python bench/main_command.py --seeds 0 --keep     # one seed; copy its records, fit and plot beside the JSON

Each seed runs `python experiments/scale_model_size.py --config local` as a new user would: a fresh
workdir and an EMPTY user cache (UQA_RAY_CACHE, align/lm_cache.py), so the taught LM comes from the package
and nothing else is reused. Seed s > 0 changes every training draw - the eval questions asked, the
encoders' initialisation and batches, the adapters' - and keeps the synthetic world, whose catalog and
user split the shipped LM was taught on (`questions.seed`, `pretrain.seed`, `grid.seeds`).

From the run's own result records, `fit_params.json` and event log (never from its console) the JSON
records, per seed: wall time and each stage's, each size's overall accuracy with its 95% CI and
pretraining HR@10, the controls, the power-law fit, and the checks of issue 13's "done when": the largest
size's CI above the smallest's and above the no-embedding control's, the random control inside the
no-embedding CI, power-law R^2 >= 0.8, pretraining HR@10 rising and eval next-item loss falling (issue 12).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from uqa_ray.io import write_json  # noqa: E402
from uqa_ray.lab.events import read_events  # noqa: E402

EXPERIMENT = "scale_model_size"


def seed_sets(seed: int) -> list[str]:
    return [] if seed == 0 else [f"questions.seed={seed}", f"pretrain.seed={seed}", f"grid.seeds=[{seed}]"]


def summarize(results: Path, fit: dict) -> dict:
    """Sizes, controls, fit and checks from the records of one run (analysis/ wrote `fit`)."""
    ours = fit["ours"]
    ids = set(ours["trial_ids"])
    sizes = []
    for p in sorted(results.glob("*.json")):
        r = json.loads(p.read_text())
        if r.get("trial_id") not in ids or r["config"]["method"] != "encoder" or r.get("status") != "ok":
            continue
        o = r["scores"]["likelihood"]["overall"]
        sizes.append({"params_dense": r["encoder"]["params_dense"], "acc": o["acc"], "ci95": o["ci95"], "n": o["n"],
                      "pretrain_hr10": (r["encoder"].get("pretrain") or {}).get("HR@10"),
                      "pretrain_loss": (r["encoder"].get("pretrain") or {}).get("loss"),
                      "align_s": r["timings"].get("align_s"), "eval_s": r["timings"].get("eval_s")})
    sizes.sort(key=lambda s: s["params_dense"])
    controls = ours["controls"]
    power = ours["series"]["overall"].get("power_law", {})
    small, large = sizes[0], sizes[-1]
    none, rand = controls.get("no_embedding", {}), controls.get("random_embedding", {})
    hr = [s["pretrain_hr10"] for s in sizes]
    loss = [s["pretrain_loss"] for s in sizes]
    checks = {
        "sizes_ge_4": len(sizes) >= 4,
        "largest_ci_above_smallest_ci": large["ci95"][0] > small["ci95"][1],
        "largest_ci_above_no_embedding_ci": bool(none) and large["ci95"][0] > none["hi"],
        "random_within_no_embedding_ci": bool(none and rand) and none["lo"] <= rand["acc"] <= none["hi"],
        "power_law_r2_ge_0.8": power.get("r2", 0.0) >= 0.8,
        "pretrain_hr10_rises": all(b > a for a, b in zip(hr, hr[1:])),
        "pretrain_loss_falls": all(b < a for a, b in zip(loss, loss[1:])),
    }
    return {"sizes": sizes, "controls": controls,
            "power_law": {k: power.get(k) for k in ("params", "r2", "rmse")},
            "checks": checks, "law_shown": all(checks.values())}


def run_seed(seed: int, config: str, keep: Path | None) -> dict:
    work = Path(tempfile.mkdtemp(prefix=f"uqa-main-s{seed}-"))
    cache = Path(tempfile.mkdtemp(prefix="uqa-cache-"))
    argv = [sys.executable, "experiments/scale_model_size.py", "--config", config, "--workdir", str(work / "lab")]
    if seed_sets(seed):
        argv += ["--set", *seed_sets(seed)]
    env = dict(os.environ, UQA_RAY_CACHE=str(cache), UQA_PROGRESS="0", PYTHONUNBUFFERED="1")
    log = work / "run.log"
    print(f"[bench] seed {seed}: {' '.join(argv[1:])} (log {log})", flush=True)
    t0 = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.run(argv, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - t0
    entry = {"seed": seed, "sets": seed_sets(seed), "returncode": rc, "wall_s": round(wall, 1), "log": str(log)}
    reports, results = work / "lab" / "reports" / EXPERIMENT, work / "lab" / "results" / EXPERIMENT
    entry["stages_s"] = {e["stage"]: e["wall_s"] for e in read_events(work / "lab")}  # the lab's event log
    if rc == 0:
        fit = json.loads((reports / "fit_params.json").read_text())
        entry.update(summarize(results, fit))
        if keep is not None:
            dest = keep / f"seed-{seed}"
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(results, dest)
            for name in ("fit_params.json", "scaling_params.png", "table5.md"):
                shutil.copy2(reports / name, dest / name)
            entry["kept"] = str(dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest)
    else:
        entry["tail"] = log.read_text().splitlines()[-20:]
    shutil.rmtree(cache, ignore_errors=True)
    print(f"[bench] seed {seed}: rc {rc} in {wall:.0f}s" + (f", law shown: {entry.get('law_shown')}"
                                                            f" {entry.get('checks')}" if rc == 0 else ""), flush=True)
    return entry


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--config", default="local", help="the experiment preset (default: the main command's)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "main_command.json"))
    p.add_argument("--keep", nargs="?", const="", default=None, metavar="DIR",
                   help="copy each seed's records, fit and plot into DIR/seed-N (default: beside --out)")
    p.add_argument("--append", action="store_true",
                   help="keep the other seeds already in --out (each seed entry says when it ran)")
    args = p.parse_args(argv)
    out = Path(args.out)
    keep = None if args.keep is None else Path(args.keep or out.with_suffix(""))
    doc = {"config": args.config, "cpus": os.cpu_count(), "seeds": []}
    for s in args.seeds:
        load = list(os.getloadavg())
        entry = {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "loadavg_start": load,
                 **run_seed(s, args.config, keep), "loadavg_end": list(os.getloadavg())}
        # --append reads --out again just before writing: a bench of another seed may have written it since
        others = json.loads(out.read_text())["seeds"] if args.append and out.is_file() else doc["seeds"]
        doc["seeds"] = sorted([e for e in others if e["seed"] != s] + [entry], key=lambda e: e["seed"])
        write_json(out, doc)  # after each seed: an interrupted bench keeps what it measured
    print(f"[bench] wrote {args.out}", flush=True)
    return 0 if all(e["returncode"] == 0 for e in doc["seeds"]) else 1


if __name__ == "__main__":
    sys.exit(main())
