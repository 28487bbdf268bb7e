"""bf16 MFU of Trm++ presets on one GPU: the real per-worker loop under torchrun + DeepSpeed (no Ray).

Writes official-format Arrow files with the official vocabulary sizes (random ids: throughput does not
depend on the values), then for each preset and each training path (PATHS: by default the full CE with
dense tables and sampled softmax with row-sparse tables; `--paths ce-liger-dense ce-cce-dense` the full CE by
a library kernel) runs `python -m torch.distributed.run
--nproc_per_node 1 -m uqa_ray.pretrain.torchrun` for a fixed number of steps and reads the loop's own
metrics (positions/s excluding the first step, MFU against the device's dense bf16 peak). Then a
torch.profiler table of the top 10 ops of a few plain training steps (the objective and its optimizers,
no DeepSpeed) for each preset and path. Last, the full CE's kernels side by side at the micro-batch's shape
(`ce_kernels`): the lab's fused and chunked CE and, where installed, the library fused linear CEs issue 15
names (Liger, Cut Cross-Entropy: `loss.ce` liger / cce), each timed forward + backward with its peak memory
and its error against an fp32 softmax. Output: `bench/results/pretrain_mfu.json`.

    pip install --no-deps liger-kernel cut-cross-entropy   # optional, CUDA only (Triton kernels)
    python bench/pretrain_mfu.py --presets 85M 303M --steps 40          # ~3-4 min on one H100
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from uqa_ray.data.schema import (  # noqa: E402
    BPE_COLUMNS, ID_COLUMNS, META_FILE, PRETRAIN_FILES, PRETRAIN_SCHEMA, USERS_FILES,
)
from uqa_ray.data.sequences import write_splits  # noqa: E402
from uqa_ray.encoders.config import OFFICIAL_VOCAB  # noqa: E402

BAG = {"uni_seq_title_bpe_token_ids": 12}  # title tokens per click; other names 3
# name -> PretrainConfig overrides: the default path, and the one for the official vocabulary's scale
PATHS = {
    "ce-dense": (),
    "sampled-sparse": ("loss.kind=sampled", "loss.sampler=popularity", "loss.n_negatives=1024",
                       "optim.tables=sparse"),
    # the full CE by a library kernel (pip install liger-kernel / cut-cross-entropy); not run by default
    "ce-liger-dense": ("loss.ce=liger", "scaling.use_gpu=true"),
    "ce-cce-dense": ("loss.ce=cce", "scaling.use_gpu=true"),
}
DEFAULT_PATHS = ["ce-dense", "sampled-sparse"]


def write_data(out: Path, users: int, length: int, seed: int = 0) -> None:
    """Random clicks at the official vocabulary in the prepared format, written by the lab's own writer
    (data/sequences.py `write_splits`, Ray-free): `users` train users and 16 eval users of `length` clicks."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    n = users + 16
    offsets = np.arange(0, (n + 1) * length, length, dtype=np.int32)
    cols = {}
    for c in ID_COLUMNS:
        ids = rng.integers(1, OFFICIAL_VOCAB[c], n * length)
        inner = pa.ListArray.from_arrays(np.arange(n * length + 1, dtype=np.int32), pa.array(ids))
        cols[c] = pa.ListArray.from_arrays(offsets, inner)
    for c in BPE_COLUMNS:
        k = BAG.get(c, 3)
        ids = rng.integers(1, OFFICIAL_VOCAB["bpe"], n * length * k)
        inner = pa.ListArray.from_arrays(np.arange(0, n * length * k + 1, k, dtype=np.int32), pa.array(ids))
        cols[c] = pa.ListArray.from_arrays(offsets, inner)
    user = np.arange(1, n + 1, dtype=np.int64)  # dense user ids, increasing within each split
    side = {"user": user, "raw_user_id": user, "eval": user > users, "length": np.full(n, length, np.int64),
            "ts": pa.ListArray.from_arrays(offsets, pa.array(np.tile(np.arange(length, dtype=np.int64), n)))}
    table = pa.table(cols).cast(PRETRAIN_SCHEMA)
    for name, col in side.items():
        table = table.append_column(name, pa.array(col) if not isinstance(col, pa.Array) else col)
    parts = (table.slice(i, 256) for i in range(0, n, 256))
    write_splits(parts, out, PRETRAIN_FILES, USERS_FILES, rows_per_batch=256)
    (out / META_FILE).write_text(json.dumps({"vocab": dict(OFFICIAL_VOCAB)}))


