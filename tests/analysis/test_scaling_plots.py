from __future__ import annotations

import json

import pytest
import matplotlib.image as mpimg
import numpy as np

from analysis import plots, report
from tests.analysis.factory import make_record, write_records


def _check_png(path, min_bytes=30_000):
    assert path.stat().st_size > min_bytes
    img = mpimg.imread(path)
    assert img.shape[0] > 400 and img.shape[1] > 600
    # not blank: many distinct colours (4 series, bands, text)
    rgb = (img[..., :3] * 255).astype(np.int64)
    assert np.unique(rgb[..., 0] << 16 | rgb[..., 1] << 8 | rgb[..., 2]).size > 50


def test_report_draws_ours_beside_paper(scaling_dir, tmp_path):
    """analysis.report: fit JSON + figure + table 5 in one call (what an experiment ends with)."""
    out = tmp_path / "rep"
    assert report.main(["--results", str(scaling_dir), "--out", str(out), "--paper", "--n-boot", "40"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["fit_params.json", "scaling_params.png", "scaling_params.svg", "table5.csv", "table5.md"]
    _check_png(out / "scaling_params.png")
    text = (out / "scaling_params.svg").read_text()
    for label in ("Accuracy vs encoder size", "Encoder dense parameters", "Interest perception (ours",
                  "Overall (paper", "95% bootstrap band"):
        assert label in text, label
    assert "| 200M | 200M |" in (out / "table5.md").read_text()


def test_seq_len_plot_cli(tmp_path, capsys):
    recs = [make_record(f"L{L}-s{s}", acc=58 - 250 / L ** 0.9 + s * 0.4, max_len=L, seed=s, n=4000)
            for L in (32, 64, 128, 256, 512) for s in (0, 1)]
    res = write_records(tmp_path / "r", recs)
    out = tmp_path / "rep"
    assert plots.main(["--results", str(res), "--x", "seq_len", "--out", str(out), "--n-boot", "40"]) == 0
    _check_png(out / "scaling_seq_len.png")
    svg = (out / "scaling_seq_len.svg").read_text()
    assert "log₂" in svg or "log" in svg
    assert "scaling_seq_len.png" in capsys.readouterr().out


def test_controls_and_the_pretraining_panel(tmp_path):
    """Controls of the run as horizontal lines, and the encoders' pretraining HR@10 in a second panel,
    each fitted: from the records alone."""
    sizes = (12_840, 26_704, 57_504, 131_392)
    recs = [make_record(f"enc{i}", acc=40 + 2 * i, params=p, pretrain={"HR@10": 0.13 + 0.04 * i, "loss": 7.7 - 0.1 * i})
            for i, p in enumerate(sizes)]
    recs += [make_record("floor", acc=38.0, method="no_embedding", params=None, adapter=None, strategy=None),
             make_record("rand", acc=38.5, method="random_embedding", params=sizes[-1]),
             make_record("text", acc=55.0, method="text20", params=None, adapter=None, strategy=None)]
    res = write_records(tmp_path / "r", recs)
    out = tmp_path / "rep"
    assert report.main(["--results", str(res), "--out", str(out), "--n-boot", "40", "--method", "trm_pp"]) == 0
    doc = json.loads((out / "fit_params.json").read_text())["ours"]
    assert doc["pretrain"]["points"]["mean"] == pytest.approx([13.0, 17.0, 21.0, 25.0])
    assert doc["pretrain"]["log_linear"]["r2"] > 0.9
    assert set(doc["controls"]) == {"no_embedding", "random_embedding", "text20"}
    assert doc["controls"]["no_embedding"]["acc"] == pytest.approx(38.0)
    svg = (out / "scaling_params.svg").read_text()
    for label in ("Next-item pretraining metric", "No embedding (floor): 38.0%", "Random embedding", "Text20: 55.0%"):
        assert label in svg, label
    _check_png(out / "scaling_params.png")
