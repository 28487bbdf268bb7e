"""`uqa-ray score --questions Q --predictions P [--compare P2] [--method auto|official|likelihood] [--out F]`

Q is questions_{split}.parquet or the official align_data_eval.arrow; P is a predictions JSONL
(score_files.py documents the format). Prints the score dict (score.py documents it); with --compare,
prints {"a": score of P, "b": score of P2, "paired": paired bootstrap of a - b at every level}.
"""
from __future__ import annotations

import json

from uqa_ray.io import write_json
from uqa_ray.questions import score
from uqa_ray.questions.score_files import score_files, load_questions


def configure(p) -> None:
    p.add_argument("--questions", required=True, help="questions_{split}.parquet or align_data_eval.arrow")
    p.add_argument("--predictions", required=True, help="predictions JSONL (row, prediction / option_logprobs)")
    p.add_argument("--compare", default=None, help="a second predictions JSONL: paired bootstrap test")
    p.add_argument("--method", choices=("auto", "official", "likelihood"), default="auto",
                   help="official: prediction.startswith(gold); likelihood: argmax of option_logprobs; "
                        "auto: official if every line has 'prediction'")
    p.add_argument("--answer-format", choices=("letter", "content"), default=None,
                   help="gold string for the official rule (default: the question set's own format)")
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="also write the JSON here (atomically)")


def run(args) -> int:
    a, ca, _ = score_files(args.questions, args.predictions, args.method, args.answer_format,
                                args.n_boot, args.seed)
    result = a
    if args.compare:
        b, cb, _ = score_files(args.questions, args.compare, args.method, args.answer_format, args.n_boot, args.seed)
        subs = load_questions(args.questions, args.answer_format).subtasks
        result = {"a": a, "b": b, "paired": score.compare(ca, cb, subs, max(args.n_boot, 10000), args.seed)}
    print(json.dumps(result, indent=2, ensure_ascii=False))
    if args.out:
        write_json(args.out, result)
    return 0
