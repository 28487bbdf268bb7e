"""What one killed trial costs: the CI preset run undisturbed and with one Tune trial SIGKILLed, side by side.

    python bench/trial_kill.py                 # ~6 min on 2 quiet CPUs

`experiments/scale_model_size.py --config ci` runs three times, each in a fresh workdir, all with one user
cache: a warm-up (it teaches the tiny LM into the cache, so that neither measured run does), an undisturbed
run, and a run whose first trial process (`ray::ImplicitFunc.train`) is SIGKILLed a few seconds in, as a
preempted node would kill it; Tune runs it again (`grid.max_failures`, default 2). The JSON records both
walls, the overhead, the exit codes, and whether the two runs' records hold the same scores.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.lab.test_trial_kill import EXPERIMENT, _run  # noqa: E402
from uqa_ray.config import load_yaml  # noqa: E402
from uqa_ray.io import write_json  # noqa: E402


def _scores(work: Path) -> dict[str, dict]:
    """Scores by (method, encoder size): trial ids hash their workdir's paths, so they differ between runs."""
    out = {}
    for p in (work / "results" / EXPERIMENT).glob("*.json"):
        r = json.loads(p.read_text())
        out[f"{r['config']['method']}-{(r.get('encoder') or {}).get('params_dense')}"] = r["scores"]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "trial_kill.json"))
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="uqa-trial-kill-") as d:
        d = Path(d)
        runs = {}
        for name, kill in (("warmup", False), ("undisturbed", False), ("one_trial_killed", True)):
            t0 = time.perf_counter()
            rc, out, killed = _run(d / name / "lab", d / f"{name}.log", cache=d / "user-cache", kill=kill)
            runs[name] = {"rc": rc, "wall_s": round(time.perf_counter() - t0, 1), "killed_pid": killed}
            print(f"[bench] {name}: rc {rc}, {runs[name]['wall_s']} s" + (f", killed pid {killed}" if kill else ""),
                  flush=True)
            if rc != 0:
                print(out[-3000:], file=sys.stderr)
        calm_scores, hit_scores = _scores(d / "undisturbed" / "lab"), _scores(d / "one_trial_killed" / "lab")
        ci = load_yaml(ROOT / "experiments" / "configs" / EXPERIMENT / "ci.yaml")
        planned = len(ci["variants"]) * len(ci["grid"]["methods"])
        same = len(calm_scores) == planned and calm_scores == hit_scores
    calm, hit = runs["undisturbed"]["wall_s"], runs["one_trial_killed"]["wall_s"]
    doc = {"what": "scale_model_size --config ci, fresh workdirs, one warm user cache; one Tune trial SIGKILLed "
                   "a few seconds in, retried by Tune (grid.max_failures 2)",
           "runs": runs, "overhead_s": round(hit - calm, 1), "overhead_ratio": round(hit / calm, 3),
           "same_scores": same, "date": time.strftime("%Y-%m-%d")}
    write_json(Path(args.out), doc)
    print(json.dumps(doc, indent=1))
    return 0 if same and all(r["rc"] == 0 for r in runs.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
