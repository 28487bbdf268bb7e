"""The shared plumbing: atomic outputs, never-overwritten records, config overrides and their errors."""
from __future__ import annotations

import dataclasses
import json

import pytest

from uqa_ray.config import ConfigError, build, content_hash, parse_dotted, source_hash, to_dict
from uqa_ray.io import atomic_path, write_json, write_new_json


def test_write_new_json_never_overwrites_and_leaves_no_temporaries(tmp_path):
    p = write_new_json(tmp_path / "r" / "t1.json", {"a": 1})
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        write_new_json(p, {"a": 2})
    assert json.loads(p.read_text()) == {"a": 1}
    assert sorted(x.name for x in p.parent.iterdir()) == ["t1.json"]


def test_atomic_path_keeps_the_old_output_on_failure(tmp_path):
    write_json(tmp_path / "out.json", {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "out.json") as tmp:
            tmp.write_text("partial")
            raise RuntimeError("boom")
    assert json.loads((tmp_path / "out.json").read_text()) == {"v": 1}
    assert [x.name for x in tmp_path.iterdir()] == ["out.json"]


def test_atomic_path_replaces_a_folder(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "old").write_text("x")
    with atomic_path(tmp_path / "d") as tmp:
        tmp.mkdir()
        (tmp / "new").write_text("y")
    assert [x.name for x in (tmp_path / "d").iterdir()] == ["new"]


@dataclasses.dataclass(frozen=True)
class Inner:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.99)


@dataclasses.dataclass(frozen=True)
class Outer:
    name: str = "x"
    steps: int = 1
    inner: Inner = Inner()


def test_build_overrides_types_and_errors():
    cfg = build(Outer, {"inner": {"lr": "1e-4", "betas": [0.8, 0.9]}}, parse_dotted(["steps=3"]))
    assert cfg.inner.lr == 1e-4 and cfg.inner.betas == (0.8, 0.9) and cfg.steps == 3
    with pytest.raises(ConfigError, match=r"inner\.lrr"):
        build(Outer, {"inner": {"lrr": 1}})
    with pytest.raises(ConfigError, match="steps: expected an integer"):
        build(Outer, {"steps": "many"})
    with pytest.raises(ConfigError, match=r"inner\.betas: expected 2 items"):
        build(Outer, {"inner": {"betas": [0.9]}})
    assert build(Outer, to_dict(cfg)) == cfg
    assert content_hash(cfg) == content_hash(build(Outer, to_dict(cfg))) != content_hash(Outer())


def test_source_hash_follows_the_code(tmp_path, monkeypatch):
    pkg = tmp_path / "fakepkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "m.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    first = source_hash("fakepkg")
    assert source_hash("fakepkg") == first  # stable
    (pkg / "sub" / "m.py").write_text("X = 2\n")
    assert source_hash("fakepkg") != first  # any source change changes the key
    (pkg / "other.py").write_text("Y = 1\n")
    one = source_hash("fakepkg.other")  # a plain module: that file alone
    (pkg / "sub" / "m.py").write_text("X = 3\n")
    assert source_hash("fakepkg.other") == one
    (pkg / "other.py").write_text("Y = 2\n")
    assert source_hash("fakepkg.other") != one
    with pytest.raises(ValueError, match="no package"):
        source_hash("no_such_package_here")


def test_source_hash_ignores_docstrings_and_comments_but_not_strings(tmp_path, monkeypatch):
    """A docstring or comment edit keeps every code key (a shipped taught LM, cached pretraining runs); a code
    edit, or a blank line inside a multi-line string (a prompt template), changes it."""
    import importlib
    import sys

    mod = tmp_path / "docmod.py"
    monkeypatch.syspath_prepend(str(tmp_path))

    def key(text: str) -> tuple[str, str]:
        mod.write_text(text)
        sys.modules.pop("docmod", None)
        importlib.invalidate_caches()
        return source_hash("docmod"), source_hash("docmod:K.f")

    base = key('"""Doc."""\nT = """a\n\nb"""\n\n\nclass K:\n    def f(self):\n        """F."""\n        return 1\n')
    assert key('"""Another doc,\n\nlonger."""\n# a note\nT = """a\n\nb"""  # the template\n\nclass K:\n'
               '    def f(self):  # why\n        """Other F."""\n\n        return 1\n') == base
    assert key('T = """a\n\nb"""\nclass K:\n    def f(self):\n        return 2\n')[1] != base[1]
    assert key('T = """a\nb"""\nclass K:\n    def f(self):\n        return 1\n')[0] != base[0]
    assert key('T = "# not a comment"\nclass K:\n    def f(self):\n        return 1\n')[0] != \
        key('T = ""\nclass K:\n    def f(self):\n        return 1\n')[0]


