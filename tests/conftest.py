"""Shared fixtures. One local Ray instance per test session: starting Ray costs ~10 s on 2 cores."""
from __future__ import annotations

import os

import pytest

# One thread per process: the tests' tensors are tiny, and on a 2-core machine running the driver and
# Ray workers side by side, 2 threads each thrash (a tiny learning test: 1.1 s with 1 thread, 42 s with 2).
# Set before torch is imported anywhere, and inherited by the Ray workers the tests start.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")


@pytest.fixture(autouse=True, scope="session")
def user_cache(tmp_path_factory):
    """The tests' own user cache (align/lm_cache.py): they never read or fill ~/.cache/uqa-ray."""
    from uqa_ray.align.lm_cache import CACHE_ENV

    old = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(tmp_path_factory.mktemp("user-cache"))
    yield os.environ[CACHE_ENV]
    if old is None:
        os.environ.pop(CACHE_ENV)
    else:
        os.environ[CACHE_ENV] = old


@pytest.fixture(scope="session")
def ray_local():
    import ray

    from uqa_ray.raysetup import init_ray

    init_ray(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_data(ray_local, tmp_path_factory):
    """The `tiny` synthetic log prepared by the real pipeline (synth -> Ray Data prepare), shared by the
    stages' tests. Returns the prepared folder."""
    from uqa_ray.data.prepare import prepare
    from uqa_ray.questions.render import prompt_text
    from uqa_ray.data.synthetic import generate, preset

    root = tmp_path_factory.mktemp("tiny")
    generate(preset("tiny"), root / "raw", seed=0)
    prepare(root / "raw", root / "data", prompt_text=prompt_text())
    return root / "data"
