"""bench/suite.py's parts that can fail without any benchmark being slow: reading figures from the
committed result JSONs, the lab's stage times, the Markdown section, and a suite run whose benchmarks
fail, hang or succeed (small stand-in scripts run as real subprocesses). Seconds, no heavy runs."""
from __future__ import annotations

import importlib.util
import json
import math
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


suite = _load("bench_suite", ROOT / "bench" / "suite.py")
F = sys.modules["suite_figures"]  # the very module suite.py imported


def _numbers(figs):
    return {f["key"]: f["value"] for f in figs}


@pytest.mark.parametrize("name", sorted(F.RESULT_FILES))
def test_collectors_read_the_committed_results(name):
    path = RESULTS / F.RESULT_FILES[name]
    assert path.is_file(), f"{path}: every standalone benchmark result is committed"
    figs = F.COLLECTORS[name](json.loads(path.read_text()))
    assert figs and len({f["key"] for f in figs}) == len(figs)  # keys are unique: runs compare by them
    for f in figs:
        assert set(f) == {"key", "label", "value", "unit", "note"} and f["key"].startswith(name + ".")
        assert isinstance(f["value"], (int, float)) and math.isfinite(f["value"]) and f["value"] >= 0, f


def test_the_committed_pretraining_result_is_the_suite_runs():
    """One source for the pretraining figures (issue 15): the standalone JSON is the suite run's."""
    run = json.loads((RESULTS / "suite.json").read_text())["benchmarks"]["pretrain"]
    assert json.loads((ROOT / run["source"]).read_text()) == json.loads((RESULTS / "pretrain.json").read_text())


def test_headline_figures_have_the_values_of_their_sources():
    pre = json.loads((RESULTS / "prepare.json").read_text())
    pt = json.loads((RESULTS / "pretrain.json").read_text())
    ev = json.loads((RESULTS / "evaluate.json").read_text())
    got = {**_numbers(F.prepare_figures(pre)), **_numbers(F.pretrain_figures(pt)), **_numbers(F.evaluate_figures(ev))}
    assert got["prepare.speedup_ray_vs_pandas"] == pre["speedup_ray_vs_pandas"]
    assert got["pretrain.ce_memory_ratio_overhead"] == pt["memory"]["overhead_ratio_naive_over_chunked"]
    thr = pt["throughput"]["official_vocab_chunked_ce"]
    assert got["pretrain.positions_per_s_official_vocab"] == thr["positions_per_s"]
    for threads, block in ev["by_threads"].items():
        assert got[f"evaluate.batched_qps.t{threads}"] == block["both"]["batched_qps"]
        assert got[f"evaluate.batch1_qps.t{threads}"] == block["both"]["batch1_qps"]


def test_a_renamed_key_is_reported_not_hidden(tmp_path):
    pre = json.loads((RESULTS / "prepare.json").read_text())
    del pre["ray"]["clicks_per_s"]
    (tmp_path / "prepare.json").write_text(json.dumps(pre))
    doc = F.from_results(tmp_path)
    assert doc["benchmarks"]["prepare"]["status"] == "failed"
    assert "clicks_per_s" in doc["benchmarks"]["prepare"]["error"]
    assert doc["benchmarks"]["pretrain"]["status"] == "missing"
    table = F.markdown(doc)
    assert "| prepare | **failed** |" in table and "| main_command | **missing** |" in table


def test_main_command_figures_say_whether_the_law_shows():
    seed = {"seed": 1, "returncode": 0, "wall_s": 512.0, "law_shown": False,
            "checks": {"sizes_ge_4": True, "power_law_r2_ge_0.8": False},
            "sizes": [{"params_dense": 12840, "acc": 46.8, "ci95": [45.4, 48.3], "pretrain_hr10": 0.166}],
            "controls": {"no_embedding": {"acc": 43.2, "lo": 41.9, "hi": 44.6, "n": 5039.0}},
            "power_law": {"r2": 0.5}}
    failed = {"seed": 2, "returncode": 1, "wall_s": 30.0}
    figs = F.main_command_figures({"config": "local", "cpus": 2, "seeds": [seed, failed]})
    got = {f["key"]: f for f in figs}
    assert got["main_command.seed1.wall_s"]["value"] == 512.0 and got["main_command.seed2.wall_s"]["value"] == 30.0
    assert got["main_command.seed1.law_shown"]["value"] is False
    assert "power_law_r2_ge_0.8" in got["main_command.seed1.law_shown"]["note"]
    assert got["main_command.seed1.acc.12840"]["value"] == 46.8
    assert got["main_command.seed1.no_embedding"]["value"] == 43.2 and "main_command.seed2.r2" not in got


def test_markdown_section_replaced_between_the_markers(tmp_path):
    doc = F.from_results(RESULTS)
    table = F.markdown(doc)
    assert "| prepare | Ray vs pandas (pandas wall / Ray wall) |" in table
    md = tmp_path / "B.md"
    md.write_text(f"# title\n\nprose\n\n{F.SECTION_BEGIN}\nold numbers\n{F.SECTION_END}\n\nmore prose\n")
    suite.update_md(md, table)
    text = md.read_text()
    assert "old numbers" not in text and table in text and text.endswith(f"{F.SECTION_END}\n\nmore prose\n")
    suite.update_md(md, table)  # idempotent: regenerating twice gives the same file
    assert md.read_text() == text
    md.write_text("no markers\n")
    with pytest.raises(ValueError, match="markers not found"):
        suite.update_md(md, table)


