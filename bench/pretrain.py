"""Pretraining micro-benchmarks on CPU -> bench/results/pretrain.json (the suite passes its own --out).

The figures have one source: the suite's quiet run, of which bench/results/pretrain.json is a copy
(BENCHMARKS.md, "Latest numbers"); `--ce-only` and `--step-only` write one comparison alone into bench/work/
(ce.json, pretrain_step.json: quick looks, not committed figures).

1. Positions/s of Trm++ at the official dims (4 layers, d 512, seq 512), fp32: forward + backward +
   optimizer step at the official vocabulary (994,447 items) on each path of STEP_PATHS side by side (the
   chunked CE with dense tables, the path before issue 15, against the fused CE, sampled softmax and
   row-sparse tables), at `small`'s vocabulary, on a stand-in loss, and the full CE's best case (`gemm_bound`).
2. The full-vocabulary CE at 1M items (item dim 128, 512 positions): naive, chunked and fused, each
   forward + backward in a fresh subprocess (`--ce-repeats` rounds, kinds alternating): wall time, the
   loss's own memory (peak RSS - RSS before it), max relative error of loss and gradients.
3. `--gpu` -> bench/results/pretrain_gpu.json: peak allocated memory of chunked vs naive CE at 1M items
   for the paper's micro-batch (4 x 512), and bf16 positions/s of a training step with its own peak
   allocated memory (`throughput.train_peak_allocated_mb`, measured after a reset).

Usage: python bench/pretrain.py [--steps 2] [--batch 2] [--rounds 1] [--mem-batch 1] [--mem-len 512]
                                [--items 1000000] [--ce-only] [--ce-repeats 3] [--step-only]
       python bench/pretrain.py --gpu
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from uqa_ray.data.schema import BPE_COLUMNS, ID_COLUMNS  # noqa: E402
from uqa_ray.encoders import OFFICIAL_VOCAB, count_params, preset_config  # noqa: E402
from uqa_ray.io import write_json  # noqa: E402
from uqa_ray.pretrain.losses import (  # noqa: E402
    LossConfig, chunked_cross_entropy, fused_cross_entropy, fused_rows, naive_cross_entropy,
)
from uqa_ray.pretrain.objective import PretrainObjective  # noqa: E402
from uqa_ray.pretrain.tables import RowSparseAdam, split_parameters  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def synthetic_batch(b: int, t: int, vocab: dict[str, int], seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {c: torch.randint(1, vocab[c], (b, t), generator=g) for c in ID_COLUMNS}
    out |= {c: torch.randint(1, vocab["bpe"], (b, t, 8), generator=g) for c in BPE_COLUMNS}
    out["mask"] = torch.ones(b, t, dtype=torch.bool)
    return out


# The embedded default's scale (`uqa-ray synth --preset small`: 5,000 items), beside the official sizes.
SMALL_VOCAB = {"uni_seq_item_id": 5_001, "uni_seq_cate_id": 201, "uni_seq_brand_id": 801,
               "uni_seq_shop_id": 1_601, "uni_seq_seller_id": 1_601, "bpe": 8_000}


# The whole step at the official vocabulary, each path behind its flags (issue 15): name -> (loss, tables).
# The first is the path before issue 15 (chunked CE, every table row updated by AdamW each step).
STEP_PATHS = {
    "official_vocab_chunked_ce": (LossConfig(kind="ce", ce="chunked", chunk_size=32768), "dense"),
    "official_vocab_fused_ce": (LossConfig(kind="ce"), "dense"),
    "official_vocab_fused_ce_sparse_tables": (LossConfig(kind="ce"), "sparse"),
    # twice the default's logits buffer (128 rows per chunk, 512 MB): the fused CE's memory-for-speed knob
    "official_vocab_fused_ce_2x_buffer_sparse_tables": (LossConfig(kind="ce", max_logits=1 << 27), "sparse"),
    "official_vocab_sampled": (LossConfig(kind="sampled", sampler="popularity", n_negatives=1024), "dense"),
    "official_vocab_sampled_sparse_tables": (LossConfig(kind="sampled", sampler="popularity", n_negatives=1024),
                                             "sparse"),
}
BASELINE_PATH = "official_vocab_chunked_ce"


def zipf_counts(items: int) -> torch.Tensor:
    """Training counts for the popularity sampler: Zipf over a seeded permutation of the item ids."""
    g = torch.Generator().manual_seed(0)
    counts = torch.zeros(items)
    counts[1 + torch.randperm(items - 1, generator=g)] = 1e6 / torch.arange(1, items).float()
    return counts


def time_steps(cfg, vocab: dict[str, int], steps: int, batch: int, seq: int, loss: LossConfig | None = None,
               tables: str = "dense", stand_in: bool = False) -> dict:
    """Forward + backward + optimizer step as the lab's loop makes it (pretrain/loop.py): AdamW over the
    dense parameters, and with `tables` "sparse" RowSparseAdam over the tables the objective hands it."""
    torch.manual_seed(0)
    loss = loss or LossConfig(kind="ce", ce="chunked", chunk_size=32768)
    counts = zipf_counts(vocab["uni_seq_item_id"]) if loss.kind == "sampled" and loss.sampler != "uniform" else None
    obj = PretrainObjective(cfg, loss, counts)
    dense, sparse = split_parameters(obj, tables)
    hp = {"lr": 4e-4, "betas": (0.9, 0.999), "eps": 1e-8}
    opt = torch.optim.AdamW(dense, weight_decay=0.0, **hp)
    table_opt = RowSparseAdam(sparse, **hp) if sparse else None
    times = []
    for step in range(steps + 1):  # the first step warms up (allocations, AdamW state)
        b = synthetic_batch(batch, seq, vocab, seed=step)
        t0 = time.perf_counter()
        if stand_in:  # same encoder + head, a loss with no item softmax
            out_loss, n = obj.head(obj.encoder(b)).pow(2).mean(), batch * (seq - 1)
        else:
            out = obj(b)
            out_loss, n = out["loss"], int(out["n"])
        opt.zero_grad(set_to_none=False)
        out_loss.backward()
        if table_opt:
            table_opt.step()
        opt.step()
        if step:
            times.append(time.perf_counter() - t0)
    mean = sum(times) / len(times)
    return {"items": vocab["uni_seq_item_id"], "params": count_params(obj), "loss": dataclasses.asdict(loss),
            "tables": tables, "step_s": times, "mean_step_s": mean, "positions_per_s": n / mean,
            "final_loss": out_loss.item()}


def throughput(steps: int, batch: int, seq: int, rounds: int = 1) -> dict:
    """Every path of STEP_PATHS side by side in one run (`rounds` times, paths alternating; each path's best
    round kept), its ratio to the baseline path, then the stand-in loss and `small`'s vocabulary."""
    cfg = preset_config("trm_pp-official", OFFICIAL_VOCAB, max_len=seq)
    out: dict = {"encoder": "trm_pp-official", "dtype": "float32", "rounds": rounds,
                 "optimizer": "AdamW (+ RowSparseAdam: sparse tables)",
                 "dims": {"layers": cfg.n_layers, "d_model": cfg.d_model, "heads": cfg.n_heads,
                          "ffn": 1536, "seq": seq, "batch": batch}}
    runs: dict[str, list[dict]] = {name: [] for name in STEP_PATHS}
    for _ in range(rounds):
        for name, (loss, tables) in STEP_PATHS.items():
            runs[name].append(time_steps(cfg, OFFICIAL_VOCAB, steps, batch, seq, loss, tables))
            print(f"{name}: {runs[name][-1]['positions_per_s']:.1f} positions/s", flush=True)
    for name, rs in runs.items():
        out[name] = {**max(rs, key=lambda r: r["positions_per_s"]),
                     "positions_per_s_all": [r["positions_per_s"] for r in rs]}
    base = out[BASELINE_PATH]["positions_per_s"]
    out["x_baseline"] = {name: out[name]["positions_per_s"] / base for name in STEP_PATHS}
    out["official_vocab_no_item_softmax"] = time_steps(cfg, OFFICIAL_VOCAB, steps, batch, seq, stand_in=True)
    small = preset_config("trm_pp-official", SMALL_VOCAB, max_len=seq)
    out["small_vocab_chunked_ce"] = time_steps(small, SMALL_VOCAB, steps, batch, seq)
    out["ce_share_of_step_official_vocab"] = 1 - (
        out["official_vocab_no_item_softmax"]["mean_step_s"] / out[BASELINE_PATH]["mean_step_s"])
    out["fused_ce_gemm_bound"] = gemm_bound(batch * (seq - 1), OFFICIAL_VOCAB["uni_seq_item_id"], 128, rounds,
                                            out["official_vocab_fused_ce_sparse_tables"]["mean_step_s"], base)
    return out


