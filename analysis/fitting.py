"""Scaling-law models, their fits, bootstrap CIs, CI bands and the extrapolation check (numpy + scipy).

Two models of accuracy (x100) against a size x (parameters in millions, or sequence length):
- saturating power law  acc = c − a·x^(−b)   (a ≥ 0, b > 0: rises towards the ceiling c ≤ 100), and
- log-linear            acc = α + β·log_base(x)  (the straight line of the paper's figure 3 on a log axis).
For small b, c − a·x^(−b) ≈ (c − a) + a·b·ln x: the log-linear law is the power law's b → 0 limit. So on
data still straight in log x the fit pushes c to its bound (100) and b towards 0; `at_bound` reports that
rather than hiding it. A model that cannot be fitted is reported as {"failed": reason}.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

C_MAX = 100.0  # accuracy is x100: the asymptote cannot exceed it
B_BOUNDS = (1e-3, 5.0)
_B_GRID = np.geomspace(B_BOUNDS[0], B_BOUNDS[1], 80)
POWER, LOGLIN = "power_law", "log_linear"
MODEL_PARAMS = {POWER: ("c", "a", "b"), LOGLIN: ("alpha", "beta")}
# A resample (or held-out fit) needs one more distinct x than the model has parameters, so that it is a
# fit and not an interpolation.
MIN_DISTINCT = {POWER: 4, LOGLIN: 3}


class FitError(ValueError):
    """The data cannot support the requested fit (too few distinct x, or no convergence)."""


def power_law(x: np.ndarray, c: float, a: float, b: float) -> np.ndarray:
    return c - a * np.power(x, -b)


def _power_jac(x: np.ndarray, c: float, a: float, b: float) -> np.ndarray:
    z = np.power(x, -b)
    return np.stack([np.ones_like(x), -z, a * z * np.log(x)], axis=1)


def log_linear(x: np.ndarray, alpha: float, beta: float, base: float = 10.0) -> np.ndarray:
    return alpha + beta * np.log(x) / np.log(base)


def _power_init(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Initial values by variable projection: for each b on a grid, (c, a) is a linear least-squares
    problem (closed form, all b at once); the best b within the bounds starts curve_fit near the optimum."""
    z = np.power(x[None, :], -_B_GRID[:, None])  # (grid, points)
    zc = z - z.mean(axis=1, keepdims=True)
    slope = (zc @ (y - y.mean())) / np.maximum(np.sum(zc * zc, axis=1), 1e-300)
    a = np.maximum(-slope, 0.0)
    c = np.minimum(y.mean() + a * z.mean(axis=1), C_MAX)
    sse = np.sum((y[None, :] - (c[:, None] - a[:, None] * z)) ** 2, axis=1)
    i = int(np.argmin(sse))
    return float(c[i]), float(a[i]), float(_B_GRID[i])


