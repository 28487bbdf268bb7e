"""Scoring files: a question set (questions_{split}.parquet, or the official align_data_eval.arrow) and a
predictions file.

Predictions file: JSON Lines, one object per question,
    {"row": <int, the question's `row` = its row in align_data_{split}.arrow>,
     "prediction": <str, the decoded greedy token(s)>,            # official rule
     "option_logprobs": [<float>, ...]}                            # option-likelihood, one per option,
                                                                   # in the question's option order
Either field may be absent; every question needs exactly one line; a row that is not a question, a
repeated row, a missing row or a malformed line is an InputError naming it.

From the official align_data_eval.arrow only `text` is read: the question is the user turn, the gold is
the assistant turn, the sub-task comes from routing the question by the official substrings (zh; our en
markers as a fallback). Option-likelihood scoring there needs letter answers ("A. ..." option lines).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from uqa_ray.io import InputError
from uqa_ray.questions import score
from uqa_ray.questions.source import open_arrow
from uqa_ray.questions.templates import route

_OPTION_LINE = re.compile(r"^([A-Z])\. ", re.M)


@dataclass
class QuestionSet:
    path: Path
    rows: np.ndarray  # int64, the key predictions use
    subtasks: list[str]
    gold_text: list[str]  # what the official rule compares against
    gold_index: np.ndarray  # int64, -1 where unknown
    n_options: np.ndarray  # int64, 0 where unknown


def load_questions(path: str | Path, answer_format: str | None = None) -> QuestionSet:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    return _from_arrow(path) if path.suffix == ".arrow" else _from_parquet(path, answer_format)


def _from_parquet(path: Path, answer_format: str | None) -> QuestionSet:
    need = ["row", "subtask", "gold", "options", "answer_letter", "answer_content", "answer_format"]
    have = pq.read_schema(path).names
    for c in need:
        if c not in have:
            raise InputError(f"{path}: missing column {c!r} (have {have})")
    t = pq.read_table(path, columns=need)
    fmt = t["answer_format"].to_pylist()
    if answer_format is not None:
        fmt = [answer_format] * t.num_rows
    letter, content = t["answer_letter"].to_pylist(), t["answer_content"].to_pylist()
    gold_text = [l if f == "letter" else c for f, l, c in zip(fmt, letter, content)]
    n_opt = np.array([len(o) for o in t["options"].to_pylist()], np.int64)
    return QuestionSet(path, t["row"].to_numpy().astype(np.int64), t["subtask"].to_pylist(), gold_text,
                       t["gold"].to_numpy().astype(np.int64), n_opt)


def _from_arrow(path: Path) -> QuestionSet:
    reader = open_arrow(path)
    if "text" not in reader.schema.names:
        raise InputError(f"{path}: missing column 'text' (have {reader.schema.names})")
    subs, golds, gold_idx, n_opt, row = [], [], [], [], 0
    for b in range(reader.num_record_batches):
        for text in reader.get_batch(b).column("text").to_pylist():
            try:
                chat = json.loads(text)
                q = next(m["content"] for m in chat if m["role"] == "user")
                a = next(m["content"] for m in chat if m["role"] == "assistant")
            except (TypeError, ValueError, KeyError, StopIteration) as e:
                raise InputError(f"{path}: row {row}: `text` is not a user/assistant JSON chat ({e})") from e
            sub = route(q, "zh") or route(q, "en")
            if sub is None:
                raise InputError(f"{path}: row {row}: the question routes to no sub-task: {q[:80]!r}")
            labels = _OPTION_LINE.findall(q)
            subs.append(sub)
            golds.append(a)
            gold_idx.append(labels.index(a) if a in labels else -1)
            n_opt.append(len(labels))
            row += 1
    return QuestionSet(path, np.arange(row, dtype=np.int64), subs, golds, np.array(gold_idx, np.int64),
                       np.array(n_opt, np.int64))


def load_predictions(path: str | Path, qs: QuestionSet) -> tuple[list[str | None], list[list[float] | None]]:
    """Predictions aligned with qs.rows (None where a field is absent)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    where = {int(r): i for i, r in enumerate(qs.rows)}
    preds: list = [None] * len(where)
    logps: list = [None] * len(where)
    seen = np.zeros(len(where), bool)
    with path.open(encoding="utf-8") as f:
        for ln, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError as e:
                raise InputError(f"{path}:{ln}: not JSON ({e})") from e
            r = rec.get("row") if isinstance(rec, dict) else None
            if not isinstance(r, int) or isinstance(r, bool):
                raise InputError(f"{path}:{ln}: needs an integer 'row', got {line.strip()[:80]!r}")
            if r not in where:
                raise InputError(f"{path}:{ln}: row {r} is not a question of {qs.path.name}")
            i = where[r]
            if seen[i]:
                raise InputError(f"{path}:{ln}: row {r} is predicted twice")
            seen[i] = True
            if "prediction" in rec:
                if not isinstance(rec["prediction"], str):
                    raise InputError(f"{path}:{ln}: row {r}: 'prediction' must be a string")
                preds[i] = rec["prediction"]
            if "option_logprobs" in rec:
                lp = rec["option_logprobs"]
                if (not isinstance(lp, list) or not all(isinstance(x, (int, float)) for x in lp)
                        or (qs.n_options[i] and len(lp) != qs.n_options[i])):
                    raise InputError(f"{path}:{ln}: row {r}: 'option_logprobs' must be {qs.n_options[i]} numbers")
                logps[i] = [float(x) for x in lp]
    if not seen.all():
        missing = qs.rows[~seen]
        raise InputError(f"{path}: no prediction for {missing.size} question(s), e.g. rows {missing[:5].tolist()}")
    return preds, logps


def correctness(qs: QuestionSet, preds, logps, method: str = "auto") -> tuple[np.ndarray, str]:
    if method == "auto":
        method = "official" if all(p is not None for p in preds) else "likelihood"
    if method == "official":
        if any(p is None for p in preds):
            raise InputError(f"row {qs.rows[[p is None for p in preds]][0]}: no 'prediction' for the official rule")
        return score.official_correct(preds, qs.gold_text), method
    if any(lp is None for lp in logps):
        raise InputError(f"row {qs.rows[[lp is None for lp in logps]][0]}: no 'option_logprobs'")
    if (qs.gold_index < 0).any():
        raise InputError(f"{qs.path}: row {qs.rows[qs.gold_index < 0][0]}: the gold option index is unknown "
                         "(option-likelihood scoring of an arrow file needs letter answers)")
    width = max(len(lp) for lp in logps)  # rows with fewer options are padded with impossible ones
    lp = np.full((len(logps), width), -np.inf)
    for i, row in enumerate(logps):
        lp[i, : len(row)] = row
    return score.likelihood_correct(lp, qs.gold_index), method


def score_files(questions: str | Path, predictions: str | Path, method: str = "auto",
                answer_format: str | None = None, n_boot: int = 1000, seed: int = 0) -> tuple[dict, np.ndarray, str]:
    """(score dict, per-question correctness, method used)."""
    qs = load_questions(questions, answer_format)
    if qs.rows.size == 0:
        raise InputError(f"{qs.path}: no questions")
    preds, logps = load_predictions(predictions, qs)
    correct, method = correctness(qs, preds, logps, method)
    return score.accuracy_table(correct, qs.subtasks, n_boot, seed), correct, method

