"""Next-item accuracy of the five encoders under one fixed protocol, and a Trm++ size ladder.

    python bench/encoders.py --out bench/results/encoders.json            # ~35 min on 2 CPUs (GRU4Rec ~16)
    python bench/encoders.py --encoders sasrec trm_pp --ladder 16 32 --out /tmp/e.json
    python bench/encoders.py --encoders gru4rec --ladder --merge --out bench/results/encoders.json   # redo one

Protocol (issue 12): the `small` synthetic log (the embedded default's data), item ids only, d_model 64,
2 layers, 2 heads, item width 64, dropout 0.2, history 20 clicks (`max_len` 21), 5 epochs, AdamW lr 2e-3,
16 users per step, one Ray Train worker, no ZeRO: each run is `uqa-ray pretrain` (the real Ray Train +
DeepSpeed loop) with the `<encoder>-official` preset. Per run: HR@10 / NDCG@10 of the eval users' last
click with 95% bootstrap CIs over users, the two heuristics on the same users (their per-user ranks come
from the run's own `eval_ranks.json`), the paired difference to recent-items-then-popular, the eval
next-item loss and training positions/s. The ladder trains Trm++ at growing d_model (same protocol) and
fits eval loss against dense parameters with a power law (a line in log-log, analysis/fitting.py).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.fitting import fit_log_linear, log_linear, r2_score  # noqa: E402
from uqa_ray.config import build  # noqa: E402
from uqa_ray.encoders import count_params  # noqa: E402
from uqa_ray.encoders.registry import ENCODERS  # noqa: E402
from uqa_ray.io import write_json  # noqa: E402
from uqa_ray.pretrain.config import PretrainConfig  # noqa: E402
from uqa_ray.pretrain.trainer import RANKS_FILE, pretrain, read_meta  # noqa: E402

PROTOCOL = {
    "encoder": {"d_model": 64, "n_layers": 2, "item_dim": 64, "dropout": 0.2, "n_heads": 2},
    "max_len": 21, "input_mode": "no_side",
    "optim": {"lr": 2e-3, "epochs": 5, "micro_batch": 16},
    "scaling": {"num_workers": 1, "zero_stage": 0},
}
LADDER_HEADS = {8: 2, 16: 2, 32: 2, 64: 2, 128: 4, 256: 4}
N_BOOT = 2000


def small_data(work: Path) -> Path:
    """The `small` synthetic log, prepared (built once under `work`)."""
    from uqa_ray.data.prepare import prepare
    from uqa_ray.data.synthetic import generate, preset

    data = work / "data_small"
    if not (data / "meta.json").exists():
        generate(preset("small"), work / "raw_small", seed=0)
        prepare(work / "raw_small", data)
    return data


def boot(values: dict[str, np.ndarray], seed: int = 0) -> dict[str, list[float]]:
    """95% percentile intervals of each mean, resampling users (the same draws for every series)."""
    n = len(next(iter(values.values())))
    idx = np.random.default_rng(seed).integers(0, n, (N_BOOT, n))
    return {k: np.percentile(v[idx].mean(1), [2.5, 97.5]).round(4).tolist() for k, v in values.items()}


def scored(run_dir: Path) -> dict:
    """HR@10 / NDCG@10 of the model and the heuristics on the same users, with bootstrap CIs."""
    ranks = json.loads((run_dir / RANKS_FILE).read_text())
    out = {"n_users": len(ranks["row"])}
    per = {}
    for who in ("model", "most_popular", "recent_popular"):
        r = np.asarray(ranks[who])
        hit = (r < 10).astype(float)
        ndcg = np.where(r < 10, 1.0 / np.log2(r + 2.0), 0.0)
        out[who] = {"HR@10": round(hit.mean(), 4), "NDCG@10": round(ndcg.mean(), 4)}
        per |= {f"{who}/HR@10": hit, f"{who}/NDCG@10": ndcg}
    per["model-recent/HR@10"] = per["model/HR@10"] - per["recent_popular/HR@10"]
    cis = boot(per)
    for key, ci in cis.items():
        who, metric = key.split("/")
        out.setdefault(who, {})[f"{metric}_ci95"] = ci
    return out


def run(data: Path, storage: Path, preset: str, encoder: dict, seed: int, over: dict | None = None) -> dict:
    """One `uqa-ray pretrain` under the protocol with `encoder` overrides (and any other `over`), scored."""
    cfg = build(PretrainConfig, PROTOCOL, {"data": str(data), "preset": preset, "scaling": {"storage": str(storage)},
                                           "seed": seed, "encoder": PROTOCOL["encoder"] | encoder}, over)
    res = pretrain(cfg)
    if res.status != "ok":
        raise SystemExit(f"{preset}: pretraining {res.status}: {res.reason}")
    m = res.metrics
    params = count_params(cfg.encoder_config(read_meta(data)["vocab"]))
    return {"preset": preset, "encoder": cfg.encoder, **({"over": over} if over else {}),
            "params_dense": params["dense"], "run": str(res.run_dir),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            # The training run's own wall (a run with the same config earlier in this bench is reused).
            "wall_s": round(m["wall_s"], 1), "reused": res.reused, "positions_per_s": round(m["positions_per_s"]),
            "eval_loss": round(m["eval/loss"], 4), **scored(res.run_dir)}


def ladder_fit(points: list[dict]) -> dict:
    x = np.array([p["params_dense"] for p in points], float)
    y = np.log(np.array([p["eval_loss"] for p in points]))
    fit = fit_log_linear(x, y)
    r2 = r2_score(y, log_linear(x, fit["params"]["alpha"], fit["params"]["beta"]))
    hr = [p["model"]["HR@10"] for p in points]
    loss = [p["eval_loss"] for p in points]
    return {"law": "eval_loss = exp(alpha) * params_dense ** (beta / ln 10)", "params": fit["params"],
            "exponent": fit["params"]["beta"] / np.log(10), "r2_log_loss": round(float(r2), 4),
            "hr10_rises_every_step": all(b > a for a, b in zip(hr, hr[1:])),
            "loss_falls_every_step": all(b < a for a, b in zip(loss, loss[1:]))}


def figure(points: list[dict], fit: dict, path: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.array([p["params_dense"] for p in points], float)
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    grid = np.geomspace(x.min(), x.max(), 50)
    b.plot(x, [p["eval_loss"] for p in points], "o", label="eval next-item loss")
    b.plot(grid, np.exp(log_linear(grid, fit["params"]["alpha"], fit["params"]["beta"])), "-",
           label=f"power law, R² {fit['r2_log_loss']:.2f}")
    hr = np.array([p["model"]["HR@10"] for p in points])
    ci = np.array([p["model"]["HR@10_ci95"] for p in points])
    a.errorbar(x, hr, yerr=[hr - ci[:, 0], ci[:, 1] - hr], fmt="o-", capsize=3, label="Trm++")
    a.axhline(points[0]["recent_popular"]["HR@10"], ls="--", c="gray", label="recent, then popular")
    a.axhline(points[0]["most_popular"]["HR@10"], ls=":", c="gray", label="most popular")
    for ax, label in ((a, "eval HR@10 (95% CI)"), (b, "eval next-item loss (nats)")):
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("dense parameters")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    fig.suptitle("Trm++ on `small`, issue 12's protocol, d_model varied", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def markdown(r: dict) -> str:
    """The tables BENCHMARKS.md quotes, from a result file."""
    def ci(m: dict, k: str) -> str:
        lo, hi = m[f"{k}_ci95"]
        return f"{m[k]:.3f} [{lo:.3f}, {hi:.3f}]"

    lines = ["| encoder | HR@10 [95% CI] | NDCG@10 [95% CI] | model - recent, HR@10 [95% CI] "
             "| eval loss | positions/s |",
             "|---|---|---|---|---|---|"]
    for name, e in r["encoders"].items():
        lo, hi = e["model-recent"]["HR@10_ci95"]
        lines.append(f"| {name} | {ci(e['model'], 'HR@10')} | {ci(e['model'], 'NDCG@10')} | [{lo:+.3f}, {hi:+.3f}] "
                     f"| {e['eval_loss']:.3f} | {e['positions_per_s']:,} |")
    first = next(iter(r["encoders"].values()), None) or r["ladder"][0]
    for b in ("most_popular", "recent_popular"):
        lines.append(f"| {b} (same users) | {ci(first[b], 'HR@10')} | {ci(first[b], 'NDCG@10')} | | | |")
    lines += ["", "| Trm++ d_model | dense params | HR@10 [95% CI] | eval loss |", "|---|---|---|---|"]
    for p in r["ladder"]:
        lines.append(f"| {p['encoder']['d_model']} | {p['params_dense']:,} | {ci(p['model'], 'HR@10')} "
                     f"| {p['eval_loss']:.4f} |")
    if "ladder_fit" in r:
        f = r["ladder_fit"]
        lines += ["", f"Power law of eval loss in dense parameters: exponent {f['exponent']:.4f}, R² (log-log) "
                      f"{f['r2_log_loss']:.3f}; HR@10 rises at every step: {f['hr10_rises_every_step']}; eval loss "
                      f"falls at every step: {f['loss_falls_every_step']}."]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="JSON result file")
    p.add_argument("--data", help="a prepared folder (default: `small`, built under --workdir)")
    p.add_argument("--workdir", default=str(ROOT / "bench" / "work" / "encoders"))
    p.add_argument("--encoders", nargs="*", default=list(ENCODERS), choices=list(ENCODERS))
    p.add_argument("--ladder", nargs="*", type=int, default=[8, 16, 32, 64], choices=sorted(LADDER_HEADS),
                   help="Trm++ d_model values (default: four sizes about 2.2x apart in dense parameters)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--merge", action="store_true",
                   help="keep the entries of an existing --out that this run does not redo (each entry records "
                        "its own run folder and date); the ladder is kept unless --ladder values are given")
    p.add_argument("--render", action="store_true",
                   help="print the tables of an existing --out, redraw its figure (--out with .png), and exit")
    a = p.parse_args()
    if a.render:
        r = json.loads(Path(a.out).read_text())
        print(markdown(r))
        if "ladder_fit" in r:
            figure(r["ladder"], r["ladder_fit"], Path(a.out).with_suffix(".png"))
        return
    work = Path(a.workdir)
    data = Path(a.data) if a.data else small_data(work)
    storage = work / "runs" / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())  # fresh: never a reused run
    out: dict = {"protocol": PROTOCOL, "data": str(data), "seed": a.seed, "encoders": {}, "ladder": []}
    old = json.loads(Path(a.out).read_text()) if a.merge and Path(a.out).exists() else {}
    if old:
        if old["protocol"] != PROTOCOL or old["seed"] != a.seed:
            raise SystemExit(f"{a.out}: another protocol or seed; cannot merge")
        out["encoders"] = {k: v for k, v in old["encoders"].items() if k not in a.encoders}
        if not a.ladder:
            out["ladder"] = old["ladder"]
    for name in a.encoders:
        out["encoders"][name] = run(data, storage, f"{name}-official", {}, a.seed)
        print(f"[bench] {name}: {json.dumps(out['encoders'][name]['model'])}", flush=True)
    for d in a.ladder:
        out["ladder"].append(run(data, storage, "trm_pp-official", {"d_model": d, "n_heads": LADDER_HEADS[d]}, a.seed))
        print(f"[bench] trm_pp d {d}: {json.dumps(out['ladder'][-1]['model'])}", flush=True)
    out["encoders"] = {k: out["encoders"][k] for k in ENCODERS if k in out["encoders"]}
    if len(out["ladder"]) >= 3:
        out["ladder_fit"] = ladder_fit(out["ladder"])
        figure(out["ladder"], out["ladder_fit"], Path(a.out).with_suffix(".png"))
    write_json(a.out, out)
    print(f"[bench] wrote {a.out}", flush=True)


if __name__ == "__main__":
    main()
