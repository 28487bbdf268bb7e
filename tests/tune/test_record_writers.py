"""Several experiments writing result records into one results folder at once (real processes): the first
writer of a trial id wins, every later one gets FileExistsError, no record is replaced or torn, and no
temporary is left. Experiments with the same trial ids keep apart in their own folders."""
from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import random
from pathlib import Path

import pytest

from uqa_ray.io import write_new_json
from uqa_ray.tune.records import check_experiment, record_path, write_record

OVERLAP = [f"encoder-{i:04d}" for i in range(150)]  # every writer tries these
ROUNDS = 3  # each writer tries each of its ids this many times (later tries must all be refused)


def _record(experiment: str, tid: str, writer: str, attempt: int) -> dict:
    # A payload of 4-96 KiB, so that a non-atomic write would be caught half-way by the reader.
    size = random.Random(f"{writer}{tid}{attempt}").randrange(4096, 96 * 1024)
    return {"experiment": experiment, "trial_id": tid, "writer": writer, "attempt": attempt,
            "payload": hashlib.sha256(f"{writer}{tid}".encode()).hexdigest() * (size // 64)}


def _writer(results: str, experiment: str, writer: str, ids: list[str], start, out) -> None:
    """Try to write every id ROUNDS times, in a writer-specific order; report what it won and lost."""
    order = [(r, tid) for r in range(ROUNDS) for tid in random.Random(writer).sample(ids, len(ids))]
    won, lost = [], 0
    start.wait()
    for attempt, tid in order:
        rec = _record(experiment, tid, writer, attempt)
        try:
            if attempt % 2:  # both entry points: the record writer and the plain never-overwrite write
                write_new_json(record_path(results, experiment, tid), rec)
            else:
                write_record(results, rec)
            won.append((tid, attempt))
        except FileExistsError:
            lost += 1
    out.put((writer, won, lost))


def _reader(results: str, start, stop, out) -> None:
    """Read every visible record over and over: none may be torn, none may change once seen."""
    seen, torn, changed, reads = {}, [], [], 0
    start.wait()
    while not stop.is_set():
        for p in Path(results).rglob("*.json"):
            if p.name.startswith("."):
                continue
            try:
                data = p.read_bytes()
                json.loads(data)
            except FileNotFoundError:
                continue
            except ValueError:
                torn.append(str(p))
                continue
            reads += 1
            if seen.setdefault(str(p), data) != data:
                changed.append(str(p))
    out.put((torn, changed, reads))


@pytest.mark.slow
def test_concurrent_writers_never_overwrite_or_tear_a_record(tmp_path):
    ctx = mp.get_context("spawn")
    results = str(tmp_path / "results")
    writers = {  # name: (experiment, ids)
        "a": ("alpha", OVERLAP + [f"encoder-a{i}" for i in range(40)]),
        "b": ("alpha", OVERLAP + [f"encoder-b{i}" for i in range(40)]),
        "c": ("beta", OVERLAP),  # another experiment, the same trial ids
    }
    start, stop, out, rout = ctx.Barrier(len(writers) + 1), ctx.Event(), ctx.Queue(), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(results, exp, w, ids, start, out)) for w, (exp, ids) in writers.items()]
    reader = ctx.Process(target=_reader, args=(results, start, stop, rout))
    for p in procs + [reader]:
        p.start()
    got = {}
    for _ in procs:  # drain the queue before joining (a child with queued data does not exit)
        w, won, lost = out.get(timeout=240)
        got[w] = (won, lost)
    stop.set()
    torn, changed, reads = rout.get(timeout=60)
    for p in procs + [reader]:
        p.join(timeout=60)
        assert p.exitcode == 0

    assert not torn and not changed and reads > 0
    # Every id of every experiment written exactly once, by its first try: later tries were all refused.
    winners: dict[tuple[str, str], str] = {}
    for w, (won, lost) in got.items():
        exp, ids = writers[w]
        assert all(attempt == 0 for _, attempt in won), w
        assert len(won) + lost == ROUNDS * len(ids)
        for tid, _ in won:
            assert (exp, tid) not in winners, f"{exp}/{tid} written twice"
            winners[exp, tid] = w
    assert {t for (e, t) in winners if e == "alpha"} == set(OVERLAP) | {f"encoder-{w}{i}"
                                                                        for w in "ab" for i in range(40)}
    assert {t for (e, t) in winners if e == "beta"} == set(OVERLAP)
    assert all(winners["alpha", f"encoder-{w}{i}"] == w for w in "ab" for i in range(40))
    # The overlap was really contended: each writer of alpha won some of it.
    assert {winners["alpha", t] for t in OVERLAP} == {"a", "b"}
    # On disk: exactly the winners' first records, byte for byte, and nothing else (no temporaries).
    files = sorted(str(p.relative_to(results)) for p in Path(results).rglob("*"))
    assert files == sorted(["alpha", "beta"] + [f"{e}/{t}.json" for e, t in winners])
    for (exp, tid), w in winners.items():
        on_disk = json.loads(record_path(results, exp, tid).read_text())
        assert on_disk == json.loads(json.dumps(_record(exp, tid, w, 0)))


@pytest.mark.parametrize("bad", ["", ".", "..", "a/b", "a/../b", "../x", "/abs", ".hidden", "-x", "sp ace"])
def test_an_experiment_name_is_one_plain_folder(tmp_path, bad):
    # Trial ids do not include the experiment: only its own folder keeps its records apart.
    with pytest.raises(ValueError, match="plain folder name"):
        record_path(tmp_path, bad, "encoder-abc")
    with pytest.raises(ValueError, match="plain folder name"):
        write_record(tmp_path, {"experiment": bad, "trial_id": "encoder-abc"})
    assert not any(tmp_path.iterdir())
    assert check_experiment("scale_model_size") == "scale_model_size"