def _best_s(fn: Callable[[], object], rounds: int) -> float:
    fn()  # warm-up: allocations, page faults
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def gemm_bound(n: int, items: int, dim: int, rounds: int, fused_step_s: float, base_positions_per_s: float) -> dict:
    """How fast the whole step with the full CE could be on this machine: the fused CE's three matmul passes
    alone (logits, dh = p W, dW += p^T h) at its own shapes and layout (`fused_rows`, item-major), against
    the fused CE itself at the step's shape and a 4096^2 matmul's rate; the step with its CE replaced by
    those matmuls alone is the best any CE code could do with these matmul shapes (BENCHMARKS.md)."""
    g = torch.Generator().manual_seed(0)
    h = torch.randn(n, dim, generator=g) * 0.1
    w = torch.randn(items, dim, generator=g) * 0.1
    t = torch.randint(0, items, (n,), generator=g)
    rows = fused_rows(LossConfig().max_logits, items)
    buf, gw = torch.empty(min(rows, n) * items), torch.zeros(items, dim)

    def passes() -> None:
        for s in range(0, n, rows):
            hc = h[s : s + rows]
            logits = buf[: items * hc.shape[0]].view(items, hc.shape[0])
            torch.mm(w, hc.T, out=logits)
            torch.mm(logits.T, w)
            gw.addmm_(logits, hc)

    def fused() -> None:
        hg, wg = h.clone().requires_grad_(), w.clone().requires_grad_()
        fused_cross_entropy(hg, wg, t).backward()

    sq = torch.randn(4096, 4096, generator=g)
    flops = 3 * 2 * n * dim * items
    res = {"positions": n, "items": items, "item_dim": dim, "rows_per_chunk": rows, "ce_gflop": flops / 1e9,
           "square_gemm_gflop_per_s": 2 * 4096**3 / _best_s(lambda: sq @ sq, rounds) / 1e9,
           "ce_matmuls_s": _best_s(passes, rounds), "fused_ce_s": _best_s(fused, rounds)}
    res["ce_matmuls_gflop_per_s"] = flops / 1e9 / res["ce_matmuls_s"]
    rest = fused_step_s - res["fused_ce_s"]  # the step without its CE (fused CE + row-sparse tables path)
    at_square_rate = flops / 1e9 / res["square_gemm_gflop_per_s"]
    for name, ce_s in (("ce_shapes", res["ce_matmuls_s"]), ("square_rate", at_square_rate)):
        res[f"best_step_s_{name}"] = rest + ce_s
        res[f"best_x_baseline_{name}"] = n / (rest + ce_s) / base_positions_per_s
    return res


