"""Preset parameter counts against the paper's table 5, meta-device counting, export round trip, CLI."""
from __future__ import annotations

import json

import pytest
import torch

import uqa_ray.encoders.export as export
from uqa_ray.cli import main
from uqa_ray.data.schema import BPE_COLUMNS, ID_COLUMNS
from uqa_ray.encoders import build_encoder, count_params, load_encoder, preset_config, save_encoder
from uqa_ray.encoders.presets import PAPER_DENSE, PRESETS, TRM_SIZES
from uqa_ray.io import InputError

VOCAB = {c: 40 for c in ID_COLUMNS} | {"bpe": 30}


@pytest.mark.parametrize("size", list(TRM_SIZES))
def test_trm_dense_counts_within_10_percent_of_paper(size):
    cfg = preset_config(size)
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads) == TRM_SIZES[size]
    n = count_params(cfg)
    assert abs(n["dense"] / PAPER_DENSE[size] - 1) < 0.10, (size, n)
    # official vocabularies: the embedding tables add about 182M (UQABENCH.md section 3)
    assert 180e6 < n["embeddings"] < 184e6
    assert n["total"] == n["dense"] + n["embeddings"] + n["input"]


def test_large_preset_builds_on_meta_without_allocating():
    with torch.device("meta"):
        model = build_encoder(preset_config("1.2B"))
    assert all(p.is_meta for p in model.parameters())
    assert count_params(model)["dense"] > 1.1e9


def test_every_preset_is_valid_and_official_encoders_are_20m_class():
    for name in PRESETS:
        n = count_params(preset_config(name, max_len=128))
        if name.endswith("-official"):
            assert 5e6 < n["dense"] < 25e6, (name, n)


def small(name):
    return preset_config("tiny", VOCAB, name=name, d_model=32, n_heads=2, gru_hidden=16, mamba_d_state=8,
                         mamba_head_dim=16, hstu_linear_dim=8, hstu_attn_dim=8, max_len=12)


@pytest.mark.parametrize("name", ["trm_pp", "hstu", "mamba4rec", "sasrec", "gru4rec"])
def test_save_load_round_trip_is_exact(tmp_path, name):
    torch.manual_seed(0)
    cfg = small(name)
    model = build_encoder(cfg).eval()
    save_encoder(model, cfg, tmp_path / "enc")
    loaded, cfg2 = load_encoder(tmp_path / "enc")
    assert cfg2 == cfg
    sd, sd2 = model.state_dict(), loaded.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)
    g = torch.Generator().manual_seed(1)
    batch = {c: torch.randint(1, 40, (2, 6), generator=g) for c in ID_COLUMNS}
    batch |= {c: torch.randint(0, 30, (2, 6, 3), generator=g) for c in BPE_COLUMNS}
    batch["mask"] = torch.ones(2, 6, dtype=torch.bool)
    with torch.no_grad():
        assert torch.equal(model(batch), loaded(batch))


def test_failed_save_keeps_previous_export_and_bad_dirs_are_clear(tmp_path, monkeypatch):
    cfg = small("trm_pp")
    torch.manual_seed(0)
    first = build_encoder(cfg)
    save_encoder(first, cfg, tmp_path / "enc")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(export, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        save_encoder(build_encoder(cfg), cfg, tmp_path / "enc")
    monkeypatch.undo()
    loaded, _ = load_encoder(tmp_path / "enc")
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), loaded.state_dict().values()))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["enc"]  # no temporary left behind
    with pytest.raises(InputError, match="config.json"):
        load_encoder(tmp_path / "missing")
    (tmp_path / "enc" / "model.safetensors").write_bytes(b"junk")
    with pytest.raises(InputError, match="model.safetensors"):
        load_encoder(tmp_path / "enc")


def test_params_command(tmp_path, capsys):
    assert main(["params"]) == 0
    out = capsys.readouterr().out
    assert "1.2B" in out and "hstu-official" in out and "1,233,225,728" in out
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps({"vocab": VOCAB}))
    assert main(["params", "--vocab", str(meta), "--max-len", "64"]) == 0
    assert main(["params", "--vocab", str(tmp_path / "nope.json")]) == 2