def _script(path: Path, body: str) -> str:
    path.write_text(textwrap.dedent(body))
    return str(path)


def test_failing_benchmark_keeps_the_others_figures(tmp_path, monkeypatch, capsys):
    src = RESULTS / "evaluate.json"
    ok = _script(tmp_path / "ok.py", f"""
        import shutil, sys
        print("measuring", flush=True)
        shutil.copy({str(src)!r}, sys.argv[sys.argv.index("--out") + 1])
        """)
    bad = _script(tmp_path / "bad.py", """
        import sys
        print("about to fail", flush=True)
        sys.exit(3)
        """)
    monkeypatch.setitem(suite.BENCHMARKS, "fake_ok", {"script": ok, "full": [], "quick": ["-q"], "out_flag": "--out",
                                                      "minutes": (0, 0)})
    monkeypatch.setitem(suite.BENCHMARKS, "fake_bad", {"script": bad, "full": [], "quick": [], "out_flag": "--out",
                                                       "minutes": (0, 0)})
    monkeypatch.setitem(F.COLLECTORS, "fake_ok", F.evaluate_figures)
    out = tmp_path / "results" / "suite.json"
    rc = suite.run_suite(["fake_bad", "fake_ok"], False, out, 60, tmp_path / "results", tmp_path / "work")
    assert rc == 1
    doc = json.loads(out.read_text())
    bad_e, ok_e = doc["benchmarks"]["fake_bad"], doc["benchmarks"]["fake_ok"]
    assert bad_e["status"] == "failed" and "exit code 3" in bad_e["error"] and "about to fail" in bad_e["error"]
    assert ok_e["status"] == "ok" and ok_e["returncode"] == 0 and ok_e["figures"]
    assert ok_e["command"].startswith("python ") and ok_e["argv"][0] == sys.executable
    assert doc["failed"] == ["fake_bad"] and doc["machine"]["cpus"] and "loadavg_end" in doc["machine"]
    run_dir = tmp_path / "results" / "runs" / doc["run"]
    assert json.loads((run_dir / "suite.json").read_text())["benchmarks"].keys() == {"fake_bad", "fake_ok"}
    assert (tmp_path / "work" / "suite" / doc["run"] / "fake_bad.log").read_text() == "about to fail\n"

    # --only one of them: the latest file keeps the other, marked as carried over with its own run id
    monkeypatch.setitem(suite.BENCHMARKS, "fake_bad", {**suite.BENCHMARKS["fake_ok"]})
    monkeypatch.setitem(F.COLLECTORS, "fake_bad", F.evaluate_figures)
    assert suite.run_suite(["fake_bad"], False, out, 60, tmp_path / "results", tmp_path / "work") == 0
    latest = json.loads(out.read_text())
    assert latest["benchmarks"]["fake_bad"]["status"] == "ok"
    carried = latest["benchmarks"]["fake_ok"]
    assert carried["carried_over"] and carried["run"] == doc["run"] and carried["machine"] == doc["machine"]
    assert f"carried over from run {doc['run']}" in F.markdown(latest)
    assert "replacing" in capsys.readouterr().out


def test_hung_benchmark_is_killed_at_the_timeout(tmp_path, monkeypatch):
    hang = _script(tmp_path / "hang.py", """
        import time
        print("started", flush=True)
        time.sleep(600)
        """)
    monkeypatch.setitem(suite.BENCHMARKS, "fake_hang", {"script": hang, "full": [], "quick": [], "out_flag": "--out",
                                                        "minutes": (0, 0)})
    e = suite.run_one("fake_hang", False, tmp_path, tmp_path / "logs", 2.0, "r")
    assert e["status"] == "failed" and "timeout" in e["error"] and e["wall_s"] < 60


def test_dry_run_lists_every_benchmark(capsys):
    assert suite.main(["--dry-run", "--quick"]) == 0
    out = capsys.readouterr().out
    for name in suite.BENCHMARKS:
        assert name in out
    assert "--config ci" in out and "--preset small" in out


def test_gpu_check_ce_kernels_on_cpu():
    """The GPU check's CE-kernel comparison (bench/pretrain_mfu.py) runs on CPU with the lab's own kernels
    (the libraries need CUDA) and reports each one's error against the fp32 softmax."""
    mfu = _load("bench_pretrain_mfu", ROOT / "bench" / "pretrain_mfu.py")
    res = mfu.ce_kernels(n=64, items=3_000, check_items=1_000, dim=16, iters=1)
    assert set(res["kernels"]) == {"fused-2^26", "fused-2^28", "fused-2^30", "chunked"}
    for name, row in res["kernels"].items():
        assert "error" not in row, (name, row)
        assert max(row["loss_rel_err"], row["grad_h_max_rel_err"], row["grad_w_max_rel_err"]) < 1e-5, (name, row)
        assert row["fwd_bwd_s"] > 0
