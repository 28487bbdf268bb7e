"""Every experiment script has --help and config presets that validate against every stage's schema."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from uqa_ray.config import ConfigError, build, load_yaml
from uqa_ray.lab.config import LabConfig
from uqa_ray.lab.pipeline import check
from uqa_ray.pretrain.config import PretrainConfig

ROOT = Path(__file__).resolve().parents[2]
# experiments/ holds one script per paper experiment, plus tools that serve them (no presets of their own)
TOOLS = {"teach_tiny_lm"}
SCRIPTS = sorted(p for p in (ROOT / "experiments").glob("*.py") if p.stem not in TOOLS)
CONFIGS = sorted((ROOT / "experiments" / "configs").glob("*/*.yaml"))


def test_every_script_has_local_and_paper_presets():
    assert {s.stem for s in SCRIPTS} == {
        "scale_model_size", "scale_seq_len", "compare_encoders", "ablate_pretrain", "ablate_align", "efficiency"}
    for s in SCRIPTS:
        names = {c.stem for c in (ROOT / "experiments" / "configs" / s.stem).glob("*.yaml")}
        assert {"local", "paper"} <= names, s.stem


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_config_validates(path):
    check(build(LabConfig, {"experiment": path.parent.name}, load_yaml(path)))


def test_unknown_key_is_an_error_naming_it():
    """Every stage's block is its own typed config: a typo fails when the lab config is built, named by its
    dotted key; a variant's, before any work starts (`check`)."""
    for block, match in (({"pretrain": {"optim": {"lrr": 1}}}, r"pretrain\.optim\.lrr"),
                         ({"prepare": {"min_clicks": 1}}, r"prepare\.min_clicks"),
                         ({"questions": {"n_option": 4}}, r"questions\.n_option"),
                         ({"grid": {"align": {"lrr": 1}}}, r"grid.*lrr"), ({"colour": 1}, "colour")):
        with pytest.raises(ConfigError, match=match):
            build(LabConfig, {"experiment": "x", "variants": [{}]}, block)
    with pytest.raises(ConfigError, match=r"variants\[0\].*optim\.lrr"):
        check(build(LabConfig, {"experiment": "x", "variants": [{"optim": {"lrr": 1}}]}))
    with pytest.raises(ConfigError, match="grid.encoders"):
        build(LabConfig, {"variants": [{}], "grid": {"encoders": [{"dir": "x"}]}})


def test_the_lab_seed_and_workdir_reach_every_stage_unless_it_sets_its_own(tmp_path):
    cfg = build(LabConfig, {"variants": [{}], "seed": 7, "workdir": str(tmp_path)}, {"questions": {"seed": 2}})
    assert (cfg.prepare.seed, cfg.questions.seed, cfg.pretrain.seed) == (7, 2, 7)
    assert cfg.pretrain.scaling.storage == str(tmp_path.resolve() / "runs")
    assert cfg.pretrain.scaling.num_workers == PretrainConfig().scaling.num_workers  # the rest: the stage's own
    own = build(LabConfig, {"variants": [{}], "pretrain": {"scaling": {"storage": "/mnt/runs"}}})
    assert own.pretrain.scaling.storage == "/mnt/runs"
    for key, bad in (("seed", "abc"), ("workdir", 3)):  # a wrong type is named as the lab's own key
        with pytest.raises(ConfigError, match=rf"^{key}: expected"):
            build(LabConfig, {"variants": [{}], key: bad})


def test_help():
    out = subprocess.run([sys.executable, str(ROOT / "experiments" / "scale_model_size.py"), "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "--config" in out and "Table 5" in out


def test_tools_have_help():
    out = subprocess.run([sys.executable, str(ROOT / "experiments" / "teach_tiny_lm.py"), "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "--ship" in out and "user cache" in out


def test_pretrain_concurrency_is_at_least_one():
    with pytest.raises((ConfigError, ValueError), match="pretrain_concurrency"):
        build(LabConfig, {"pretrain_concurrency": 0})
    main = ROOT / "experiments" / "configs" / "scale_model_size" / "local.yaml"
    assert build(LabConfig, load_yaml(main)).pretrain_concurrency == 2  # two runs side by side on 2 CPUs
