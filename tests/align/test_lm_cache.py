"""The taught tiny LM: one user cache shared by every workdir, the package's shipped copy, and the refusal
of a taught LM for data of another catalog (align/lm_cache.py)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.tune.pipeline import instruct_config, pipeline
from uqa_ray.align import instruct
from uqa_ray.align.instruct import InstructConfig, _phase1_key, instruct_dir, instruct_tiny_llm
from uqa_ray.align.llm import TINY_INFO_FILE, TinyLMConfig
from uqa_ray.align.lm_cache import (CACHE_ENV, SHIPPED_DIR, TEACHING_CODE, cache_dir, check_taught_for,
                                    teaching_fingerprint)
from uqa_ray.config import source_hash, to_dict
from uqa_ray.data.schema import MAPS_DIR
from uqa_ray.io import InputError
from uqa_ray.tune.grid import GridSpec, resolve_llm


@pytest.fixture(scope="module")
def pipe(tiny_data, tmp_path_factory):
    return pipeline(tiny_data, tmp_path_factory.getbasetemp())


def _other_catalog(data: Path, out: Path) -> Path:
    """A copy of `data` whose catalog names one value differently (another catalog, same users)."""
    shutil.copytree(data, out, symlinks=False)
    path = sorted((out / MAPS_DIR).glob("*.parquet"))[0]
    table = pq.read_table(path)
    col = next(n for n in table.column_names if table.schema.field(n).type == "string")
    values = table[col].to_pylist()
    values[0] = f"{values[0]} (renamed)"
    pq.write_table(table.set_column(table.column_names.index(col), col, [values]), path)
    return out


def _info(folder: Path) -> dict:
    return json.loads((folder / TINY_INFO_FILE).read_text())


def test_taught_lm_is_refused_for_another_catalog(pipe, tmp_path):
    check_taught_for(_info(pipe["llm"]), pipe["llm"], pipe["data"])  # its own data: accepted
    other = _other_catalog(pipe["data"], tmp_path / "other")
    with pytest.raises(InputError, match=r"another catalog .*teach_tiny_lm.py --ship"):
        check_taught_for(_info(pipe["llm"]), pipe["llm"], other)
    with pytest.raises(InputError, match="another catalog"):  # how a grid naming the folder meets it
        resolve_llm(GridSpec(llm=str(pipe["llm"]), methods=("no_embedding",)), other, tmp_path / "tune")
    spec = GridSpec(llm=str(pipe["llm"]), methods=("no_embedding",))
    assert resolve_llm(spec, pipe["data"], tmp_path / "tune") == str(pipe["llm"])


def test_the_key_is_content_not_place(pipe, tmp_path):
    """Another folder with the same files keys the same; another catalog keys differently."""
    copy = tmp_path / "copy"
    shutil.copytree(pipe["data"], copy)
    cfg = _phase1_key(instruct_config())
    assert teaching_fingerprint(copy, cfg) == teaching_fingerprint(pipe["data"], cfg)
    assert instruct_dir(copy, tmp_path, instruct_config()).name == pipe["llm"].name
    other = _other_catalog(pipe["data"], tmp_path / "other")
    assert teaching_fingerprint(other, cfg)["catalog"] != teaching_fingerprint(pipe["data"], cfg)["catalog"]
    assert instruct_dir(other, tmp_path, instruct_config()).name != pipe["llm"].name


def test_a_second_workdir_reuses_the_lm_taught_in_the_user_cache(pipe, tmp_path, monkeypatch, capsys):
    """Taught once into the user cache; each workdir's trials read a copy of it (on a cluster the driver's
    cache is not on shared storage)."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    spec = GridSpec(llm="tiny", instruct=instruct_config(), methods=("no_embedding",))
    copies = []
    for workdir in ("a", "b"):
        folder = Path(resolve_llm(spec, pipe["data"], tmp_path / workdir / "tune"))
        said = capsys.readouterr().out
        taught = cache_dir() / "llm" / folder.name
        if workdir == "a":
            assert "teaching" in said
            stamp = (taught / "model.safetensors").stat().st_mtime_ns
        else:
            assert "teaching" not in said and (taught / "model.safetensors").stat().st_mtime_ns == stamp
        assert folder == (tmp_path / workdir / "tune" / "llm" / taught.name).resolve()
        copies.append((folder / "model.safetensors").read_bytes())
    assert copies[0] == copies[1] == (taught / "model.safetensors").read_bytes()
    assert sorted(p.name for p in (cache_dir() / "llm").iterdir() if p.name.startswith("instruct-")) == [taught.name]


def test_the_shipped_copy_is_used_for_its_data_only(pipe, tmp_path, monkeypatch):
    shipped = tmp_path / "taught"
    shutil.copytree(pipe["llm"], shipped / pipe["llm"].name)
    monkeypatch.setattr(instruct, "SHIPPED_DIR", shipped)
    said: list[str] = []
    folder = instruct_tiny_llm(pipe["data"], tmp_path / "cache", instruct_config(), log=said.append)
    assert folder == tmp_path / "cache" / pipe["llm"].name and "shipped with the package" in said[0]
    assert (folder / "model.safetensors").read_bytes() == (pipe["llm"] / "model.safetensors").read_bytes()
    other = _other_catalog(pipe["data"], tmp_path / "other")
    said.clear()
    taught = instruct_tiny_llm(other, tmp_path / "cache", instruct_config(), log=said.append)
    assert taught != folder and "is for another catalog" in said[0]
    assert _info(taught)["taught"]["fingerprint"]["catalog"] != _info(folder)["taught"]["fingerprint"]["catalog"]


def test_the_package_ships_a_taught_lm_current_with_the_teaching_code_and_config():
    """The README's main command copies this folder instead of teaching for ~40 minutes; after a change to
    the teaching code or config, rebuild it: python experiments/teach_tiny_lm.py --ship."""
    folders = sorted(SHIPPED_DIR.glob("instruct-*"))
    assert len(folders) == 1, f"{SHIPPED_DIR}: expected one shipped taught LM, found {folders}"
    info = _info(folders[0])
    taught, default = info["taught"], InstructConfig()
    stale = "stale: rebuild it with `python experiments/teach_tiny_lm.py --ship`"
    assert taught["fingerprint"]["code"] == source_hash(*TEACHING_CODE), stale
    assert taught["fingerprint"]["config"] == _phase1_key(default), stale
    assert taught["stretch"]["config"] == to_dict(default.stretch), stale
    assert info["tiny_lm_config"] == to_dict(TinyLMConfig()), stale
    reading = {k: v for k, v in taught["stretch"]["holdout_likelihood_accuracy"].items() if k != "no_history"}
    assert min(reading.values()) > taught["chance"] + 15  # it reads a history (chance 25%)


def test_rekey_renames_a_taught_folder_to_the_current_code_key_and_keeps_its_weights(tmp_path):
    """After a move of teaching code that teaches the same thing, `teach_tiny_lm.py --rekey WHY` renames the
    shipped copy to the key the code now gives it (instruct.rekey_taught); a folder not named by its own
    recorded key is refused."""
    shipped = sorted(SHIPPED_DIR.glob("instruct-*"))[0]
    cfg = InstructConfig()
    info = _info(shipped)
    info["taught"]["fingerprint"]["code"] = "an-older-code"  # as if taught by code since moved
    old = instruct._named(tmp_path, info["taught"]["fingerprint"], cfg)
    shutil.copytree(shipped, old)
    (old / TINY_INFO_FILE).write_text(json.dumps(info))
    new = instruct.rekey_taught(old, cfg, "a test")
    assert new.name == shipped.name and not old.exists()
    got = _info(new)["taught"]
    assert got["fingerprint"]["code"] == source_hash(*TEACHING_CODE)
    assert got["rekeyed"][-1] == {"from": old.name, "why": "a test"}
    assert got["stretch"]["from"] == instruct._named(tmp_path, got["fingerprint"], cfg, phase=1).name
    assert (new / "model.safetensors").read_bytes() == (shipped / "model.safetensors").read_bytes()
    assert instruct.rekey_taught(new, cfg, "again") == new  # current already: nothing to do
    misnamed = tmp_path / "instruct-000000000000"
    new.rename(misnamed)
    with pytest.raises(InputError, match="not named by its recorded fingerprint"):
        instruct.rekey_taught(misnamed, cfg, "x")
