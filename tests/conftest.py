"""Shared fixtures. One local Ray instance per test session: starting Ray costs ~10 s on 2 cores."""
from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def ray_local():
    import ray

    from uqa_ray.raysetup import init_ray

    init_ray(num_cpus=2)
    yield ray
    ray.shutdown()