CE_KINDS = ("naive", "chunked", "fused")


def memory_child(kind: str, n: int, items: int, dim: int, chunk: int, grads_to: str) -> None:
    """Runs in a fresh process: one forward + backward of one loss; prints JSON, saves the gradients."""
    g = torch.Generator().manual_seed(0)
    h = (torch.randn(n, dim, generator=g) * 0.1).requires_grad_()
    w = (torch.randn(items, dim, generator=g) * 0.1).requires_grad_()
    t = torch.randint(0, items, (n,), generator=g)
    before = rss_mb()
    t0 = time.perf_counter()
    if kind == "naive":
        loss = naive_cross_entropy(h, w, t)
    elif kind == "chunked":
        loss = chunked_cross_entropy(h, w, t, chunk)
    else:
        loss = fused_cross_entropy(h, w, t, LossConfig().max_logits)
    loss.backward()
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    torch.save({"loss": loss.detach(), "h": h.grad, "w": w.grad}, grads_to)
    print(json.dumps({"kind": kind, "loss": float(loss), "grad_h_norm": float(h.grad.norm()),
                      "rss_before_loss_mb": before, "peak_rss_mb": peak, "loss_overhead_mb": peak - before,
                      "wall_s": wall}))


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def memory(n_batch: int, seq: int, items: int, dim: int, chunk: int, repeats: int = 1) -> dict:
    n = n_batch * seq
    res: dict = {"batch": n_batch, "seq": seq, "positions": n, "items": items, "item_dim": dim, "chunk": chunk,
                 "max_logits": LossConfig().max_logits, "naive_logits_mb": n * items * 4 / 2**20, "repeats": repeats}
    runs: dict[str, list[dict]] = {k: [] for k in CE_KINDS}
    with tempfile.TemporaryDirectory() as d:
        for _ in range(repeats):  # kinds alternate, so drifting load hits all alike
            for kind in CE_KINDS:
                cmd = [sys.executable, __file__, "--child", kind, str(n), str(items), str(dim), str(chunk),
                       f"{d}/{kind}.pt"]
                p = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
                if p.returncode:
                    raise RuntimeError(f"{kind} child failed ({p.returncode}): {p.stderr[-2000:]}")
                runs[kind].append(json.loads(p.stdout.strip().splitlines()[-1]))
        grads = {k: torch.load(f"{d}/{k}.pt") for k in CE_KINDS}
    for kind in CE_KINDS:
        res[kind] = {**runs[kind][-1], "wall_s": min(r["wall_s"] for r in runs[kind]),
                     "wall_s_all": [r["wall_s"] for r in runs[kind]]}
    for kind in ("chunked", "fused"):
        res[kind]["vs_naive"] = {
            "time_ratio": res[kind]["wall_s"] / res["naive"]["wall_s"],
            "overhead_ratio": res[kind]["loss_overhead_mb"] / res["naive"]["loss_overhead_mb"],
            **{f"{x}_max_rel_err": _rel_err(grads[kind][x], grads["naive"][x]) for x in ("loss", "h", "w")}}
    # kept for the suite's figures (bench/suite_figures.py) and older results
    res["loss_abs_diff"] = abs(res["chunked"]["loss"] - res["naive"]["loss"])
    res["overhead_ratio_naive_over_chunked"] = res["naive"]["loss_overhead_mb"] / res["chunked"]["loss_overhead_mb"]
    res["peak_ratio_naive_over_chunked"] = res["naive"]["peak_rss_mb"] / res["chunked"]["peak_rss_mb"]
    return res


