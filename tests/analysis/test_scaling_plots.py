from __future__ import annotations

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
