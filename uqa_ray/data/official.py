"""`uqa-ray prepare --official DIR`: accept the official Kaggle Arrow files as already-prepared data.

The two pretrain files are required, the two align files optional (both or neither). Each file's
schema is checked, ids are checked to be non-negative, every user to have clicks and every align
`text` to be a JSON chat with a user and an assistant turn, and meta.json gets vocab = max id + 1 per
column (the shared "bpe" table: the max over the five text columns), computed one record batch at
a time from a memory map. The files are hard-linked (copied across file systems) into the output.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from uqa_ray.data.schema import (
    ALIGN_FILES, ALIGN_SCHEMA, BPE_COLUMNS, BPE_VOCAB_KEY, META_FILE, PRETRAIN_FILES, PRETRAIN_SCHEMA, SEQ_COLUMNS,
    TEXT_COLUMN, TOKENIZER_DIR, chat_turns, check_schema,
)
from uqa_ray.io import InputError, atomic_path, reason


def read_batch(reader, i: int, path: Path) -> pa.RecordBatch:
    """Record batch i, fully validated: the file is memory-mapped and its buffers are trusted as they
    are, so a garbled offset would make the compute kernels read out of bounds (a segfault, not an
    error). Full validation checks every offset and length first (one linear pass)."""
    try:
        batch = reader.get_batch(i)
        batch.validate(full=True)
    except (pa.ArrowException, OSError) as e:
        raise InputError(f"{path}: record batch {i} is corrupt ({reason(e)})") from e
    return batch


def scan_file(path: Path, expected: pa.Schema) -> dict:
    """Rows, clicks and the max id per column of one official file, streamed by record batch."""
    try:
        reader = pa.ipc.open_file(pa.memory_map(str(path)))
    except (pa.ArrowInvalid, OSError) as e:
        raise InputError(f"{path}: not a readable Arrow IPC file ({reason(e)})") from e
    check_schema(reader.schema, expected, str(path))
    rows, clicks = 0, 0
    max_id = {c: -1 for c in SEQ_COLUMNS}
    for i in range(reader.num_record_batches):
        batch = read_batch(reader, i, path)
        lens = None
        for c in SEQ_COLUMNS:
            col = batch.column(c)
            # a null sequence, click bag or id has no meaning to the encoders (0 is their padding id)
            if col.null_count or col.flatten().null_count:
                raise InputError(f"{path}: column {c!r} has a null sequence or click bag")
            n = pc.list_value_length(col).to_numpy(zero_copy_only=False)
            if lens is None:
                lens = n
                clicks += int(n.sum())
                if not n.all():  # nothing to encode, no target to predict
                    raise InputError(f"{path}: row {rows + int(np.flatnonzero(n == 0)[0])}: column {c!r} "
                                     "holds a user with no clicks (an empty sequence)")
            elif not np.array_equal(n, lens):  # the encoders zip the ten columns click by click
                row = rows + int(np.flatnonzero(n != lens)[0])
                raise InputError(f"{path}: row {row}: column {c!r} has a different number of clicks "
                                 f"than {SEQ_COLUMNS[0]!r}")
            values = pc.list_flatten(pc.list_flatten(col))
            if values.null_count:
                raise InputError(f"{path}: column {c!r} has a negative or null id (null)")
            if len(values):
                lo, hi = pc.min_max(values).values()
                if lo.as_py() < 0:
                    raise InputError(f"{path}: column {c!r} has a negative or null id ({lo.as_py()})")
                max_id[c] = max(max_id[c], hi.as_py())
        if TEXT_COLUMN in expected.names:  # the align files' question and answer, as a JSON chat
            for r, text in enumerate(batch.column(TEXT_COLUMN).to_pylist()):
                chat_turns(text, f"{path}: row {rows + r}, column {TEXT_COLUMN!r}")
        rows += batch.num_rows
    if rows == 0:
        raise InputError(f"{path}: no rows")
    return {"rows": rows, "clicks": clicks, "max_id": max_id}


def prepare_official(src: str | Path, out: str | Path, tokenizer: str | None = None) -> dict:
    src, out = Path(src), Path(out)
    for name in PRETRAIN_FILES.values():
        if not (src / name).is_file():
            raise InputError(f"{src / name}: missing (the official pretrain files are required)")
    present = [n for n in ALIGN_FILES.values() if (src / n).is_file()]
    if len(present) == 1:
        raise InputError(f"{src}: only {present[0]} of the two align files is present")
    scans = {n: scan_file(src / n, PRETRAIN_SCHEMA) for n in PRETRAIN_FILES.values()}
    scans.update({n: scan_file(src / n, ALIGN_SCHEMA) for n in present})
    max_id = {c: max(s["max_id"][c] for s in scans.values()) for c in SEQ_COLUMNS}
    vocab = {c: int(max_id[c]) + 1 for c in SEQ_COLUMNS}
    bpe = max(vocab[c] for c in BPE_COLUMNS)
    with atomic_path(out) as tmp:
        tmp.mkdir()
        for name in [*PRETRAIN_FILES.values(), *present]:
            try:
                os.link(src / name, tmp / name)
            except OSError:
                shutil.copy2(src / name, tmp / name)
        tok_info = None
        if tokenizer:
            from uqa_ray.data.tokenizer import load_tokenizer, vocab_size

            tok = load_tokenizer(tokenizer)
            tok.save_pretrained(tmp / TOKENIZER_DIR)
            bpe = max(bpe, vocab_size(tok))
            tok_info = {"dir": TOKENIZER_DIR, "source": str(tokenizer), "vocab_size": vocab_size(tok)}
        vocab.update({c: bpe for c in BPE_COLUMNS})
        vocab[BPE_VOCAB_KEY] = bpe
        meta = {
            "format": "official UQABench files (validated by uqa-ray prepare --official)",
            "source": {"kind": "official", "dir": str(src.resolve()), "files": sorted(scans)},
            "vocab": vocab,
            "counts": {"train_users": scans[PRETRAIN_FILES["train"]]["rows"],
                       "eval_users": scans[PRETRAIN_FILES["eval"]]["rows"],
                       "train_clicks": scans[PRETRAIN_FILES["train"]]["clicks"],
                       "eval_clicks": scans[PRETRAIN_FILES["eval"]]["clicks"],
                       **{f"{n}_rows": s["rows"] for n, s in scans.items()}},
            "tokenizer": tok_info,
        }
        meta["counts"]["clicks"] = meta["counts"]["train_clicks"] + meta["counts"]["eval_clicks"]
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta

