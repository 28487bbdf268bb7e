"""Evaluate one method on the eval questions: both scorers with CIs, and the average prompt length.

Methods are data (METHODS): what the LLM is given in place of the user.
  encoder       the aligned system: frozen encoder -> trained adapter -> soft tokens (needs `aligned_dir`)
  random        the aligned system's soft tokens replaced by random vectors of the same per-token norm
  no_embedding  the plain question, no user information at all (the floor)
  oracle        soft tokens made from the planted truth (synthetic data only; an UPPER-BOUND control,
                see controls.py): what this LLM does when handed the answer-bearing facts
  text20/text50 the Text-k baselines (baselines.py), the same LLM reading the history as text
Every method is scored on the same questions with the same LLM (for `encoder`/`random` the aligned one,
i.e. with its LoRA or fine-tuned weights; the others use `llm_dir` as given).

Each batch runs ONE prompt pass (decode.score_prompts) that yields both the official one-token greedy
prediction (correct iff it starts with the gold string of the answer format) and every option's
log-likelihood (correct iff the gold option is the argmax). With letter answers (the official format) both
are meaningful; with content answers (the embedded preset) the official rule can only credit an option
that is a single token, so there it is a strict lower bound and the likelihood score is the one to read.
Questions are batched longest-first (little left padding; results do not depend on the batching). Prompt
tokens (paper table 7): the chat template, the question, and the soft tokens or the text history.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from uqa_ray.align.data import QuestionSplit
from uqa_ray.align.soft_prompt import encode_chat
from uqa_ray.evaluate.baselines import BASELINES, text_k_messages
from uqa_ray.evaluate.decode import score_prompts
from uqa_ray.questions.score import accuracy_table, likelihood_correct, official_correct


@dataclasses.dataclass(frozen=True)
class Method:
    aligned: bool  # needs a trained alignment (encoder + adapter)
    soft: str | None  # "real" | "random" | "oracle" | None
    history: int = 0  # Text-k history length (baselines)


METHODS: dict[str, Method] = {
    "encoder": Method(aligned=True, soft="real"),
    "random": Method(aligned=True, soft="random"),
    "no_embedding": Method(aligned=False, soft=None),
    "oracle": Method(aligned=False, soft="oracle"),
    **{name: Method(aligned=False, soft=None, history=k) for name, k in BASELINES.items()},
}


def method_spec(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(METHODS)}")
    return METHODS[name]


def even_sample(n: int, k: int) -> np.ndarray:
    """Rows 0..n-1, or k of them evenly spaced when 0 < k < n: questions are stored by sub-task and
    user, so a prefix would be a few sub-tasks, an even stride keeps their mix."""
    if not 0 < k < n:
        return np.arange(n)
    return np.floor(np.arange(k) * (n / k)).astype(np.int64)


@torch.no_grad()
def batches_by_length(lengths: Sequence[int], batch_size: int, max_tokens: int = 0) -> list[list[int]]:
    """Indices grouped longest first: at most `batch_size` rows and, if `max_tokens`, at most that many
    padded tokens (rows x the batch's longest) per batch; a row longer than the budget goes alone."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    out: list[list[int]] = []
    for i in order:
        if out and len(out[-1]) < batch_size and (not max_tokens or
                                                  (len(out[-1]) + 1) * lengths[out[-1][0]] <= max_tokens):
            out[-1].append(i)
        else:
            out.append([i])
    return out


def score_split(llm: Any, tok: Any, data: QuestionSplit, rows: Sequence[int], messages: list[list[dict]],
                answer_format: str, placement: str = "prefix", soft_fn: Callable | None = None,
                batch_size: int = 32, n_soft: int = 0, max_batch_tokens: int = 0) -> dict[str, Any]:
    """Score `rows` of a split. `messages[i]` is the prompt of rows[i]; `soft_fn(rows) -> (B, S, H)`.
    Batches: `batches_by_length` (on CPU, mid-size batches beat huge ones: activations stay in cache, and
    a padded batch pays for an explicit attention mask that batch 1 does not need; see bench/evaluate.py).

    Returns per-question arrays in `rows` order: official predictions, option log-likelihoods
    (padded with -inf), and prompt token counts.
    """
    rows = np.asarray(rows, dtype=np.int64)
    chats = [encode_chat(tok, m, placement if soft_fn else "prefix", with_answer=False) for m in messages]
    options = data.options(rows, answer_format)
    width = max(len(o) for o in options)
    preds: list[str] = [""] * len(rows)
    loglik = np.full((len(rows), width), -np.inf)
    lengths = [c.prompt_tokens(n_soft if soft_fn else 0) for c in chats]
    for idx in batches_by_length(lengths, batch_size, max_batch_tokens):
        soft = soft_fn(rows[idx].tolist()) if soft_fn else None
        _, p, lls = score_prompts(llm, tok, [chats[i] for i in idx], [options[i] for i in idx], soft)
        for i, pi, li in zip(idx, p, lls):
            preds[i] = pi
            loglik[i, : len(li)] = li.numpy()
    tokens = np.array([c.prompt_tokens(n_soft if soft_fn else 0) for c in chats], dtype=np.float64)
    return {"rows": rows, "predictions": preds, "loglik": loglik, "prompt_tokens": tokens}


def score_tables(data: QuestionSplit, out: dict, answer_format: str, n_boot: int = 1000, seed: int = 0) -> dict:
    """{"official": score dict, "likelihood": score dict} (questions/score.py format) + correctness."""
    rows = out["rows"]
    subtasks = data.subtasks[rows]
    every = data.golds(answer_format)
    golds = [every[r] for r in rows]
    official = official_correct(out["predictions"], golds)
    likelihood = likelihood_correct(out["loglik"], data.gold_index()[rows])
    return {"official": accuracy_table(official, subtasks, n_boot, seed),
            "likelihood": accuracy_table(likelihood, subtasks, n_boot, seed),
            "_correct": {"official": official, "likelihood": likelihood}}


def evaluate(method: str, data_dir: str | Path, llm_dir: str | Path, *, answer_format: str = "letter",
             placement: str = "prefix", aligned_dir: str | Path | None = None,
             encoder_dir: str | Path | None = None, batch_size: int = 32, max_batch_tokens: int = 0,
             seed: int = 0, n_boot: int = 1000,
             max_questions: int = 0, split: str = "eval", device: torch.device | None = None) -> dict[str, Any]:
    """Evaluate `method` (METHODS) on a split; returns scores, prompt_tokens, n, timings, correctness."""
    from uqa_ray.align.llm import load_llm
    from uqa_ray.align.steps import load_aligned
    from uqa_ray.encoders.config import input_columns
    from uqa_ray.evaluate.controls import oracle_names, oracle_soft, random_like

    spec = method_spec(method)
    t0 = time.perf_counter()
    data = QuestionSplit(data_dir, split)
    rows = even_sample(len(data), max_questions)
    model = None
    if spec.aligned:
        if aligned_dir is None or encoder_dir is None:
            raise ValueError(f"method {method!r} needs aligned_dir and encoder_dir")
        model, tok, enc_cfg = load_aligned(aligned_dir, encoder_dir, llm_dir, device)
        llm = model.llm
        columns, max_len = list(input_columns(enc_cfg.input_mode)), enc_cfg.max_len
    else:
        llm, tok = load_llm(llm_dir, device=device)
    if spec.history:
        every = text_k_messages(data_dir, split, spec.history, answer_format)
        messages = [every[r] for r in rows]
    else:
        messages = data.messages(rows, answer_format, with_answer=False)
    soft_fn, n_soft = None, 0
    if spec.soft in ("real", "random"):
        def soft_fn(part):
            soft = model.soft_tokens(data.sequences(part, columns, max_len))
            return soft if spec.soft == "real" else random_like(soft, part, seed)
        n_soft = model.n_soft
    elif spec.soft == "oracle":
        users = np.asarray(data.q["user"], dtype=np.int64)[rows]
        names = dict(zip(rows.tolist(), oracle_names(data_dir, users.tolist())))
        embed = llm.get_input_embeddings()

        def soft_fn(part):
            return oracle_soft(embed, tok, [names[r] for r in part])
        n_soft = len(names[int(rows[0])])
    load_s = time.perf_counter() - t0
    out = score_split(llm, tok, data, rows, messages, answer_format, placement, soft_fn, batch_size, n_soft,
                      max_batch_tokens)
    eval_s = time.perf_counter() - t0 - load_s
    tables = score_tables(data, out, answer_format, n_boot, seed)
    correct = tables.pop("_correct")
    return {"method": method, "scores": tables, "prompt_tokens": float(out["prompt_tokens"].mean()),
            "n": int(len(rows)), "n_soft": n_soft, "answer_format": answer_format, "placement": placement,
            "timings": {"load_s": load_s, "eval_s": eval_s, "questions_per_s": len(rows) / max(eval_s, 1e-9)},
            "per_question": {"row": out["rows"], "subtask": data.subtasks[out["rows"]],
                             "official_prediction": out["predictions"], "official_correct": correct["official"],
                             "likelihood_choice": out["loglik"].argmax(1), "likelihood_correct": correct["likelihood"]}}
