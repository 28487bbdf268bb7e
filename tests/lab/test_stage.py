"""`Stage` (uqa_ray/stage.py): reuse only when every marker exists; a build must leave them all."""
from __future__ import annotations

import pytest

from uqa_ray.stage import Stage


def test_reuses_a_complete_folder_and_rebuilds_a_partial_one(tmp_path):
    stage, said, builds = Stage("prepare", tmp_path / "prep-abc", ("meta.json", "train.arrow")), [], []

    def build():
        builds.append(1)
        stage.folder.mkdir(exist_ok=True)
        for m in stage.markers:
            (stage.folder / m).write_text("x")

    assert stage.get(build, said.append) == stage.folder and len(builds) == 1 and said == []
    assert stage.get(build, said.append) == stage.folder and len(builds) == 1
    assert said == [f"prepare: reusing {stage.folder}"]
    (stage.folder / "train.arrow").unlink()  # what a killed build leaves: one marker short
    assert stage.missing() == ["train.arrow"]
    stage.get(build, said.append)
    assert len(builds) == 2 and stage.missing() == []


def test_a_build_that_leaves_a_marker_out_fails_naming_it(tmp_path):
    stage = Stage("questions", tmp_path / "q", ("align.arrow", "meta.json"))

    def build():
        stage.folder.mkdir()
        (stage.folder / "align.arrow").write_text("x")

    with pytest.raises(RuntimeError, match=r"questions: .* built without \['meta.json'\]"):
        stage.get(build, print)
