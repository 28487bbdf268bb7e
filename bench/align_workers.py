"""Benchmark: one alignment trained in one process vs by N Ray Train + DeepSpeed workers, side by side
-> bench/results/align_workers.json.

    python bench/align_workers.py                      # the evaluation bench's tiny system (built, cached)
    python bench/align_workers.py --data D --encoder E --llm L --steps 40

For each strategy, the same AlignConfig (the embedded preset, `--steps` optimiser steps of `--batch`
questions) runs twice: `scaling.num_workers` 0 (train.py, the trial's own process, every CPU's thread)
and `--workers` (align/distributed.py: a TorchTrainer, ZeRO `--zero`, the CPUs split between workers).
Recorded per run: the caller's wall time (Ray Train adds worker start-up, DeepSpeed's set-up and the
checkpoint hand-off), the set-up inside the loop (loading, deepspeed.initialize), the time per step
(progress reports included: under Ray Train V2 each is a collective through a synchronisation actor, so
`--log-every` matters) and the largest relative difference between the two runs' per-step losses, which
must be ~1e-7 (the same step). Then, side by side, the first strategy under Ray Train once more with a
progress report after every step: the cost of a report.

On CPU this measures what the distributed path COSTS: gloo all-reduces and ZeRO bookkeeping on cores
that one process would use anyway. It exists for GPUs, where one GPU cannot hold a 3B full fine-tune.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def _evaluate_bench():
    spec = importlib.util.spec_from_file_location("bench_evaluate", ROOT / "evaluate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def default_system(work: Path) -> tuple[Path, Path, Path]:
    """(data, encoder, llm) of the evaluation bench (tiny log, untrained tiny encoder and LM), cached."""
    ev = _evaluate_bench()
    data = ev.build_data(work)
    ev.build_system(data, work)
    return data, work / "encoder", next((work / "llm").glob("tiny-*"))


def run(cfg, data: Path, encoder: Path, llm: Path) -> dict:
    from uqa_ray.align.train import train_alignment

    with tempfile.TemporaryDirectory(prefix="uqa-bench-align-") as d:
        t0 = time.perf_counter()
        summary = train_alignment(cfg, data, encoder, llm, Path(d) / "a")
        wall = time.perf_counter() - t0
    return {"wall_s": wall, "train_s": summary["train_s"], "setup_s": summary["setup_s"], "step_s": summary["step_s"],
            "steps": summary["steps"], "status": summary["status"],
            "loss_curve": summary["loss_curve"], "world": summary.get("world", 1)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, help="a prepared folder with questions (default: built in --work)")
    p.add_argument("--encoder", type=Path)
    p.add_argument("--llm", type=Path)
    p.add_argument("--work", type=Path, default=ROOT / "work" / "evaluate")
    p.add_argument("--strategies", nargs="+", default=["adapter", "full"])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--log-every", type=int, default=10, help="steps between progress reports (Ray Train: a report "
                   "is a round trip through the controller)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--zero", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "align_workers.json")
    args = p.parse_args(argv)

    import torch

    from uqa_ray.align.config import align_config
    from uqa_ray.io import write_json
    from uqa_ray.raysetup import init_ray

    if args.data:
        if not (args.encoder and args.llm):
            p.error("--data needs --encoder and --llm")
        data, encoder, llm = args.data, args.encoder, args.llm
        for path in (data, encoder, llm):
            if not path.is_dir():
                p.error(f"{path}: no such folder")
    else:
        data, encoder, llm = default_system(args.work)
    cpus = os.cpu_count() or 1
    init_ray()  # started before the clock: both paths run in a process that has Ray up
    res = {"cpus": cpus, "steps": args.steps, "batch": args.batch, "log_every": args.log_every,
           "workers": args.workers, "zero_stage": args.zero, "data": str(data), "encoder": str(encoder),
           "llm": str(llm), "torch": torch.__version__, "runs": {}}
    for strategy in args.strategies:
        base = {"strategy": strategy, "max_steps": args.steps, "batch_size": args.batch, "log_every": args.log_every,
                "llm_lr": 1e-4}
        one = run(align_config("embedded", base, {"threads": cpus}), data, encoder, llm)
        many = run(align_config("embedded", base, {"scaling": {
            "num_workers": args.workers, "zero_stage": args.zero, "cpus_per_worker": cpus / args.workers}}),
            data, encoder, llm)
        diff = max(abs(a - b) / abs(a) for a, b in zip(one["loss_curve"], many["loss_curve"]))
        res["runs"][strategy] = {"one_process": one, "ray_train": many, "max_rel_loss_diff": diff,
                                 "wall_ratio": many["wall_s"] / one["wall_s"],
                                 "step_ratio": many["step_s"] / one["step_s"]}
        print(f"[bench] {strategy}: one process {one['wall_s']:.1f} s ({one['step_s']:.3f} s/step), "
              f"{args.workers} Ray Train workers {many['wall_s']:.1f} s (set-up {many['setup_s']:.1f} s, "
              f"{many['step_s']:.3f} s/step), max relative loss difference {diff:.1e}", flush=True)
    # What a Ray Train V2 report costs, side by side in this run: the first strategy again under Ray Train,
    # reporting after every step (each report is a collective through a synchronisation actor).
    first = args.strategies[0]
    every = run(align_config("embedded", {"strategy": first, "max_steps": args.steps, "batch_size": args.batch,
                                          "log_every": 1, "llm_lr": 1e-4},
                             {"scaling": {"num_workers": args.workers, "zero_stage": args.zero,
                                          "cpus_per_worker": cpus / args.workers}}), data, encoder, llm)
    base_run = res["runs"][first]["ray_train"]
    res["report_cost"] = {"strategy": first, "report_every_step": every,
                          "step_ratio": every["step_s"] / base_run["step_s"],
                          "s_per_report": (every["step_s"] - base_run["step_s"]) * args.steps /
                          (args.steps - args.steps // args.log_every)}
    print(f"[bench] {first} under Ray Train, a report every step: {every['step_s']:.3f} s/step against "
          f"{base_run['step_s']:.3f} every {args.log_every} ({res['report_cost']['s_per_report']:.2f} s per "
          "extra report)", flush=True)
    write_json(args.out, res)
    print(f"[bench] wrote {args.out}")


if __name__ == "__main__":
    main()
