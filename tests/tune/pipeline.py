"""Shared material for the alignment / evaluation / Tune tests: the `tiny` log prepared by the real pipeline
(`tiny_data`), questions generated on a copy of it, two untrained real encoders exported the way
pretraining exports them, and a small tiny-default LM on the data's tokenizer, briefly taught the task.

Built once per test session under the session's base temp folder (so that tests/align, tests/evaluate
and tests/tune share it although they import these helpers separately).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import torch

from uqa_ray.config import build

TINY_LM = {"layers": 2, "hidden": 32, "heads": 2, "kv_heads": 1, "intermediate": 64}
# A small question set: every sub-task, 16 train / 8 eval questions each (tiny has 225 / 25 users).
QUESTIONS = dict(si_window=5, it_min_window=4, df_max_k=5, popular_pool=10)
PER_SUBTASK = {"train": 16, "eval": 8}


def instruct_config(**over):
    from uqa_ray.align.instruct import InstructConfig

    base = {"tiny": TINY_LM, "steps": 4, "batch_size": 2, "history_k": [0, 5], "holdout": 4, "eval_batch_size": 8,
            "stretch": {"steps": 0}}
    return build(InstructConfig, base, over)


def pipeline(tiny_data: Path, base: Path) -> dict[str, Path]:
    """{"data", "enc0", "enc1", "llm", "root"}; built on first use, then reused."""
    root = base / "uqa_pipeline"
    done = root / "done"
    if done.is_file():
        return _paths(root)
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    from uqa_ray.align.instruct import instruct_tiny_llm
    from uqa_ray.encoders import build_encoder, preset_config, save_encoder
    from uqa_ray.encoders.presets import load_vocab
    from uqa_ray.questions.generate import generate
    from uqa_ray.questions.spec import SUBTASKS, Counts, QuestionConfig

    data = root / "data"
    shutil.copytree(tiny_data, data)
    counts = {s: Counts(**{t: n for t in SUBTASKS}) for s, n in PER_SUBTASK.items()}
    generate(data, build(QuestionConfig, QUESTIONS, {"eval_counts": counts["eval"], "train_counts": counts["train"]}))
    vocab = load_vocab(data / "meta.json")
    for seed in (0, 1):
        cfg = preset_config("tiny", vocab, d_model=32, n_heads=2, max_len=32)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            save_encoder(build_encoder(cfg), cfg, root / f"run{seed}" / "encoder")
    instruct_tiny_llm(data, root / "llm", instruct_config(), log=lambda *_: None)
    done.write_text("ok\n")
    return _paths(root)


def _paths(root: Path) -> dict[str, Path]:
    from uqa_ray.align.instruct import instruct_dir

    return {"root": root, "data": root / "data", "enc0": root / "run0" / "encoder", "enc1": root / "run1" / "encoder",
            "llm": instruct_dir(root / "data", root / "llm", instruct_config())}
