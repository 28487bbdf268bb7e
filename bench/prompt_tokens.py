"""Benchmark: mean prompt tokens per method (paper table 7 style) -> bench/results/prompt_tokens.json.

    python bench/prompt_tokens.py                     # the `tiny` questions bench/evaluate.py builds
    python bench/prompt_tokens.py --preset small      # the embedded default's `small` log
    python bench/prompt_tokens.py --data DIR          # any prepared folder with generated questions

Prompt tokens are what the LLM reads before answering, counted exactly as evaluate/run.py counts them
for a result record's `prompt_tokens`: every question of the split is rendered by the real renderers
(QuestionSplit.messages for the encoder / no-embedding prompts, questions/render.py's Text-k prompts for
the baselines), tokenized with the folder's tokenizer (the one the embedded tiny LM is built over) through
soft_prompt.encode_chat with the chat template, and counted by EncodedChat.prompt_tokens(n_soft), where
n_soft is the adapter's own count (AlignConfig.adapter_config(...).n_soft). Text-k prompts carry no soft
tokens and use the `prefix` layout, as score_split does for methods without soft tokens.

Two alignment presets are counted (uqa_ray/align/config.py): `official` (letter answers, soft tokens
before the chat, Mean-Pool 1 token / Q-Former 16) - the paper's table 7 setting - and `embedded` (content
answers, soft tokens in the user turn, Mean-Pool 8 / Q-Former 16) - what the embedded default runs.
The headline figure is Text50 / encoder (Mean-Pool) under `official`; the paper reports 2498.19 / 133.28
= 18.7 with Qwen2.5's tokenizer (analysis/paper.py). Absolute counts differ here: our byte-level BPE is
trained on the synthetic catalog, and tiny users may have fewer than 50 clicks.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PRESETS = ("official", "embedded")
# The paper's table 7 (Qwen2.5-3B-Instruct), for the side-by-side ratio; analysis/paper.py holds it too.
PAPER = {"text20": 1171.23, "text50": 2498.19, "mean_pool": 133.28, "qformer": 148.28}


def build_questions(preset: str, work: Path) -> Path:
    """synth -> Ray Data prepare -> content-format questions, cached in `work` - the same recipe (and,
    for `tiny`, the same default folder) as bench/evaluate.py's build_data, so both count one data set."""
    data = work / "data"
    if (data / "questions_eval.parquet").is_file():
        return data
    from uqa_ray.data.prepare import prepare
    from uqa_ray.questions.render import prompt_text
    from uqa_ray.data.synthetic import generate
    from uqa_ray.data.synthetic import preset as make
    from uqa_ray.questions.generate import generate as questions
    from uqa_ray.questions.spec import QuestionConfig
    from uqa_ray.raysetup import init_ray

    init_ray()
    generate(make(preset), work / "raw", seed=0)
    prepare(work / "raw", data, prompt_text=prompt_text())
    questions(data, QuestionConfig(answer_format="content"))
    return data


def count(data_dir: Path, split: str, max_questions: int) -> dict:
    """Mean / min / max prompt tokens per method under each alignment preset, plus the ratios."""
    from uqa_ray.align.config import align_config
    from uqa_ray.align.registry import ADAPTERS
    from uqa_ray.align.data import QuestionSplit
    from uqa_ray.align.llm import load_tokenizer_for
    from uqa_ray.align.soft_prompt import encode_chat
    from uqa_ray.evaluate.baselines import BASELINES, text_k_messages

    tok = load_tokenizer_for(data_dir / "tokenizer")
    data = QuestionSplit(data_dir, split)
    rows = np.arange(len(data) if not max_questions else min(max_questions, len(data)))

    def stats(lengths: list[int]) -> dict:
        a = np.asarray(lengths, dtype=np.float64)
        return {"mean": float(a.mean()), "min": int(a.min()), "max": int(a.max())}

    out: dict = {"questions": int(len(rows)), "split": split, "presets": {}}
    for name in PRESETS:
        cfg = align_config(name)
        fmt = cfg.answer_format
        t = time.perf_counter()
        plain = [encode_chat(tok, m, cfg.placement, with_answer=False)
                 for m in data.messages(rows, fmt, with_answer=False)]
        methods = {"no_embedding": stats([c.prompt_tokens(0) for c in plain])}
        for adapter in ADAPTERS:
            # n_soft does not depend on the encoder / LLM widths: 8 and 8 stand in for both
            n_soft = align_config(name, {"adapter": adapter}).adapter_config(8, 8).n_soft
            methods[f"encoder_{adapter}"] = {**stats([c.prompt_tokens(n_soft) for c in plain]), "n_soft": n_soft}
        for base, k in BASELINES.items():
            msgs = text_k_messages(data_dir, split, k, fmt)
            # no soft tokens: `prefix` layout, as score_split uses for every method without them
            methods[base] = stats([encode_chat(tok, msgs[r], "prefix", with_answer=False).prompt_tokens(0)
                                   for r in rows])
        mean = {m: v["mean"] for m, v in methods.items()}
        out["presets"][name] = {
            "answer_format": fmt, "placement": cfg.placement, "methods": methods,
            "ratio_text50_over_mean_pool": mean["text50"] / mean["encoder_mean_pool"],
            "ratio_text50_over_qformer": mean["text50"] / mean["encoder_qformer"],
            "ratio_text20_over_mean_pool": mean["text20"] / mean["encoder_mean_pool"],
            "count_s": time.perf_counter() - t}
    out["paper_table7"] = {**PAPER, "ratio_text50_over_mean_pool": PAPER["text50"] / PAPER["mean_pool"],
                           "ratio_text50_over_qformer": PAPER["text50"] / PAPER["qformer"]}
    return out


def main(argv: list[str] | None = None) -> int:
    from uqa_ray.io import write_json

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=None, help="prepared folder with questions (default: build --preset)")
    ap.add_argument("--preset", default="tiny", choices=["tiny", "small"], help="synthetic log to build")
    ap.add_argument("--work", default=None, help="cache (default: bench/work/evaluate for tiny, "
                                                 "bench/work/prompt_tokens-<preset> otherwise)")
    ap.add_argument("--split", default="eval", choices=["train", "eval"])
    ap.add_argument("--max-questions", type=int, default=0, help="0 = every question of the split")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "prompt_tokens.json"))
    args = ap.parse_args(argv)
    load = os.getloadavg()
    t = time.perf_counter()
    if args.data:
        data_dir = Path(args.data)
    else:
        default = "evaluate" if args.preset == "tiny" else f"prompt_tokens-{args.preset}"
        data_dir = build_questions(args.preset, Path(args.work or ROOT / "bench" / "work" / default))
    build_s = time.perf_counter() - t
    res = {"data": str(data_dir), "preset": None if args.data else args.preset, "build_s": build_s,
           **count(data_dir, args.split, args.max_questions)}
    res["machine"] = {"cpus": os.cpu_count(), "load_avg_at_start": list(load),
                      "load_avg_at_end": list(os.getloadavg()), "python": platform.python_version()}
    write_json(args.out, res)
    for name, p in res["presets"].items():
        means = {m: round(v["mean"], 1) for m, v in p["methods"].items()}
        print(f"{name}: {means} text50/mean_pool = {p['ratio_text50_over_mean_pool']:.2f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
