"""A new adapter is one file plus one registration line (issue 16): once registered it is a valid
`AlignConfig.adapter`, trains in the aligned model, saves and loads, and the analysis tables show it by
its label, with no other edit."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from analysis import tables
from tests.align.test_aligned_model import ENC_DIM, _batch, _model
from tests.analysis.factory import make_record, write_records
from uqa_ray.align.adapters import load_adapter, save_adapter
from uqa_ray.align.config import AlignConfig
from uqa_ray.align.registry import ADAPTERS, Entry, register
from uqa_ray.config import build


@dataclasses.dataclass(frozen=True)
class LastStateConfig:
    enc_dim: int = 8
    llm_dim: int = 8

    @property
    def n_soft(self) -> int:
        return 1


class LastState(nn.Module):
    """The last valid state, linearly mapped: one soft token."""

    def __init__(self, cfg: LastStateConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.proj = nn.Linear(cfg.enc_dim, cfg.llm_dim)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        last = mask.long().cumsum(1).argmax(1)  # the last valid position, whatever the padding side
        return self.proj(states[torch.arange(states.shape[0]), last]).unsqueeze(1)


@pytest.fixture
def plugin():
    register("last_state", Entry(LastStateConfig, LastState, "Last state (plug-in)"))
    yield "last_state"
    del ADAPTERS["last_state"]


def test_a_registered_adapter_trains_saves_and_shows_in_the_tables(plugin, llm_tok, tmp_path):
    cfg = build(AlignConfig, {"adapter": plugin})
    assert isinstance(cfg.adapter_config(ENC_DIM, 32), LastStateConfig)
    model, tok = _model(llm_tok, "adapter", plugin)
    assert model.n_soft == 1
    model(_batch(tok)).backward()
    assert model.adapter.proj.weight.grad.abs().sum() > 0
    loaded = load_adapter(save_adapter(model.adapter, tmp_path / "adapter"))
    assert isinstance(loaded, LastState)
    torch.testing.assert_close(loaded.proj.weight, model.adapter.proj.weight)

    results = write_records(tmp_path / "results", [
        make_record(f"{a}-s0", adapter=a, acc=acc) for a, acc in ((plugin, 48.0), ("mean_pool", 45.0))])
    assert tables.main(["--results", str(results), "--table", "4", "--out", str(tmp_path / "report")]) == 0
    md = (tmp_path / "report" / "table4.md").read_text()
    assert md.index("Mean Pooling") < md.index("Last state (plug-in)")  # the registry's order


def test_an_unregistered_adapter_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown adapter 'nope'.*mean_pool"):
        build(AlignConfig, {"adapter": "nope"})
    with pytest.raises(ValueError, match="already registered"):
        register("mlp", ADAPTERS["mlp"])
