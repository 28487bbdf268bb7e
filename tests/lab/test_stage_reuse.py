"""A stage output is reused only when it is complete: the questions folder of a run killed before it linked
the prepared files beside the questions is completed by the rerun, not reused as it is."""
from __future__ import annotations

from uqa_ray.config import build
from uqa_ray.lab.config import LabConfig
from uqa_ray.lab.pipeline import question_set


def test_questions_without_their_data_links_are_not_reused(tiny_data, tmp_path, capsys):
    cfg = build(LabConfig, {"experiment": "x", "grid": {"methods": ["no_embedding"]}})
    q = question_set(cfg, tiny_data, tmp_path)
    prepared = sorted(e.name for e in tiny_data.iterdir())
    assert sorted(p.name for p in q.iterdir() if p.is_symlink()) == prepared
    assert question_set(cfg, tiny_data, tmp_path) == q and "questions: reusing" in capsys.readouterr().out

    # What a run killed between writing the questions and linking the data left (the trials need
    # meta.json, the tokenizer, ... from this folder).
    for name in prepared:
        (q / name).unlink()
    assert question_set(cfg, tiny_data, tmp_path) == q
    assert "questions: reusing" not in capsys.readouterr().out
    assert all((q / name).resolve() == (tiny_data / name).resolve() for name in prepared)
