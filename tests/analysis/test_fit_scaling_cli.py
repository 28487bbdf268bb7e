from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from analysis import fit_scaling, scaling
from analysis.fitting import LOGLIN, POWER
from tests.analysis.factory import PLANTED, make_record, write_records


def test_fit_from_records(scaling_dir, tmp_path, capsys):
    out = tmp_path / "reports"
    rc = fit_scaling.main(["--results", str(scaling_dir), "--x", "params", "--out", str(out),
                           "--n-boot", "100"])
    assert rc == 0
    doc = json.loads((out / "fit_params.json").read_text())
    ours = doc["ours"]
    assert ours["n_used"] == 12 and ours["method"] == "trm_pp"
    assert ours["excluded"] == [{"trial_id": "trm-qformer-nan", "status": "diverged",
                                 "reason": "NaN loss at step 12"}]
    assert ours["no_x"] == ["text20"]
    ip = ours["series"]["interest_perception"]  # planted: c = 80 + 10, a = 30, b = 0.35
    assert ip[POWER]["params"]["b"] == pytest.approx(PLANTED["b"], abs=0.05)
    assert ip[POWER]["params"]["c"] == pytest.approx(90.0, abs=2.0)
    assert ip[POWER]["bootstrap"] == "sizes, then seeds within each size"
    lo, hi = ip[POWER]["ci95"]["b"]
    assert lo < PLANTED["b"] < hi
    assert ip["points"]["count"] == [2] * 6 and ip["extrapolation"]["held_out_x"] == 200.0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("fit_scaling params (official): ours: power b=")
    assert "12 records fitted, 1 excluded" in line and str(out / "fit_params.json") in line


def test_paper_mode_alone(tmp_path, capsys):
    assert fit_scaling.main(["--paper", "--x", "params", "--out", str(tmp_path), "--n-boot", "50"]) == 0
    doc = json.loads((tmp_path / "fit_params.json").read_text())
    assert "ours" not in doc
    s = doc["paper"]["series"]["overall"]
    assert s[POWER]["r2"] >= 0.9 and s[LOGLIN]["r2"] >= 0.9
    assert "paper: power b=" in capsys.readouterr().out


def test_seq_len_and_same_seed_same_numbers(tmp_path):
    recs = [make_record(f"L{L}", acc=60 - 200 / L ** 0.8, max_len=L, n=5000) for L in (16, 32, 64, 128, 256)]
    res = write_records(tmp_path / "r", recs)
    docs = [scaling.run_fit(res, "seq_len", n_boot=60, seed=5) for _ in range(2)]
    assert docs[0] == docs[1]
    s = docs[0]["ours"]["series"]["overall"]
    assert docs[0]["log_base"] == 2 and s["points"]["x"] == [16, 32, 64, 128, 256]
    assert s[POWER]["r2"] > 0.99


def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    assert fit_scaling.main(["--results", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err and not out.exists()
    res = write_records(tmp_path / "two", [
        make_record("a", method="trm_pp", params=1_000_000), make_record("b", method="sasrec", params=2_000_000)])
    assert fit_scaling.main(["--results", str(res), "--out", str(out)]) == 2
    assert "--method" in capsys.readouterr().err and not out.exists()
    assert fit_scaling.main(["--results", str(res), "--out", str(out), "--scorer", "likelihood",
                            "--method", "trm_pp"]) == 2
    assert "scorers present: ['official']" in capsys.readouterr().err


def test_help_runs(capsys):
    with pytest.raises(SystemExit) as e:
        fit_scaling.main(["--help"])
    assert e.value.code == 0 and "--paper" in capsys.readouterr().out


@pytest.mark.parametrize("script", ["fit_scaling", "plots", "report", "tables"])
def test_analysis_scripts_run_as_files_and_as_modules(script, scaling_dir, tmp_path):
    """`python analysis/x.py` (from anywhere) and `python -m analysis.x` (from the repo root) both work."""
    root = Path(__file__).resolve().parents[2]
    as_file = subprocess.run([sys.executable, str(root / "analysis" / f"{script}.py"), "--help"], cwd=tmp_path,
                             capture_output=True, text=True)
    as_module = subprocess.run([sys.executable, "-m", f"analysis.{script}", "--help"], cwd=root,
                               capture_output=True, text=True)
    assert as_file.returncode == 0 and as_file.stdout.startswith("usage:"), as_file.stderr
    assert as_module.returncode == 0 and as_module.stdout.startswith("usage:"), as_module.stderr
    if script == "fit_scaling":  # and it does its work as a file
        run = subprocess.run([sys.executable, str(root / "analysis" / "fit_scaling.py"), "--results",
                              str(scaling_dir), "--out", str(tmp_path / "o"), "--n-boot", "50"], cwd=tmp_path,
                             capture_output=True, text=True)
        assert run.returncode == 0 and (tmp_path / "o" / "fit_params.json").is_file(), run.stderr
