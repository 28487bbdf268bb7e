"""Shared pieces of the property-based bad-input tests (tests/data, tests/questions): hypothesis
strategies that describe a malformation as plain data (so a failing example prints readably), the
functions that apply it to a table or a file, and the checks every stage must pass: a clear
InputError naming the file, and an output folder byte-identical to what it was before the call.
"""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

from uqa_ray.data.schema import SEQ_COLUMNS
from uqa_ray.io import InputError


def props(max_examples: int, shrink: bool = True):
    """derandomize: CI sees the same examples every run; no deadline and no too-slow check because one
    example may start Ray tasks or generate questions (seconds, not milliseconds); the function-scoped
    fixtures are only paths under which each example makes its own fresh folder. shrink=False where an
    example costs seconds of Ray work: shrinking a failure would take many minutes, and the failing
    example is printed either way."""
    phases = [Phase.explicit, Phase.generate] + ([Phase.shrink] if shrink else [])
    return settings(max_examples=max_examples, deadline=None, derandomize=True, database=None, phases=phases,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large])


# --- Output folders --------------------------------------------------------------------------------
def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under `root` (relative path -> bytes): a failed call must leave it unchanged."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def assert_unchanged(root: Path, before: dict[str, bytes]) -> None:
    after = snapshot(root)
    extra, gone = sorted(set(after) - set(before)), sorted(set(before) - set(after))
    assert not extra, f"partial or temporary files left behind: {extra}"
    assert not gone, f"existing files removed: {gone}"
    changed = [k for k in before if before[k] != after[k]]
    assert not changed, f"existing files changed: {changed}"


def assert_no_temporaries(root: Path) -> None:
    left = [str(p.relative_to(root)) for p in root.rglob(".*")]
    assert not left, f"temporary files left behind: {left}"


def check_error(err: InputError, *words: str) -> None:
    """The message is one line and names every word given (file name, column, value)."""
    msg = str(err)
    assert msg and "\n" not in msg, f"message must be one non-empty line: {msg!r}"
    for w in words:
        assert w in msg, f"{w!r} not named in {msg!r}"


# --- Table malformations ---------------------------------------------------------------------------
WRONG_TYPES = {"string": pa.string(), "double": pa.float64(), "bool": pa.bool_(), "list": pa.list_(pa.int64())}


def table_edit(columns: list[str], value_edits: bool = True):
    """(kind, column, arg) on one of `columns`. Schema edits: drop, rename, retype; value edits: nulls
    at some rows, a value replaced, rows repeated, all rows removed."""
    col = st.sampled_from(columns)
    schema = st.one_of(
        st.tuples(st.just("drop"), col, st.none()),
        st.tuples(st.just("rename"), col, st.sampled_from(["_x", "X", " "])),
        st.tuples(st.just("retype"), col, st.sampled_from(sorted(WRONG_TYPES))),
    )
    if not value_edits:
        return schema
    values = st.one_of(
        st.tuples(st.just("null"), col, st.lists(st.integers(0, 50), min_size=1, max_size=3)),
        st.tuples(st.just("set"), col, st.tuples(st.integers(0, 50), st.sampled_from([-1, 0, 10**6, -(2**40)]))),
        st.tuples(st.just("duplicate"), st.just(""), st.integers(1, 3)),
        st.tuples(st.just("empty"), st.just(""), st.none()),
    )
    return st.one_of(schema, values)


def _retyped(arr: pa.ChunkedArray, name: str) -> pa.Array:
    want = WRONG_TYPES[name]
    values = arr.to_pylist()
    if name == "string":
        return pa.array([None if v is None else str(v) for v in values], want)
    if name == "double":
        return pa.array([None if v is None else (float(len(v)) if isinstance(v, (str, list)) else float(v) + 0.5)
                         for v in values], want)
    if name == "bool":
        return pa.array([None if v is None else bool(v) for v in values], want)
    return pa.array([None if v is None else [len(v) if isinstance(v, (str, list)) else int(v)] for v in values], want)


