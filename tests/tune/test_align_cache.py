"""Trials that need the same alignment (an `encoder` trial and its `random` control, started together by
Tune) train it once: the second waits on the cache lock and reuses the first one's folder."""
from __future__ import annotations

import json
import threading
import time

import uqa_ray.align.steps as align_steps
import uqa_ray.align.train as align_train
from uqa_ray.align.config import align_config
from uqa_ray.config import to_dict
from uqa_ray.tune.trial import ensure_aligned


def test_concurrent_trials_train_one_alignment(tmp_path, monkeypatch):
    calls = []

    def slow_train(cfg, data_dir, encoder_dir, llm_dir, out, report=None):
        # Stands in for the training (this test is about who trains, not what): slow enough that both
        # threads ask while it runs, then the folder appears whole, as atomic_path makes it.
        calls.append(threading.get_ident())
        time.sleep(0.5)
        out.mkdir(parents=True)
        summary = {"status": "ok", "steps": len(calls)}
        (out / align_steps.SUMMARY_FILE).write_text(json.dumps(summary))
        return summary

    monkeypatch.setattr(align_train, "train_alignment", slow_train)
    spec = {"align": to_dict(align_config("embedded")), "encoder": {"dir": str(tmp_path / "enc")},
            "llm_dir": str(tmp_path / "llm"), "data_dir": str(tmp_path / "data"), "cache_dir": str(tmp_path)}
    got = []
    threads = [threading.Thread(target=lambda: got.append(ensure_aligned(spec))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1, f"trained {len(calls)} times"
    assert len(got) == 3 and len({str(folder) for folder, _ in got}) == 1
    assert all(summary == {"status": "ok", "steps": 1} for _, summary in got)
    # Another alignment config is another folder, trained on its own.
    other = {**spec, "align": {**spec["align"], "lr": 1e-3}}
    assert ensure_aligned(other)[0] != got[0][0] and len(calls) == 2
