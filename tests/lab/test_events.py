"""The lab's event log (uqa_ray/lab/events.py): one appended line per stage, a failing stage's included."""
from __future__ import annotations

import pytest

from uqa_ray.lab.events import EVENTS_FILE, Events, read_events


def test_stages_append_lines_and_runs_stay_apart(tmp_path):
    first = Events(tmp_path, "exp")
    with first.stage("data") as f:
        f["users"] = 3
    with pytest.raises(ValueError, match="bad column"):
        with first.stage("pretrain"):
            raise ValueError("bad column")
    second = Events(tmp_path, "exp")
    with second.stage("data"):
        pass
    assert len((tmp_path / EVENTS_FILE).read_text().splitlines()) == 3  # appended, never rewritten
    assert [e["stage"] for e in read_events(tmp_path)] == ["data"]  # the last run's
    data, pretrain = read_events(tmp_path, first.run)
    assert data["figures"] == {"users": 3} and data["error"] is None and data["experiment"] == "exp"
    assert pretrain["error"] == "ValueError: bad column" and pretrain["wall_s"] >= 0
    assert data["start"] <= data["end"] <= pretrain["start"]
    assert read_events(tmp_path / "nowhere") == []