def run_preset(data: Path, storage: Path, preset: str, steps: int, micro_batch: int, stage: int,
               path: str = "ce-dense") -> dict:
    # torch's AdamW instead of DeepSpeed's FusedAdam: the latter JIT-compiles a CUDA op (~1-2 min) on a
    # fresh machine, which is not what this benchmark measures (the optimizer step is <2% of a step here).
    ds_json = storage.parent / "ds_override.json"
    ds_json.write_text(json.dumps({"optimizer": {"params": {"torch_adam": True}}}))
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "-m", "uqa_ray.pretrain.torchrun",
        "--data", str(data), "--set", f"preset={preset}", f"max_steps={steps}", f"scaling.zero_stage={stage}",
        "optim.epochs=1", f"optim.micro_batch={micro_batch}", "eval_batch=8", f"scaling.storage={storage}",
        f"name={preset}-z{stage}-{path}", f"scaling.deepspeed={ds_json}", *PATHS[path],
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(
                              [str(ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))})
    if proc.returncode:
        return {"preset": preset, "path": path, "error": proc.stderr[-3000:]}
    lines = (storage / f"{preset}-z{stage}-{path}" / "metrics.jsonl").read_text().splitlines()
    final = [json.loads(x) for x in lines if '"final"' in x][-1]
    return {"preset": preset, "path": path, "zero_stage": stage, "micro_batch": micro_batch, "steps": steps,
            "wall_s": time.perf_counter() - t0,
            **{k: final[k] for k in ("positions_per_s", "mfu", "precision", "train_loss") if k in final}}


def profile(preset: str, path: str, micro_batch: int, steps: int = 3) -> dict:
    """torch.profiler over `steps` plain training steps (after two warm-up steps) of `preset` on `path`:
    the objective under bf16 autocast on CUDA (fp32 on CPU), AdamW and, for sparse tables, RowSparseAdam.
    The top 10 ops by device time (CPU time without a GPU), as rows and as torch's own table."""
    import torch
    from torch.profiler import ProfilerActivity

    from uqa_ray.config import build, parse_dotted
    from uqa_ray.pretrain.config import PretrainConfig
    from uqa_ray.pretrain.objective import PretrainObjective
    from uqa_ray.pretrain.tables import RowSparseAdam, split_parameters

    on_gpu = torch.cuda.is_available()
    dev = torch.device("cuda" if on_gpu else "cpu")
    cfg = build(PretrainConfig, {"preset": preset}, parse_dotted(list(PATHS[path])))
    enc_cfg = cfg.encoder_config(dict(OFFICIAL_VOCAB))
    counts = torch.ones(OFFICIAL_VOCAB["uni_seq_item_id"]) if cfg.loss.kind == "sampled" else None
    torch.manual_seed(0)
    obj = PretrainObjective(enc_cfg, cfg.loss, counts).to(dev)
    dense, sparse = split_parameters(obj, cfg.optim.tables)
    opt = torch.optim.AdamW(dense, lr=cfg.optim.lr, betas=cfg.optim.betas, eps=cfg.optim.eps, weight_decay=0.0)
    table_opt = RowSparseAdam(sparse, cfg.optim.lr, cfg.optim.betas, cfg.optim.eps) if sparse else None
    rng = torch.Generator().manual_seed(0)

    def step() -> None:
        batch = {c: torch.randint(1, OFFICIAL_VOCAB[c], (micro_batch, enc_cfg.max_len), generator=rng)
                 for c in ID_COLUMNS}
        batch |= {c: torch.randint(1, OFFICIAL_VOCAB["bpe"], (micro_batch, enc_cfg.max_len, BAG.get(c, 3)),
                                   generator=rng) for c in BPE_COLUMNS}
        batch["mask"] = torch.ones(micro_batch, enc_cfg.max_len, dtype=torch.bool)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=on_gpu):
            loss = obj({k: v.to(dev) for k, v in batch.items()})["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if table_opt:
            table_opt.step()
        opt.step()

    for _ in range(2):
        step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        if on_gpu:
            torch.cuda.synchronize()
    key = "self_device_time_total" if on_gpu else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, key), reverse=True)[:10]
    total = sum(getattr(e, key) for e in prof.key_averages())
    return {"preset": preset, "path": path, "micro_batch": micro_batch, "steps": steps, "sort": key,
            "top10": [{"op": e.key, "calls": e.count, "self_ms": getattr(e, key) / 1e3,
                       "share": getattr(e, key) / total if total else 0.0} for e in events],
            "table": prof.key_averages().table(sort_by=key, row_limit=10)}