def test_source_hash_of_single_definitions(tmp_path, monkeypatch):
    """A definition's hash follows that definition's code only, not the rest of its module."""
    import importlib
    import sys

    mod = tmp_path / "defmod.py"
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(f_body: str, g_body: str, const: int) -> None:
        mod.write_text(f"C = {const}\n\ndef f():\n    return {f_body}\n\n\n"
                       f"class K:\n    def g(self):\n        return {g_body}\n")
        sys.modules.pop("defmod", None)
        importlib.invalidate_caches()

    write("1", "2", 3)
    f, g, c = source_hash("defmod:f"), source_hash("defmod:K.g"), source_hash("defmod:C")
    write("1", "20", 3)  # only K.g changed
    assert source_hash("defmod:f") == f and source_hash("defmod:C") == c and source_hash("defmod:K.g") != g
    write("10", "20", 4)
    assert source_hash("defmod:f") != f and source_hash("defmod:C") != c
    with pytest.raises(ValueError, match="has no 'nope'"):
        source_hash("defmod:nope")


def test_pretraining_run_name_includes_the_code(monkeypatch):
    import uqa_ray.pretrain.trainer as trainer
    from uqa_ray.pretrain.config import PretrainConfig

    name = trainer.run_name(PretrainConfig())
    assert name.startswith("trm_pp-official-L512-full-ce-") and name == trainer.run_name(PretrainConfig())
    monkeypatch.setattr(trainer, "source_hash", lambda *pkgs: "other code")
    assert trainer.run_name(PretrainConfig()) != name


def test_one_scaling_spec_with_each_stage_defaults_and_the_run_key_ignores_where_it_runs():
    """`scaling` is one spec (uqa_ray/scaling.py) for pretraining and alignment; an override of it applies
    onto the stage's own default (pretraining: 2 workers; alignment: 0, mid-run checkpoints every 100
    steps), and a pretraining run's key ignores where it runs except what shapes its checkpoint."""
    from uqa_ray.align.config import align_config
    from uqa_ray.pretrain.config import PretrainConfig
    from uqa_ray.pretrain.trainer import run_name
    from uqa_ray.scaling import Scaling

    pre = build(PretrainConfig, {"scaling": {"use_gpu": True}})
    assert isinstance(pre.scaling, Scaling) and pre.scaling.num_workers == 2 and pre.scaling.use_gpu
    assert pre.scaling.storage == PretrainConfig().scaling.storage
    ali = align_config("official", {"scaling": {"num_workers": 2}})
    assert type(ali.scaling) is Scaling and ali.scaling.checkpoint_every == 100 and ali.scaling.num_workers == 2
    base = run_name(PretrainConfig())
    elsewhere = {"num_workers": 8, "use_gpu": True, "cpus_per_worker": 4, "max_failures": 0, "checkpoint_every": 5,
                 "keep_checkpoints": 3, "storage": "/mnt/shared/runs", "resources_per_worker": {"TPU": 1}}
    assert run_name(build(PretrainConfig, {"scaling": elsewhere})) == base
    assert run_name(build(PretrainConfig, {"scaling": {"zero_stage": 3}})) != base
    assert run_name(build(PretrainConfig, {"scaling": {"deepspeed": "ds.json"}})) != base
    for bad, match in (({"num_workers": 0}, "num_workers >= 1"), ({"storage": "s3://b/runs"}, "a folder"),
                       ({"zero_stage": 4}, "zero_stage must be one of")):
        with pytest.raises(ConfigError, match=match):
            build(PretrainConfig, {"scaling": bad})
