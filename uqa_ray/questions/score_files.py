"""Scoring files: a question set (questions_{split}.parquet, or the official align_data_eval.arrow) and a
predictions file.

Predictions file: JSON Lines, one object per question,
    {"row": <int, the question's `row` = its row in align_data_{split}.arrow>,
     "prediction": <str, the decoded greedy token(s)>,            # official rule
     "option_logprobs": [<float>, ...]}                            # option-likelihood, one per option,
                                                                   # in the question's option order
Either field may be absent; every question needs exactly one line; a row that is not a question, a
repeated row, a missing row or a malformed line is an InputError naming it.

Against an align_data_eval.arrow, the official generation script's own output is read as it is: lines
with no `row` but the question's text (`question`, the user turn) and its gold (`answer`) are matched to
the file's questions by that pair; questions with the same text and gold are interchangeable for scoring,
so they are taken in file order.

From the official align_data_eval.arrow only `text` is read: the question is the user turn, the gold is
the assistant turn, the sub-task comes from routing the question by the official substrings (zh; our en
markers as a fallback). Option-likelihood scoring there needs letter answers ("A. ..." option lines).
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from uqa_ray.data.schema import chat_turns
from uqa_ray.io import InputError, reason
from uqa_ray.questions import score
from uqa_ray.questions.source import open_arrow, read_batch, read_parquet
from uqa_ray.questions.spec import SUBTASKS
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
    questions: list[str] | None = None  # the user turns (official arrow files only)


def load_questions(path: str | Path, answer_format: str | None = None) -> QuestionSet:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    qs = _from_arrow(path) if path.suffix == ".arrow" else _from_parquet(path, answer_format)
    bad = [i for i, g in enumerate(qs.gold_text) if not isinstance(g, str) or not g]
    if bad:  # every prediction would start with an empty gold (score.py)
        raise InputError(f"{path}: row {int(qs.rows[bad[0]])}: the gold answer {qs.gold_text[bad[0]]!r} must be "
                         "a non-empty string")
    return qs


def _from_parquet(path: Path, answer_format: str | None) -> QuestionSet:
    need = ["row", "subtask", "gold", "options", "answer_letter", "answer_content", "answer_format"]
    t = read_parquet(path, need, ints=("row", "gold"), texts=("subtask", "answer_letter", "answer_content",
                                                            "answer_format"))
    rows = t["row"].to_numpy().astype(np.int64)
    ordered = np.sort(rows)
    repeated = ordered[1:][ordered[1:] == ordered[:-1]]
    if len(repeated):  # predictions are keyed by row
        raise InputError(f"{path}: column 'row' repeats row {int(repeated[0])}")
    subs = t["subtask"].to_pylist()
    unknown = sorted({s for s in subs if s not in SUBTASKS}, key=str)
    if unknown:
        raise InputError(f"{path}: column 'subtask' holds {unknown[0]!r}; expected one of {SUBTASKS}")
    fmt = t["answer_format"].to_pylist()
    if answer_format is not None:
        fmt = [answer_format] * t.num_rows
    elif set(fmt) - {"letter", "content"}:
        raise InputError(f"{path}: column 'answer_format' holds "
                         f"{sorted(set(fmt) - {'letter', 'content'}, key=str)[0]!r}"
                         "; expected 'letter' or 'content'")
    opt_type = t["options"].type
    if not (pa.types.is_list(opt_type) and pa.types.is_string(opt_type.value_type)):
        raise InputError(f"{path}: column 'options' has type {opt_type}, expected list<string>")
    if t["options"].null_count:
        raise InputError(f"{path}: column 'options' has null values")
    letter, content = t["answer_letter"].to_pylist(), t["answer_content"].to_pylist()
    gold_text = [l if f == "letter" else c for f, l, c in zip(fmt, letter, content)]
    n_opt = pc.list_value_length(t["options"]).to_numpy().astype(np.int64)
    gold = t["gold"].to_numpy().astype(np.int64)
    out = (gold < 0) | (gold >= n_opt)
    if out.any():  # option-likelihood scoring compares the argmax with it
        i = int(np.flatnonzero(out)[0])
        raise InputError(f"{path}: row {int(rows[i])}: column 'gold' holds {int(gold[i])}, not an option index "
                         f"(0..{int(n_opt[i]) - 1})")
    return QuestionSet(path, rows, subs, gold_text, gold, n_opt)


def _from_arrow(path: Path) -> QuestionSet:
    reader = open_arrow(path)
    if "text" not in reader.schema.names:
        raise InputError(f"{path}: missing column 'text' (have {reader.schema.names})")
    text_type = reader.schema.field("text").type
    if not (pa.types.is_string(text_type) or pa.types.is_large_string(text_type)):
        raise InputError(f"{path}: column 'text' has type {text_type}, expected string")
    subs, golds, gold_idx, n_opt, questions, row = [], [], [], [], [], 0
    for b in range(reader.num_record_batches):
        for text in read_batch(reader, b, path).column("text").to_pylist():
            q, a = chat_turns(text, f"{path}: row {row}, column 'text'")
            sub = route(q, "zh") or route(q, "en")
            if sub is None:
                raise InputError(f"{path}: row {row}: the question routes to no sub-task: {q[:80]!r}")
            labels = _OPTION_LINE.findall(q)
            subs.append(sub)
            golds.append(a)
            questions.append(q)
            gold_idx.append(labels.index(a) if a in labels else -1)
            n_opt.append(len(labels))
            row += 1
    return QuestionSet(path, np.arange(row, dtype=np.int64), subs, golds, np.array(gold_idx, np.int64),
                       np.array(n_opt, np.int64), questions)


def load_predictions(path: str | Path, qs: QuestionSet) -> tuple[list[str | None], list[list[float] | None]]:
    """Predictions aligned with qs.rows (None where a field is absent)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    where = {int(r): i for i, r in enumerate(qs.rows)}
    preds: list = [None] * len(where)
    logps: list = [None] * len(where)
    seen = np.zeros(len(where), bool)
    by_text: dict[tuple[str, str], list[int]] = {}
    for i, (q, g) in enumerate(zip(qs.questions or [], qs.gold_text)):
        by_text.setdefault((q, g), []).append(i)
    try:
        lines = path.read_text(encoding="utf-8").split("\n")  # not splitlines(): U+2028 may sit in a string
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text ({reason(e)})") from e
    for ln, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except (ValueError, RecursionError) as e:  # RecursionError: nesting deeper than the parser's stack
            raise InputError(f"{path}:{ln}: not JSON ({reason(e)})") from e
        if isinstance(rec, dict) and "row" not in rec and "question" in rec:
            i = _row_of_question(rec, qs, by_text, seen, f"{path}:{ln}")
            r = int(qs.rows[i])
        else:
            r = rec.get("row") if isinstance(rec, dict) else None
            if not isinstance(r, int) or isinstance(r, bool):
                raise InputError(f"{path}:{ln}: needs an integer 'row' (or the official output's 'question' and "
                                 f"'answer'), got {line.strip()[:80]!r}")
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
            if (not isinstance(lp, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                    for x in lp)
                    or (qs.n_options[i] and len(lp) != qs.n_options[i]) or len(lp) < 2):
                raise InputError(f"{path}:{ln}: row {r}: 'option_logprobs' must be "
                                 f"{qs.n_options[i] or 'at least 2'} numbers")
            try:
                vals = [float(x) for x in lp]
            except OverflowError:  # an integer beyond float range
                vals = [math.nan]
            if any(math.isnan(x) or x == math.inf for x in vals):  # -inf: an impossible option, legal
                raise InputError(f"{path}:{ln}: row {r}: 'option_logprobs' hold NaN, +inf or an overflow: "
                                 f"{line.strip()[:80]!r}")
            logps[i] = vals
    if not seen.all():
        missing = qs.rows[~seen]
        raise InputError(f"{path}: no prediction for {missing.size} question(s), e.g. rows {missing[:5].tolist()}")
    return preds, logps


