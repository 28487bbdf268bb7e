"""Reading rows of a memory-mapped, multi-batch official Arrow file (data/stream.py)."""
import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest

from uqa_ray.data.stream import open_ipc, take_rows


def _multi_batch_file(path, n=50, per_batch=7):
    rng = np.random.default_rng(0)
    seqs = [[list(rng.integers(0, 9, size=rng.integers(1, 4))) for _ in range(rng.integers(1, 6))] for _ in range(n)]
    table = pa.table({"seq": pa.array(seqs, pa.list_(pa.list_(pa.int64()))), "text": [f"row {i}" for i in range(n)]})
    with ipc.new_file(str(path), table.schema) as w:
        for b in table.to_batches(max_chunksize=per_batch):
            w.write_batch(b)
    return table


def test_take_rows_equals_take_across_batches(tmp_path):
    want = _multi_batch_file(tmp_path / "f.arrow")
    table = open_ipc(tmp_path / "f.arrow").read_all()
    assert table.column(0).num_chunks > 1
    for rows in ([3, 49, 0, 7, 7, 20], list(range(50))[::-1], [13]):
        got = take_rows(table, rows)
        assert got.equals(want.take(pa.array(rows))) and got.column(0).num_chunks == 1
    assert take_rows(table, []).num_rows == 0
    with pytest.raises(IndexError, match=r"rows \[50\]"):
        take_rows(table, [1, 50])