def apply_edit(t: pa.Table, edit) -> pa.Table:
    kind, col, arg = edit
    if kind == "drop":
        return t.drop_columns([col])
    if kind == "rename":
        return t.rename_columns([c + arg if c == col else c for c in t.column_names])
    if kind == "retype":
        if t[col].type == WRONG_TYPES[arg]:  # the type it has is not a wrong one: take another
            arg = "double" if arg == "string" else "string"
        return t.set_column(t.column_names.index(col), col, _retyped(t[col], arg))
    if kind == "duplicate":
        return pa.concat_tables([t, t.slice(0, arg)])
    if kind == "empty":
        return t.slice(0, 0)
    i = t.column_names.index(col)
    if not t.num_rows:
        return t
    if kind == "null":
        mask = [False] * t.num_rows
        for r in arg:
            mask[r % t.num_rows] = True
        return t.set_column(i, col, pc.if_else(pa.array(mask), pa.nulls(t.num_rows, t[col].type), t[col]))
    row, value = arg
    values = t[col].to_pylist()
    if pa.types.is_integer(t[col].type):
        values[row % t.num_rows] = value
    elif pa.types.is_string(t[col].type):
        values[row % t.num_rows] = str(value)
    else:
        return t
    return t.set_column(i, col, pa.array(values, t[col].type))


# --- Sequence files (official / prepared Arrow IPC) ---------------------------------------------
def seq_edit():
    """(kind, column, arg) on an official/prepared sequence table: schema edits, a null or empty
    sequence, a null / negative / huge id in one click, no rows at all, or int32 ids (still valid)."""
    col = st.sampled_from(list(SEQ_COLUMNS))
    row = st.integers(0, 9)
    return st.one_of(
        table_edit(list(SEQ_COLUMNS), value_edits=False),
        st.tuples(st.just("null-seq"), col, row), st.tuples(st.just("null-id"), col, row),
        st.tuples(st.just("negative-id"), col, row), st.tuples(st.just("empty-seq"), col, row),
        st.tuples(st.just("empty-table"), st.just(""), st.none()),
        st.tuples(st.just("int32"), col, st.none()), st.tuples(st.just("huge-id"), col, row),
    )


def _seq_retyped(values: list, arg: str) -> pa.Array:
    """A wrong type that still looks like a sequence: flat ids (no bags), float ids or string ids."""
    if arg in ("list", "bool"):
        return pa.array([[b[0] if b else 0 for b in s] for s in values], pa.list_(pa.int64()))
    cast = float if arg == "double" else str
    return pa.array([[[cast(x) for x in b] for b in s] for s in values],
                    pa.list_(pa.list_(pa.float64() if arg == "double" else pa.string())))


def edit_sequences(t: pa.Table, e) -> pa.Table:
    """Apply a `seq_edit` to a table of the official schema (one row per user)."""
    kind, col, arg = e
    if kind == "retype":
        return t.set_column(t.column_names.index(col), col, _seq_retyped(t[col].to_pylist(), arg))
    if kind in ("drop", "rename"):
        return apply_edit(t, e)
    if kind == "empty-table":
        return t.slice(0, 0)
    if kind == "int32":
        return t.set_column(t.column_names.index(col), col, t[col].cast(pa.list_(pa.list_(pa.int32()))))
    v, r = t[col].to_pylist(), arg % t.num_rows
    if kind == "null-seq":
        v[r] = None
    elif kind == "empty-seq":
        v[r] = []
    else:
        v[r][0][0] = {"null-id": None, "negative-id": -3, "huge-id": 2**62}[kind]
    return t.set_column(t.column_names.index(col), col, pa.array(v, t.schema.field(col).type))


def write_ipc(path, t: pa.Table) -> None:
    with ipc.new_file(str(path), t.schema) as w:
        w.write_table(t, max_chunksize=2)


# --- File malformations ----------------------------------------------------------------------------
def file_edit():
    """(kind, fraction): cut the file at a fraction of its length, or overwrite bytes around it."""
    return st.tuples(st.sampled_from(["truncate", "garble"]), st.floats(0.0, 0.999))


def apply_file_edit(path: Path, edit) -> None:
    kind, frac = edit
    data = path.read_bytes()
    at = int(len(data) * frac)
    if kind == "truncate":
        path.write_bytes(data[:at])
    else:  # 16 bytes of noise: a broken page, header, offset buffer or footer, depending on where
        path.write_bytes(data[:at] + bytes((37 * i + 11) % 256 for i in range(16)) + data[at + 16:])