def _row_of_question(rec: dict, qs: QuestionSet, by_text: dict, seen: np.ndarray, where: str) -> int:
    """The index of the first not yet predicted question with this line's question text and gold."""
    if qs.questions is None:
        raise InputError(f"{where}: a line keyed by 'question' needs the official align_data_eval.arrow as the "
                         f"question set ({qs.path.name} is keyed by 'row')")
    q, a = rec.get("question"), rec.get("answer")
    if not isinstance(q, str) or not isinstance(a, str):
        raise InputError(f"{where}: the official output needs string 'question' and 'answer'")
    same = by_text.get((q, a))
    if not same:
        raise InputError(f"{where}: no question of {qs.path.name} has this text and answer {a!r}: {q[:80]!r}")
    free = next((i for i in same if not seen[i]), None)
    if free is None:
        raise InputError(f"{where}: the question {q[:80]!r} (answer {a!r}) is predicted more times than "
                         f"{qs.path.name} asks it ({len(same)})")
    return free


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
    try:
        correct, method = correctness(qs, preds, logps, method)
    except InputError as e:  # a field missing for the method asked: the predictions file is at fault
        raise e if str(qs.path) in str(e) else InputError(f"{predictions}: {e}") from e
    return score.accuracy_table(correct, qs.subtasks, n_boot, seed), correct, method