def gpu(batch: int, seq: int, items: int, steps: int) -> dict:
    """On CUDA: peak allocated memory of chunked vs naive CE at `items` (one process, stats reset in
    between), and bf16-autocast positions/s of Trm++ official with the chunked CE at official vocab, with
    the training step's own peak allocated memory (stats reset again after the CE comparison)."""
    dev = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = False
    n = batch * seq
    mem: dict = {"batch": batch, "seq": seq, "items": items, "item_dim": 128, "dtype": "float32"}
    for rep, kind in [(0, "chunked"), (0, "naive"), (1, "chunked"), (1, "naive")]:  # rep 0 warms up
        g = torch.Generator(device=dev).manual_seed(0)  # the same data for both losses
        h = (torch.randn(n, 128, generator=g, device=dev) * 0.1).requires_grad_()
        w = (torch.randn(items, 128, generator=g, device=dev) * 0.1).requires_grad_()
        t = torch.randint(0, items, (n,), generator=g, device=dev)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        t0 = time.perf_counter()
        loss = chunked_cross_entropy(h, w, t, 32768) if kind == "chunked" else naive_cross_entropy(h, w, t)
        loss.backward()
        torch.cuda.synchronize()
        if rep:
            mem[kind] = {"loss": loss.item(), "wall_s": time.perf_counter() - t0,
                         "overhead_mb": (torch.cuda.max_memory_allocated() - before) / 2**20}
        del h, w, t, loss
        torch.cuda.empty_cache()
    mem["overhead_ratio_naive_over_chunked"] = mem["naive"]["overhead_mb"] / mem["chunked"]["overhead_mb"]
    mem["loss_abs_diff"] = abs(mem["naive"]["loss"] - mem["chunked"]["loss"])
    torch.backends.cuda.matmul.allow_tf32 = True
    # The peak below must be the training step's own: without this reset it would still hold the naive
    # CE's peak from the comparison above (~23 GB at 1M items), which dwarfs the step's.
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    torch.manual_seed(0)
    cfg = preset_config("trm_pp-official", OFFICIAL_VOCAB, max_len=seq)
    obj = PretrainObjective(cfg, LossConfig(kind="ce", chunk_size=32768)).to(dev)
    opt = torch.optim.AdamW(obj.parameters(), lr=4e-4, weight_decay=0.0, fused=True)
    times = []
    for step in range(steps + 2):
        b = {k: v.to(dev, non_blocking=True) for k, v in synthetic_batch(batch, seq, OFFICIAL_VOCAB, step).items()}
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = obj(b)
        opt.zero_grad(set_to_none=False)
        out["loss"].backward()
        opt.step()
        torch.cuda.synchronize()
        if step >= 2:
            times.append(time.perf_counter() - t0)
    mean = sum(times) / len(times)
    thr = {"encoder": "trm_pp-official", "batch": batch, "seq": seq, "items": OFFICIAL_VOCAB["uni_seq_item_id"],
           "precision": "bf16 autocast, TF32", "mean_step_s": mean, "positions_per_s": int(out["n"]) / mean,
           # Peak allocated over model + AdamW state + the warm-up and timed steps (stats reset after the CE
           # comparison). Named apart from the old `peak_mem_mb`, which held the naive CE's peak instead.
           "train_peak_allocated_mb": torch.cuda.max_memory_allocated() / 2**20}
    return {"device": torch.cuda.get_device_name(), "ce_memory": mem, "throughput": thr}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, (n, items, dim, chunk), grads_to = sys.argv[2], map(int, sys.argv[3:7]), sys.argv[7]
        memory_child(kind, n, items, dim, chunk, grads_to)
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--mem-batch", type=int, default=1)
    ap.add_argument("--mem-len", type=int, default=512)
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--chunk", type=int, default=32768)
    ap.add_argument("--ce-repeats", type=int, default=3, help="rounds of the CE comparison (best time kept)")
    ap.add_argument("--rounds", type=int, default=1, help="rounds of the step comparison (best kept per path)")
    ap.add_argument("--ce-only", action="store_true", help="the CE comparison alone -> bench/work/ce.json")
    ap.add_argument("--step-only", action="store_true",
                    help="the whole-step comparison alone -> bench/work/pretrain_step.json")
    ap.add_argument("--gpu", action="store_true", help="CUDA mode -> bench/results/pretrain_gpu.json")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.gpu:
        res = gpu(4, args.seq, args.items, max(args.steps, 10))
        write_json(args.out or ROOT / "bench" / "results" / "pretrain_gpu.json", res)
        print(json.dumps(res, indent=2))
        return
    torch.manual_seed(0)
    result: dict = {
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "python": platform.python_version(), "load_avg_at_start": os.getloadavg()},
    }
    if not args.step_only:
        result["memory"] = memory(args.mem_batch, args.mem_len, args.items, 128, args.chunk, args.ce_repeats)
    if not args.ce_only:
        result["throughput"] = throughput(args.steps, args.batch, args.seq, args.rounds)
    result["machine"]["load_avg_at_end"] = os.getloadavg()
    default = ROOT / "bench" / ("work/pretrain_step.json" if args.step_only else
                                "work/ce.json" if args.ce_only else "results/pretrain.json")
    write_json(args.out or default, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
