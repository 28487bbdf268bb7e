"""Every experiment script has --help and config presets that validate against every stage's schema."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from uqa_ray.config import ConfigError, build, load_yaml
from uqa_ray.lab.config import LabConfig
from uqa_ray.lab.pipeline import check

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
    with pytest.raises(ConfigError, match=r"variants\[0\].*optim\.lrr"):
        check(build(LabConfig, {"experiment": "x", "variants": [{}], "pretrain": {"optim": {"lrr": 1}}}))
    with pytest.raises(ConfigError, match="unknown key.*colour"):
        build(LabConfig, {"experiment": "x", "colour": 1})


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