def _ce_kernels(dev) -> dict:
    """name -> (h, w, target) -> mean CE over rows whose target is not -100, each the lab's own
    `full_cross_entropy` under one LossConfig: the fused CE at three buffer sizes, the chunked CE and, on
    CUDA, the library kernels (`LIBRARY_CE`; a package not installed shows as that row's error)."""
    from uqa_ray.pretrain.losses import LIBRARY_CE, LossConfig, full_cross_entropy

    cfgs = {f"fused-2^{k}": LossConfig(max_logits=1 << k) for k in (26, 28, 30)} | {"chunked": LossConfig(ce="chunked")}
    if dev.type == "cuda":
        cfgs |= {name: LossConfig(ce=name) for name in LIBRARY_CE}
    return {name: (lambda h, w, t, c=c: full_cross_entropy(h, w, t, c)) for name, c in cfgs.items()}


def ce_kernels(n: int, items: int, check_items: int, dim: int = 128, iters: int = 5) -> dict:
    """Each full-CE kernel on `n` positions x `items` items x `dim` (bf16 inputs on CUDA, as under DeepSpeed
    bf16; fp32 on CPU): forward + backward time (best of `iters`) and peak memory over the inputs; then at
    `check_items` its loss and gradients against F.cross_entropy over fp32 logits of the same inputs."""
    import torch
    import torch.nn.functional as F

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32

    def inputs(v: int):
        g = torch.Generator(device=dev).manual_seed(0)
        h = (torch.randn(n, dim, generator=g, device=dev) * 0.5).to(dtype).requires_grad_()
        w = (torch.randn(v, dim, generator=g, device=dev) * 0.5).to(dtype).requires_grad_()
        t = torch.randint(0, v, (n,), generator=g, device=dev)
        t[: n // 64] = -100
        return h, w, t

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    hc, wc, tc = inputs(check_items)
    ref = F.cross_entropy(hc.float() @ wc.float().T, tc, ignore_index=-100)
    ref_h, ref_w = torch.autograd.grad(ref, (hc, wc))
    out: dict = {"positions": n, "items": items, "dim": dim, "dtype": str(dtype), "check_items": check_items,
                 "kernels": {}}
    for name, fn in _ce_kernels(dev).items():
        row: dict = {}
        try:
            loss = fn(hc, wc, tc)
            gh, gw = torch.autograd.grad(loss, (hc, wc))
            row["loss_rel_err"] = float((loss.detach().float() - ref.detach()).abs() / ref.detach().abs())
            row["grad_h_max_rel_err"] = float((gh.float() - ref_h).abs().max() / ref_h.abs().max())
            row["grad_w_max_rel_err"] = float((gw.float() - ref_w).abs().max() / ref_w.abs().max())
            h, w, t = inputs(items)
            times = []
            if dev.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated() if dev.type == "cuda" else 0
            for _ in range(iters + 1):
                h.grad = w.grad = None
                sync()
                t0 = time.perf_counter()
                fn(h, w, t).backward()
                sync()
                times.append(time.perf_counter() - t0)
            row["fwd_bwd_s"] = min(times[1:])
            row["tflop_per_s"] = 6 * n * items * dim / row["fwd_bwd_s"] / 1e12  # three matmul passes
            if dev.type == "cuda":
                row["peak_mb_over_inputs"] = (torch.cuda.max_memory_allocated() - base) / 2**20
            del h, w, t
        except Exception as e:  # one kernel failing (a library's version, memory) must not lose the others
            row["error"] = f"{type(e).__name__}: {e}"[:500]
        out["kernels"][name] = row
        print(f"ce kernel {name}: {row}", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--presets", nargs="+", default=["85M", "303M"])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--micro-batch", type=int, default=4, help="official: 4 per GPU")
    p.add_argument("--stage", type=int, default=2)
    p.add_argument("--paths", nargs="+", default=DEFAULT_PATHS, choices=list(PATHS))
    p.add_argument("--profile-steps", type=int, default=3, help="0: no profiler tables")
    p.add_argument("--ce-items", type=int, default=OFFICIAL_VOCAB["uni_seq_item_id"],
                   help="items of the CE kernels' comparison (0: none)")
    p.add_argument("--ce-check-items", type=int, default=50_000, help="items of their error check")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "pretrain_mfu.json"))
    args = p.parse_args()
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        write_data(data, users=(args.steps + 2) * args.micro_batch, length=512)
        results = [run_preset(data, Path(tmp) / "runs", pr, args.steps, args.micro_batch, args.stage, path)
                   for pr in args.presets for path in args.paths]
    profiles = [profile(pr, path, args.micro_batch, args.profile_steps)
                for pr in args.presets for path in args.paths] if args.profile_steps else []
    kernels = ce_kernels(args.micro_batch * 511, args.ce_items, args.ce_check_items) if args.ce_items else {}
    out = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
           "torch": torch.__version__, "seq_len": 512, "vocab": "official (994,447 items)", "runs": results,
           "profiles": profiles, "ce_kernels": kernels}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
