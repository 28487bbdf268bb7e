"""Rows of one question split, for alignment and evaluation: encoder inputs + chats, in batches.

A split is `align_data_{split}.arrow` (the official file: the encoder's input sequence of every question
and its `text` chat) plus `questions_{split}.parquet` (sub-task, options, gold, both prompt formats),
matched by `row`. The Arrow file is memory-mapped: a batch copies only its own rows (`take`), so a
paper-size file is never loaded whole. The question table holds short strings only and is read once.

Chats: when the requested answer format is the one the Arrow file was written in, the official `text`
column is used as is (parsed and checked); otherwise the chat is built from the parquet's
prompt_{format} / answer_{format} columns, which is how the embedded default gets content answers from
an official letter-format file.

Shuffling: one seeded permutation of all rows per epoch (`numpy.random.default_rng([seed, epoch])`), so
the same seed gives the same batches on any machine.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from uqa_ray.data.schema import ALIGN_FILES, ALIGN_SCHEMA, QUESTIONS_FILES, TEXT_COLUMN, check_schema, parse_chat
from uqa_ray.data.stream import open_ipc, take_rows
from uqa_ray.io import InputError

FORMATS = ("letter", "content")
QUESTION_COLUMNS = ("row", "user", "subtask", "answer_format", "prompt_letter", "prompt_content", "options",
                    "labels", "gold", "answer_letter", "answer_content")


class QuestionSplit:
    """One split of a prepared folder with generated questions (see module doc)."""

    def __init__(self, data_dir: str | Path, split: str):
        if split not in ALIGN_FILES:
            raise ValueError(f"split must be one of {sorted(ALIGN_FILES)}, got {split!r}")
        self.data_dir, self.split = Path(data_dir), split
        self.arrow_path = self.data_dir / ALIGN_FILES[split]
        qpath = self.data_dir / QUESTIONS_FILES[split]
        if not qpath.is_file() or not self.arrow_path.is_file():
            raise InputError(f"{self.data_dir}: {ALIGN_FILES[split]} / {QUESTIONS_FILES[split]} not found "
                             "(run `uqa-ray questions` first)")
        reader = open_ipc(self.arrow_path)
        check_schema(reader.schema, ALIGN_SCHEMA, str(self.arrow_path))
        self.table = reader.read_all()  # memory-mapped: buffers point into the file, nothing is copied
        try:
            q = pq.read_table(qpath, columns=list(QUESTION_COLUMNS))
        except (OSError, pa.ArrowInvalid, KeyError) as e:
            raise InputError(f"{qpath}: cannot read the question columns {QUESTION_COLUMNS}: {e}") from e
        if q.num_rows == 0:
            raise InputError(f"{qpath}: no questions")
        if q.num_rows != self.table.num_rows or not np.array_equal(q["row"].to_numpy(), np.arange(q.num_rows)):
            raise InputError(f"{qpath}: column 'row' must be 0..{self.table.num_rows - 1} in order, matching "
                             f"the {self.table.num_rows} rows of {self.arrow_path.name}")
        self.q = {c: q[c].to_pylist() for c in QUESTION_COLUMNS if c not in ("row",)}
        formats = set(self.q["answer_format"])
        if len(formats) != 1 or not formats <= set(FORMATS):
            raise InputError(f"{qpath}: column 'answer_format' must hold one of {FORMATS}, got {sorted(formats)}")
        self.file_format = formats.pop()
        self.subtasks = np.array(self.q["subtask"], dtype=object)

    def __len__(self) -> int:
        return self.table.num_rows

    # -- chats ---------------------------------------------------------------------------------------
    def messages(self, rows: Sequence[int], answer_format: str, with_answer: bool = True) -> list[list[dict]]:
        """Chat messages of the rows: [user, (assistant)] in the requested answer format."""
        if answer_format not in FORMATS:
            raise ValueError(f"answer_format must be one of {FORMATS}, got {answer_format!r}")
        out = []
        if answer_format == self.file_format:
            texts = self.table.column(TEXT_COLUMN).take(pa.array(rows, pa.int64())).to_pylist()
            for r, t in zip(rows, texts):
                chat = parse_chat(t, f"{self.arrow_path}: row {r}, column {TEXT_COLUMN!r}")
                out.append(chat if with_answer else [m for m in chat if m["role"] != "assistant"])
            return out
        prompts, answers = self.q[f"prompt_{answer_format}"], self.q[f"answer_{answer_format}"]
        for r in rows:
            msgs = [{"role": "user", "content": prompts[r]}]
            out.append(msgs + [{"role": "assistant", "content": answers[r]}] if with_answer else msgs)
        return out

    def options(self, rows: Sequence[int], answer_format: str) -> list[list[str]]:
        """What option likelihood scores: the labels (letter format) or the option texts (content)."""
        col = self.q["labels" if answer_format == "letter" else "options"]
        return [list(col[r]) for r in rows]

    def golds(self, answer_format: str) -> list[str]:
        """The official rule's gold strings of every row."""
        return list(self.q[f"answer_{answer_format}"])

    def gold_index(self) -> np.ndarray:
        return np.asarray(self.q["gold"], dtype=np.int64)

    # -- encoder input -------------------------------------------------------------------------------
    def sequences(self, rows: Sequence[int], columns: Sequence[str], max_len: int) -> dict:
        """The encoder batch of the rows (data.collate: last `max_len` clicks, right padding, mask)."""
        from uqa_ray.data.collate import collate

        part = take_rows(self.table.select(list(columns)), rows)
        try:
            return collate(part, max_len)
        except InputError as e:
            raise InputError(f"{self.arrow_path}: rows {list(rows)[:8]}...: {e}") from e

    # -- batching ------------------------------------------------------------------------------------
    def batches(self, batch_size: int, seed: int = 0, epoch: int = 0, shuffle: bool = True,
                drop_last: bool = False) -> Iterator[np.ndarray]:
        """Row indices in batches; a seeded permutation per (seed, epoch) when `shuffle`."""
        order = (np.random.default_rng([seed, epoch]).permutation(len(self)) if shuffle
                 else np.arange(len(self)))
        stop = len(order) - (len(order) % batch_size if drop_last else 0)
        for s in range(0, stop, batch_size):
            yield order[s:s + batch_size]

