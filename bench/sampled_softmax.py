"""Sampled softmax against the full-vocabulary CE: HR@10 at equal epochs and at equal wall time.

    python bench/sampled_softmax.py [--preset trm_pp-official] [--negatives 128 1024] [--tables sparse] [--out JSON]

Issue 15 item 3, on `small` under issue 12's protocol (bench/encoders.py PROTOCOL; every run is
`uqa-ray pretrain`, one worker): the full CE (`loss.kind=ce`, the default) beside `loss.kind=sampled`
for each sampler (`loss.sampler`) and number of negatives (`loss.n_negatives`): uniform draws; draws by
training popularity; mixed (uniform draws plus the micro-batch's own targets as in-batch negatives), all
logQ-corrected (pretrain/losses.py). Equal epochs: the protocol's 5. Equal wall time: a sampler whose
training positions/s beat the CE's is run again with the epochs the CE's training time buys it
(floor(5 x its positions/s / the CE's)); where it is not faster (a small vocabulary), equal epochs are
already equal time and no second run is made. Per run: HR@10 / NDCG@10 with 95% bootstrap CIs, the ratio
to the CE's HR@10, positions/s and wall. `--tables sparse`: the sampled runs update the item table
row-sparsely (`optim.tables=sparse`, lazy Adam; ZeRO-1 with one worker, which the sparse path needs), as
they would at the official vocabulary; the CE run stays the default.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.encoders import PROTOCOL, run, small_data  # noqa: E402
from uqa_ray.io import write_json  # noqa: E402
from uqa_ray.pretrain.config import TABLES  # noqa: E402

SAMPLERS = ("uniform", "popularity", "mixed")


def brief(r: dict) -> dict:
    keep = ("model", "eval_loss", "positions_per_s", "wall_s", "run", "date")
    return {"over": r.get("over", {})} | {k: r[k] for k in keep}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "sampled_softmax.json"))
    p.add_argument("--preset", default="trm_pp-official")
    p.add_argument("--negatives", type=int, nargs="+", default=[128, 1024],
                   help="sampled negatives per micro-batch (each value a series)")
    p.add_argument("--samplers", nargs="*", default=list(SAMPLERS), choices=SAMPLERS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tables", choices=TABLES, default="dense", help="the sampled runs' tables")
    p.add_argument("--workdir", default=str(ROOT / "bench" / "work" / "encoders"))
    a = p.parse_args()
    data = small_data(Path(a.workdir))
    storage = Path(a.workdir) / "sampled" / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())  # never reused
    epochs = PROTOCOL["optim"]["epochs"]
    ce = run(data, storage, a.preset, {}, a.seed)
    out: dict = {"protocol": PROTOCOL, "preset": a.preset, "seed": a.seed, "tables": a.tables,
                 "ce": brief(ce), "sampled": {}}
    optim = dict(PROTOCOL["optim"])
    stage = {"scaling": {"zero_stage": 1}} if a.tables == "sparse" else {}  # the sparse path needs ZeRO-1 or 2
    optim["tables"] = a.tables
    print(f"[bench] ce: HR@10 {ce['model']['HR@10']} {ce['positions_per_s']} positions/s", flush=True)
    for n in a.negatives:
        for sampler in a.samplers:
            loss = {"kind": "sampled", "sampler": sampler, "n_negatives": n}
            r = run(data, storage, a.preset, {}, a.seed, {"loss": loss, "optim": optim, **stage})
            entry = {"equal_epochs": brief(r), "hr10_over_ce": r["model"]["HR@10"] / ce["model"]["HR@10"]}
            more = int(epochs * r["positions_per_s"] / ce["positions_per_s"])
            if more > epochs:
                t = run(data, storage, a.preset, {}, a.seed, {"loss": loss, "optim": optim | {"epochs": more}, **stage})
                entry |= {"equal_time": brief(t), "equal_time_epochs": more,
                          "equal_time_hr10_over_ce": t["model"]["HR@10"] / ce["model"]["HR@10"]}
            out["sampled"][f"{sampler}-{n}"] = entry
            print(f"[bench] {sampler} {n}: HR@10 {r['model']['HR@10']} ({entry['hr10_over_ce']:.3f} x CE) "
                  f"{r['positions_per_s']} positions/s; equal-time epochs {max(more, epochs)}", flush=True)
    out["date"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    write_json(a.out, out)
    print(f"[bench] wrote {a.out}", flush=True)


if __name__ == "__main__":
    main()