def fit_power_law(x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    x, y = np.asarray(x, float), np.asarray(y, float)
    if np.unique(x).size < 3 or np.any(x <= 0):
        raise FitError(f"the power law needs >= 3 distinct positive x, got {np.unique(x).tolist()}")
    p0 = _power_init(x, y)
    lo, hi = [0.0, 0.0, B_BOUNDS[0]], [C_MAX, np.inf, B_BOUNDS[1]]
    p0 = np.clip(p0, np.array(lo) + 1e-9, np.array(hi) - 1e-9)
    try:
        with warnings.catch_warnings():  # curve_fit's covariance is unused: the CIs are bootstrapped
            warnings.simplefilter("ignore", OptimizeWarning)
            p, _ = curve_fit(power_law, x, y, p0=p0, bounds=(lo, hi), jac=_power_jac, max_nfev=5000)
    except (RuntimeError, ValueError) as e:
        raise FitError(f"power-law fit did not converge: {e}") from e
    at_bound = [n for n, v, l, h in zip(MODEL_PARAMS[POWER], p, lo, hi)
                if np.isclose(v, l, rtol=1e-4, atol=1e-6) or np.isclose(v, h, rtol=1e-4, atol=1e-6)]
    return {"params": dict(zip(MODEL_PARAMS[POWER], map(float, p))), "at_bound": at_bound}


def fit_log_linear(x: np.ndarray, y: np.ndarray, base: float = 10.0) -> dict[str, Any]:
    x, y = np.asarray(x, float), np.asarray(y, float)
    if np.unique(x).size < 2 or np.any(x <= 0):
        raise FitError(f"the log-linear law needs >= 2 distinct positive x, got {np.unique(x).tolist()}")
    beta, alpha = np.polyfit(np.log(x) / np.log(base), y, 1)
    return {"params": {"alpha": float(alpha), "beta": float(beta)}, "at_bound": []}


def predict(model: str, params: dict[str, float], x: np.ndarray, base: float = 10.0) -> np.ndarray:
    x = np.asarray(x, float)
    return power_law(x, **params) if model == POWER else log_linear(x, **params, base=base)


def _fitter(model: str, base: float) -> Callable[[np.ndarray, np.ndarray], dict[str, Any]]:
    return fit_power_law if model == POWER else (lambda x, y: fit_log_linear(x, y, base))


def r2_score(y: np.ndarray, yhat: np.ndarray) -> float:
    y = np.asarray(y, float)
    sst = float(np.sum((y - y.mean()) ** 2))
    return float("nan") if sst == 0 else 1.0 - float(np.sum((y - yhat) ** 2)) / sst


def bootstrap_params(model: str, x: np.ndarray, y: np.ndarray, *, n_boot: int, seed: int,
                     base: float = 10.0) -> tuple[np.ndarray, str]:
    """Refit on resampled data; returns (successful parameter vectors, resampling scheme).

    Two-stage (cluster) bootstrap: draw the distinct x values with replacement, then the records
    (seeds) within each drawn x with replacement. With one record per x this is the plain case
    bootstrap of points; with several seeds it carries both the seed-to-seed noise and the
    size-to-size scatter around the law (resampling seeds alone, with 2-3 seeds, understates the
    spread). A resample with fewer than MIN_DISTINCT distinct x would be an interpolation, not a fit:
    it is dropped, and the number of kept resamples is reported.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    rng = np.random.default_rng(seed)
    ux, inv = np.unique(x, return_inverse=True)
    strata = [np.flatnonzero(inv == k) for k in range(ux.size)]
    fit, names = _fitter(model, base), MODEL_PARAMS[model]
    out = []
    for _ in range(n_boot):
        picked = rng.integers(0, ux.size, ux.size)
        if np.unique(picked).size < MIN_DISTINCT[model]:
            continue
        idx = np.concatenate([rng.choice(strata[k], size=strata[k].size, replace=True) for k in picked])
        try:
            p = fit(x[idx], y[idx])["params"]
        except FitError:
            continue
        out.append([p[n] for n in names])
    scheme = "points" if all(s.size == 1 for s in strata) else "sizes, then seeds within each size"
    return np.array(out).reshape(-1, len(names)), scheme


def _model_report(model: str, x: np.ndarray, y: np.ndarray, grid: np.ndarray, *, n_boot: int,
                  seed: int, base: float) -> dict[str, Any]:
    try:
        fit = _fitter(model, base)(x, y)
    except FitError as e:
        return {"failed": str(e)}
    yhat = predict(model, fit["params"], x, base)
    rep: dict[str, Any] = {**fit, "r2": r2_score(y, yhat), "rmse": float(np.sqrt(np.mean((y - yhat) ** 2)))}
    samples, scheme = bootstrap_params(model, x, y, n_boot=n_boot, seed=seed, base=base)
    rep.update(n_boot=n_boot, n_boot_ok=int(len(samples)), bootstrap=scheme, seed=seed)
    names = MODEL_PARAMS[model]
    rep["ci95"] = ({n: [float(v) for v in np.percentile(samples[:, i], [2.5, 97.5])] for i, n in enumerate(names)}
                   if len(samples) >= 20 else None)
    curve = predict(model, fit["params"], grid, base)
    band = None
    if len(samples) >= 20:
        curves = np.stack([predict(model, dict(zip(names, s)), grid, base) for s in samples])
        band = {"lo": np.percentile(curves, 2.5, axis=0).tolist(), "hi": np.percentile(curves, 97.5, axis=0).tolist()}
    rep["curve"] = {"fit": curve.tolist(), **(band or {"lo": None, "hi": None})}
    return rep


def extrapolation_check(x: np.ndarray, y: np.ndarray, base: float = 10.0) -> dict[str, Any]:
    """Fit without the largest x, predict it, and compare with what was observed there."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    top = x.max()
    keep = x < top
    out: dict[str, Any] = {"held_out_x": float(top), "observed": float(y[~keep].mean()),
                           "n_fit_points": int(keep.sum())}
    for model in (POWER, LOGLIN):
        if np.unique(x[keep]).size < MIN_DISTINCT[model]:
            out[model] = {"failed": f"needs >= {MIN_DISTINCT[model]} distinct x below the largest"}
            continue
        try:
            params = _fitter(model, base)(x[keep], y[keep])["params"]
        except FitError as e:
            out[model] = {"failed": str(e)}
            continue
        pred = float(predict(model, params, np.array([top]), base)[0])
        err = pred - out["observed"]
        out[model] = {"params": params, "predicted": pred, "error": err, "abs_error": abs(err),
                      "rel_error": abs(err) / abs(out["observed"]) if out["observed"] else None}
    return out


def fit_series(x: np.ndarray, y: np.ndarray, *, base: float = 10.0, n_boot: int = 1000,
               seed: int = 0, n_grid: int = 100) -> dict[str, Any]:
    """Both models on one series (one point per record), with bootstrap CIs, bands and extrapolation."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.size == 0:
        raise FitError("no points to fit")
    ux = np.unique(x)
    grid = np.geomspace(ux[0], ux[-1], n_grid) if ux.size > 1 else ux
    means = [float(y[x == u].mean()) for u in ux]
    counts = [int((x == u).sum()) for u in ux]
    return {
        "n_points": int(x.size), "distinct_x": int(ux.size),
        "points": {"x": ux.tolist(), "mean": means, "count": counts},
        "grid": grid.tolist(),
        POWER: _model_report(POWER, x, y, grid, n_boot=n_boot, seed=seed, base=base),
        LOGLIN: _model_report(LOGLIN, x, y, grid, n_boot=n_boot, seed=seed, base=base),
        "extrapolation": (extrapolation_check(x, y, base) if ux.size >= 2
                          else {"failed": "needs >= 2 distinct x"}),
    }
