"""Ray Train + DeepSpeed against a plain torch loop: training positions/s of the same model on the same data
with the same threads, side by side in one run -> bench/results/train_overhead.json.

Issue 15 asks what the lab's loop costs against the plainest loop on a small model. Model and data:
issue 12's protocol (`small`, Trm++ official dims overridden to d 64 / 2 layers / 2 heads, item ids only,
max_len 21, micro-batch 16, AdamW lr 2e-3), 2 epochs. Plain: one process, the prepared train file in a
seeded permutation of micro-batches, `PretrainObjective` + torch AdamW. Lab: `uqa-ray pretrain` in its own
process with one Ray Train worker (torch threads = the plain loop's), ZeRO-0. Both count positions/s of
the last epoch without its first step (the loop's own measure). The lab runs twice: rows streamed by Ray
Data (`feed: ray_data`, the default) and read by each worker from the Arrow files (`feed: arrow`).
`--rounds` alternates the three, and the best of each is kept.

    python bench/train_overhead.py [--rounds 2] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.encoders import PROTOCOL, small_data  # noqa: E402
from uqa_ray.config import build  # noqa: E402
from uqa_ray.data.collate import collate  # noqa: E402
from uqa_ray.data.schema import PRETRAIN_FILES  # noqa: E402
from uqa_ray.io import write_json  # noqa: E402
from uqa_ray.pretrain.config import PretrainConfig  # noqa: E402
from uqa_ray.pretrain.objective import PretrainObjective  # noqa: E402
from uqa_ray.pretrain.trainer import SUMMARY_FILE, read_meta, run_name  # noqa: E402

EPOCHS = 2


def overrides(data: Path, storage: Path, threads: int) -> dict:
    return {**PROTOCOL, "data": str(data), "preset": "trm_pp-official",
            "optim": {**PROTOCOL["optim"], "epochs": EPOCHS},
            "scaling": {**PROTOCOL["scaling"], "cpus_per_worker": threads, "storage": str(storage)}}


def plain(cfg: PretrainConfig, threads: int) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(cfg.seed)
    enc_cfg = cfg.encoder_config(read_meta(cfg.data)["vocab"])
    model = PretrainObjective(enc_cfg, cfg.loss).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr)
    table = pa.ipc.open_file(pa.memory_map(str(Path(cfg.data) / PRETRAIN_FILES["train"]), "r")).read_all()
    mb = cfg.optim.micro_batch
    for epoch in range(EPOCHS):
        order = np.random.default_rng([cfg.seed, epoch]).permutation(table.num_rows)
        clock, positions = None, 0.0
        for s in range(0, len(order) - mb + 1, mb):
            out = model(collate(table.take(order[s : s + mb]), enc_cfg.max_len))
            opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            opt.step()
            n = float(out["n"])
            if clock is None:
                clock = time.perf_counter()
            else:
                positions += n
        elapsed = time.perf_counter() - clock
    return {"positions_per_s": positions / elapsed, "last_epoch_s": elapsed, "train_loss_last": float(out["loss"])}


def lab(over: dict) -> dict:
    """`uqa-ray pretrain` as a user runs it, in its own process: its Ray starts and stops with it, so the
    plain loop never runs beside an idle Ray."""
    cfg = build(PretrainConfig, over)
    sets = [f"{k}={v}" for k, v in flat(over).items() if k != "data"]
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "uqa_ray.cli", "pretrain", "--data", cfg.data, "--set", *sets],
                          capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        raise SystemExit(f"uqa-ray pretrain failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    run_dir = Path(cfg.scaling.storage) / run_name(cfg)
    metrics = json.loads((run_dir / SUMMARY_FILE).read_text())["metrics"]
    return {"positions_per_s": metrics["positions_per_s"], "wall_s": time.perf_counter() - t0, "run": str(run_dir)}


def flat(d: dict, prefix: str = "") -> dict:
    out: dict = {}
    for k, v in d.items():
        out |= flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workdir", default=str(ROOT / "bench" / "work" / "encoders"))
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "train_overhead.json"))
    a = p.parse_args()
    data = small_data(Path(a.workdir))
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    runs: dict[str, list[dict]] = {"plain": [], "lab": [], "lab_arrow": []}
    for r in range(a.rounds):
        over = overrides(data, Path(a.workdir) / "overhead" / f"{stamp}-{r}", a.threads)  # fresh: never reused
        runs["plain"].append(plain(build(PretrainConfig, over), a.threads))
        runs["lab"].append(lab(over))
        runs["lab_arrow"].append(lab({**over, "feed": "arrow"}))  # no Ray Data: each worker maps the files
        print(json.dumps({k: v[-1]["positions_per_s"] for k, v in runs.items()}), flush=True)
    best = {k: max(x["positions_per_s"] for x in v) for k, v in runs.items()}
    ratios = {f"{k}_over_plain": best[k] / best["plain"] for k in ("lab", "lab_arrow")}
    write_json(a.out, {"protocol": PROTOCOL, "epochs": EPOCHS, "threads": a.threads, "rounds": runs,
                       "best_positions_per_s": best, **ratios,
                       "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    print(json.dumps({"best": best, **ratios}))


if __name__ == "__main__":
    main()
