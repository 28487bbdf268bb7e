"""Scoring: the official one-token rule, option-likelihood scoring, micro averages, bootstrap CIs.

Official rule (UQABENCH.md section 5): the LLM greedily decodes ONE token and a question is correct iff
`prediction.startswith(gold)`. Our reading of the direction: the PREDICTION must start with the GOLD
string, not the reverse. So "A" and "A." are correct for gold "A"; an empty prediction (e.g. an EOS
decoded with special tokens skipped) is wrong (`gold.startswith("")` would have made it right); no
whitespace is stripped (" A" is wrong, as in the official comparison). An empty gold is an input error
(every prediction would start with it).

Option likelihood (as lm-eval-harness scores multiple choice): the answer is the argmax over the
per-option log-probabilities (first index on exact ties); the LM part that computes them lives in the
evaluation stage, this module takes the (n_questions, n_options) array.

Accuracy x100 per sub-task; groups and overall are MICRO averages (pooled questions). Bootstrap CIs are
drawn from the exact resampling distributions (`bootstrap_ci`, `paired_bootstrap`).

Score dict (other code depends on it exactly): {"overall": S, "groups": {group: S}, "subtasks": {sub: S}}
with S = {"acc": float, "n": int, "correct": int, "ci95": [lo, hi]}; groups and sub-tasks that have no
questions are left out; keys appear in the canonical order (spec.GROUPS, spec.SUBTASKS).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from uqa_ray.io import InputError
from uqa_ray.questions.spec import GROUP_OF, GROUPS, SUBTASKS


def official_correct(predictions: Sequence[str], golds: Sequence[str]) -> np.ndarray:
    if len(predictions) != len(golds):
        raise InputError(f"{len(predictions)} predictions for {len(golds)} questions")
    out = np.zeros(len(golds), bool)
    for i, (p, g) in enumerate(zip(predictions, golds)):
        if not isinstance(g, str) or not g:
            raise InputError(f"question {i}: the gold answer {g!r} must be a non-empty string")
        if not isinstance(p, str):
            raise InputError(f"question {i}: the prediction {p!r} is not a string")
        out[i] = p.startswith(g)
    return out


def likelihood_choice(logprobs: np.ndarray) -> np.ndarray:
    """Index of the most likely option per question (rows: questions, columns: options)."""
    lp = np.asarray(logprobs, dtype=np.float64)
    if lp.ndim != 2 or lp.shape[1] < 2:
        raise InputError(f"option log-probabilities must be (n_questions, n_options >= 2), got {lp.shape}")
    bad = np.isnan(lp) | np.isposinf(lp)  # -inf is a legal log-probability (an impossible option)
    if bad.any():
        row = int(np.flatnonzero(bad.any(axis=1))[0])
        raise InputError(f"question {row}: option log-probabilities hold NaN or +inf: {lp[row].tolist()}")
    return np.argmax(lp, axis=1)


def likelihood_correct(logprobs: np.ndarray, gold: Sequence[int]) -> np.ndarray:
    return likelihood_choice(logprobs) == np.asarray(gold)


def bootstrap_ci(k: int, n: int, n_boot: int = 1000, seed: int = 0) -> list[float]:
    """Percentile 95% CI (x100) of the accuracy k/n under resampling the n questions. With questions
    resampled with replacement, the number correct among n resampled binary outcomes is exactly
    Binomial(n, k/n): drawn directly (O(n_boot)) instead of materializing n_boot x n indices."""
    if n == 0:
        return [float("nan"), float("nan")]
    draws = np.random.default_rng(seed).binomial(n, k / n, size=n_boot) / n * 100.0
    lo, hi = np.percentile(draws, [2.5, 97.5])
    return [float(lo), float(hi)]


def _entry(correct: np.ndarray, n_boot: int, seed: int) -> dict:
    n, k = int(correct.size), int(correct.sum())
    return {"acc": 100.0 * k / n, "n": n, "correct": k, "ci95": bootstrap_ci(k, n, n_boot, seed)}


def _levels(subtasks: Sequence[str]) -> list[tuple[str, str, np.ndarray]]:
    """(section, key, mask) for overall, each group present and each sub-task present."""
    subs = np.asarray(subtasks, dtype=object)
    bad = sorted(set(subs.tolist()) - set(SUBTASKS))
    if bad:
        raise InputError(f"unknown sub-task(s) {bad}; expected {SUBTASKS}")
    groups = np.array([GROUP_OF[s] for s in subs], dtype=object)
    out = [("overall", "overall", np.ones(len(subs), bool))]
    out += [("groups", g, groups == g) for g in GROUPS if (groups == g).any()]
    out += [("subtasks", s, subs == s) for s in SUBTASKS if (subs == s).any()]
    return out


def accuracy_table(correct: np.ndarray, subtasks: Sequence[str], n_boot: int = 1000, seed: int = 0) -> dict:
    """The score dict (module doc) from per-question correctness and sub-task labels."""
    correct = np.asarray(correct, bool)
    if correct.size == 0 or correct.size != len(subtasks):
        raise InputError(f"need one correctness value per question, got {correct.size} for {len(subtasks)}")
    out: dict = {"overall": None, "groups": {}, "subtasks": {}}
    for i, (section, key, mask) in enumerate(_levels(subtasks)):
        e = _entry(correct[mask], n_boot, seed * 1000 + i)
        if section == "overall":
            out["overall"] = e
        else:
            out[section][key] = e
    return out


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n_boot: int = 10000, seed: int = 0) -> dict:
    """System a vs b on the same questions: delta = acc(a) - acc(b) (x100), its 95% CI, and a two-sided
    p-value for "no difference" from the bootstrap distribution shifted to the null (Efron and
    Tibshirani 1993, section 16.4): p = (1 + #{|delta* - delta| >= |delta|}) / (n_boot + 1). The
    resampled counts of (+1, 0, -1) differences are exactly Multinomial(n, observed shares): drawn
    directly, as `bootstrap_ci` draws its Binomial."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if a.shape != b.shape or a.size == 0:
        raise InputError(f"paired test needs two equal-length, non-empty correctness vectors ({a.shape}, {b.shape})")
    n = a.size
    counts = np.array([np.sum(a & ~b), np.sum(a == b), np.sum(~a & b)])  # +1, 0, -1 differences
    delta = (counts[0] - counts[2]) / n * 100.0
    draws = np.random.default_rng(seed).multinomial(n, counts / n, size=n_boot)
    boot = (draws[:, 0] - draws[:, 2]) / n * 100.0
    lo, hi = np.percentile(boot, [2.5, 97.5])
    p = (1 + np.count_nonzero(np.abs(boot - delta) >= abs(delta) - 1e-12)) / (n_boot + 1)
    return {"delta": float(delta), "ci95": [float(lo), float(hi)], "p_value": float(min(1.0, p)), "n": int(n)}


def compare(a: np.ndarray, b: np.ndarray, subtasks: Sequence[str], n_boot: int = 10000, seed: int = 0) -> dict:
    """paired_bootstrap at every level of the score dict: {"overall": P, "groups": {...}, "subtasks": {...}}."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    out: dict = {"overall": None, "groups": {}, "subtasks": {}}
    for i, (section, key, mask) in enumerate(_levels(subtasks)):
        r = paired_bootstrap(a[mask], b[mask], n_boot, seed * 1000 + i)
        if section == "overall":
            out["overall"] = r
        else:
            out[section][key] = r
    return out
