from __future__ import annotations

import numpy as np
import pytest

from analysis import paper
from analysis.fitting import (LOGLIN, POWER, FitError, bootstrap_params, extrapolation_check, fit_log_linear,
                              fit_power_law, fit_series, power_law)
from analysis.records import GROUPS, col

N_BOOT = 100


def test_power_law_recovers_planted_parameters():
    rng = np.random.default_rng(1)
    x = np.geomspace(0.5, 2000, 9)
    y = power_law(x, 82.0, 35.0, 0.3) + rng.normal(0, 0.15, x.size)
    rep = fit_series(x, y, n_boot=N_BOOT, seed=3)
    p = rep[POWER]["params"]
    assert p["c"] == pytest.approx(82.0, abs=1.5)
    assert p["a"] == pytest.approx(35.0, abs=1.5)
    assert p["b"] == pytest.approx(0.3, abs=0.03)
    lo, hi = rep[POWER]["ci95"]["b"]
    assert lo < 0.3 < hi and hi - lo < 0.2
    assert rep[POWER]["r2"] > 0.999 and rep[POWER]["at_bound"] == []


def test_log_linear_is_exact_on_a_line():
    x = np.array([1.0, 10, 100, 1000])
    fit = fit_log_linear(x, 40 + 5 * np.log10(x))
    assert fit["params"] == pytest.approx({"alpha": 40.0, "beta": 5.0})
    x2 = np.array([32.0, 64, 128, 256])
    assert fit_log_linear(x2, 10 + 3 * np.log2(x2), base=2)["params"]["beta"] == pytest.approx(3.0)


def test_power_law_ceiling_is_reported_at_its_bound():
    # Data that is still straight in log x: the power law runs into c = 100 and says so.
    x = np.geomspace(1, 1e4, 8)
    fit = fit_power_law(x, 30 + 8 * np.log10(x))
    assert fit["params"]["c"] == pytest.approx(100.0) and "c" in fit["at_bound"]


def test_too_few_points_is_a_clear_error():
    with pytest.raises(FitError, match="distinct positive x"):
        fit_power_law(np.array([1.0, 1.0, 2.0]), np.array([1.0, 2.0, 3.0]))
    rep = fit_series(np.array([1.0, 2.0]), np.array([3.0, 4.0]), n_boot=10)
    assert "failed" in rep[POWER] and rep[LOGLIN]["r2"] == pytest.approx(1.0)


def test_bootstrap_is_seeded_and_two_stage_with_replicates():
    x = np.repeat([1.0, 4.0, 16.0, 64.0, 256.0, 1024.0], 3)
    y = power_law(x, 70, 20, 0.4) + np.random.default_rng(0).normal(0, 0.5, x.size)
    a, scheme = bootstrap_params(POWER, x, y, n_boot=60, seed=7)
    b, _ = bootstrap_params(POWER, x, y, n_boot=60, seed=7)
    c, _ = bootstrap_params(POWER, x, y, n_boot=60, seed=8)
    assert scheme.startswith("sizes, then seeds") and 20 < len(a) <= 60  # degenerate resamples dropped
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.percentile(a[:, 2], 2.5) < 0.4 < np.percentile(a[:, 2], 97.5)
    _, scheme1 = bootstrap_params(LOGLIN, x[::3], y[::3], n_boot=20, seed=0)
    assert scheme1 == "points"


def _table(n: int, key: str = "overall"):
    df = paper.frame(n)
    xcol = "params_dense" if n == 5 else "max_len"
    unit = 1e6 if n == 5 else 1.0
    return df[xcol].to_numpy(float) / unit, df[col("official", key)].to_numpy(float)


def test_paper_table5_follows_a_scaling_law():
    x, y = _table(5)
    rep = fit_series(x, y, base=10, n_boot=N_BOOT, seed=0)
    assert rep[POWER]["r2"] >= 0.9 and rep[LOGLIN]["r2"] >= 0.9
    b = rep[POWER]["params"]["b"]
    lo, hi = rep[POWER]["ci95"]["b"]
    assert 0 < lo <= b <= hi
    # about 7.5 points of accuracy per tenfold increase in encoder size
    assert rep[LOGLIN]["params"]["beta"] == pytest.approx(7.54, abs=0.05)
    band_lo, band_hi = np.array(rep[POWER]["curve"]["lo"]), np.array(rep[POWER]["curve"]["hi"])
    assert np.all(band_lo <= band_hi) and len(band_lo) == len(rep["grid"])
    for g in GROUPS:  # every group rises with size too
        gx, gy = _table(5, g)
        assert fit_series(gx, gy, n_boot=20)[LOGLIN]["params"]["beta"] > 0


def test_extrapolation_check_on_paper_table5():
    x, y = _table(5)
    ex = extrapolation_check(x, y, base=10)
    assert ex["held_out_x"] == 1200 and ex["observed"] == 64.86 and ex["n_fit_points"] == 7
    # independent log-linear fit of the seven smaller sizes, predicted at 1.2B
    beta, alpha = np.polyfit(np.log10(x[:-1]), y[:-1], 1)
    assert ex[LOGLIN]["predicted"] == pytest.approx(alpha + beta * np.log10(1200))
    assert ex[LOGLIN]["error"] == pytest.approx(ex[LOGLIN]["predicted"] - 64.86)
    assert abs(ex[POWER]["error"]) < 1.0 and abs(ex[LOGLIN]["error"]) < 1.5


def test_paper_table6_saturates_with_length():
    x, y = _table(6)
    rep = fit_series(x, y, base=2, n_boot=N_BOOT, seed=0)
    # diminishing returns beyond ~256 (paper §4.4.2): the saturating law fits, a straight line does not
    assert rep[POWER]["r2"] > 0.99 > rep[LOGLIN]["r2"]
    assert rep["extrapolation"][POWER]["abs_error"] < rep["extrapolation"][LOGLIN]["abs_error"]
