"""The fault-injection hook (uqa_ray/faults.py): armed by UQA_RAY_FAULTS only, validated, a no-op unarmed."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from uqa_ray.faults import ENV, Faults, armed


def test_unarmed_faults_do_nothing(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    faults = armed()
    assert faults == Faults()
    loss = torch.tensor(2.0)
    assert faults.poison(loss, 0, 0, 1) is loss
    faults.maybe_die(0, 1, "/nonexistent")  # returns: nothing to do at step 0


def test_armed_from_the_environment_or_a_worker_dict(monkeypatch):
    monkeypatch.setenv(ENV, '{"nan_at_step": 3}')
    faults = armed()
    assert faults == Faults(nan_at_step=3) and armed(dataclasses.asdict(faults)) == faults
    loss = torch.tensor(2.0)
    assert faults.poison(loss, 3, 1, 2).isnan() and not faults.poison(loss, 3, 0, 2).isnan()  # last rank only
    assert faults.poison(loss, 2, 1, 2) is loss
    layer = torch.nn.Linear(2, 2)
    faults.poison_weights(layer, 2)
    assert torch.isfinite(layer.weight).all()
    faults.poison_weights(layer, 3)
    assert layer.weight.isnan().all()


@pytest.mark.parametrize("raw,match", [("{nope", "not a JSON object"), ('{"fail_at": 1}', "keys among"),
                                       ("[1]", "keys among"), ('{"nan_at_step": -1}', "must be an integer >= 0"),
                                       ('{"nan_at_step": "2"}', "must be an integer >= 0")])
def test_a_bad_value_is_named(monkeypatch, raw, match):
    monkeypatch.setenv(ENV, raw)
    with pytest.raises(ValueError, match=match):
        armed()
