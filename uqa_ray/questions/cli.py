"""`uqa-ray questions --data DIR [--out DIR] [--config q.yaml] [--set key=value ...]`

Writes align_data_{train,eval}.arrow and questions_{train,eval}.parquet (into --data by default) and
prints a JSON summary: questions asked/made per split and sub-task, and timings. Keys of --set are the
fields of `QuestionConfig` (spec.py), e.g. `--set lang=en n_options=5 eval_counts.MF=256 seed=1`.
"""
from __future__ import annotations

import json
import sys

from uqa_ray.config import build, load_yaml, parse_dotted
from uqa_ray.questions.generate import generate
from uqa_ray.questions.spec import QuestionConfig


def configure(p) -> None:
    p.add_argument("--data", required=True, help="prepared data folder (uqa-ray prepare)")
    p.add_argument("--out", default=None, help="output folder (default: the data folder)")
    p.add_argument("--config", default=None, help="YAML file of QuestionConfig overrides")
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="QuestionConfig overrides, dotted keys")


def run(args) -> int:
    cfg = build(QuestionConfig, load_yaml(args.config) if args.config else None, parse_dotted(args.set))
    summary = generate(args.data, cfg, args.out)
    print(json.dumps(summary, indent=2, ensure_ascii=False))
    short = [f"{split}/{sub}: {s['made']} of {s['asked']}" for split, v in summary["splits"].items()
             for sub, s in v["subtasks"].items() if s["made"] < s["asked"]]
    if short:
        print("warning: fewer questions than asked (too few eligible users): " + "; ".join(short), file=sys.stderr)
    return 0
