from __future__ import annotations

import dataclasses

import pytest

from tests.questions.builder import build_prepared
from uqa_ray.config import build
from uqa_ray.questions.generate import generate
from uqa_ray.questions.spec import SUBTASKS, QuestionConfig, with_counts

PER_SUBTASK = 12


def small_config(**over) -> QuestionConfig:
    cfg = build(QuestionConfig, dict(si_window=5, it_min_window=4, df_max_k=5, popular_pool=10, max_per_user=3))
    return dataclasses.replace(with_counts(cfg, **{s: PER_SUBTASK for s in SUBTASKS}), **over)


@pytest.fixture(scope="session")
def prepared(tmp_path_factory):
    return build_prepared(tmp_path_factory.mktemp("prepared"))


@pytest.fixture(scope="session")
def gen_zh(prepared, tmp_path_factory):
    out = tmp_path_factory.mktemp("zh")
    return out, generate(prepared, small_config(), out)


@pytest.fixture(scope="session")
def gen_en(prepared, tmp_path_factory):
    out = tmp_path_factory.mktemp("en")
    return out, generate(prepared, small_config(lang="en", answer_format="content"), out)
