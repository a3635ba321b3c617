"""Forecast scores users compare with: MASE and sMAPE, and the drift and seasonal naive
baselines.

- MASE (Hyndman & Koehler 2006): the absolute error divided by the series' own
  in-sample one-step naive MAE (mean ``|y[t] - y[t-1]|`` over the series' observed
  values), per target column; a series' MASE is the mean over its forecast cells, and
  the score is the mean over series (as in the M4 competition).
- sMAPE: ``200 * |pred - true| / (|pred| + |true|)`` per cell (0 where both are 0), a
  series' mean over its cells, then the mean over series; in percent, 0 to 200.

Cells where the truth or the prediction is missing (NaN) count nowhere.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["drift_forecasts", "naive_scale", "scaled_scores", "seasonal_naive_forecasts"]


def naive_scale(values: np.ndarray) -> np.ndarray:
    """In-sample one-step naive MAE of each column of one series.

    Args:
        values: ``(T, K)`` observed target values in time order (NaN = missing; the
            changes next to a missing value are left out).

    Returns:
        ``(K,)``; NaN for a column with fewer than two consecutive observed values, and
        NaN where the series never changes (MASE is undefined there).
    """
    v = np.asarray(values, dtype=float)
    if v.ndim != 2:
        raise ValueError(f"naive_scale expects one series (T, K), got shape {v.shape}")
    d = np.abs(np.diff(v, axis=0))
    with np.errstate(invalid="ignore"):
        seen = np.isfinite(d)
        n = seen.sum(0)
        total = np.where(seen, d, 0.0).sum(0)
        scale = np.where(n > 0, total / np.maximum(n, 1), np.nan)
    return np.where(scale > 0, scale, np.nan)


def drift_forecasts(now: np.ndarray, horizon: int) -> np.ndarray:
    """The drift method at every origin: the last value plus ``k`` times the mean change
    from the series' first value to it (``(y[t] - y[0]) / t``; 0 at ``t = 0``).

    Args:
        now: ``(T, K)`` the targets' last observed values at each step (forward-filled).
        horizon: ``h``.

    Returns:
        ``(T, h * K)``, column ``(k - 1) * K + j`` = target ``j`` at ``t + k``, as the
        forecast targets are laid out.
    """
    now = np.asarray(now, dtype=float)
    T = now.shape[0]
    steps = np.arange(T, dtype=float)[:, None]
    slope = np.where(steps > 0, (now - now[:1]) / np.maximum(steps, 1.0), 0.0)
    return np.concatenate([now + k * slope for k in range(1, horizon + 1)], axis=1)


def seasonal_naive_forecasts(now: np.ndarray, horizon: int, season: int) -> np.ndarray:
    """The seasonal naive method at every origin: for ``t + k`` the last observed value
    of the same season, ``y[t + k - m * ceil(k / m)]`` (``m = season``); an origin with
    less than a season of history before it takes the last value instead (naive).

    Args:
        now: ``(T, K)`` the targets' last observed values at each step (forward-filled).
        horizon: ``h``.
        season: ``m >= 1`` steps per season.

    Returns:
        ``(T, h * K)``, laid out as :func:`drift_forecasts`.
    """
    now = np.asarray(now, dtype=float)
    if isinstance(season, bool) or int(season) != season or season < 1:
        raise ValueError(f"season must be an int >= 1, got {season!r}")
    m = int(season)
    T = now.shape[0]
    t = np.arange(T)
    cols = []
    for k in range(1, horizon + 1):
        src = t + k - m * ((k + m - 1) // m)
        src = np.where(src >= 0, src, t)  # not a season of history yet: the last value
        cols.append(now[src])
    return np.concatenate(cols, axis=1)


def scaled_scores(preds: Sequence[np.ndarray], trues: Sequence[np.ndarray],
                  scales: Sequence[np.ndarray], prefix: str = "") -> dict[str, float]:
    """``{prefix}mase`` and ``{prefix}smape`` over series.

    Args:
        preds, trues: per series, arrays of the same shape ``(..., C)`` (forecast cells;
            NaN = missing).
        scales: per series, ``(C,)`` the naive MAE of the column each cell forecasts
            (:func:`naive_scale`, tiled per step ahead); a NaN scale leaves the series'
            cells out of MASE only.
    """
    mase: list[float] = []
    smape: list[float] = []
    for p, t, s in zip(preds, trues, scales):
        p, t = np.asarray(p, dtype=float), np.asarray(t, dtype=float)
        seen = np.isfinite(p) & np.isfinite(t)
        if not seen.any():
            continue
        err = np.abs(p - t)
        denom = np.abs(p) + np.abs(t)
        with np.errstate(invalid="ignore", divide="ignore"):
            sm = np.where(denom > 0, 200.0 * err / np.where(denom > 0, denom, 1.0), 0.0)
            smape.append(float(sm[seen].mean()))
            scaled = err / np.broadcast_to(np.asarray(s, dtype=float), err.shape)
        ok = seen & np.isfinite(scaled)
        if ok.any():
            mase.append(float(scaled[ok].mean()))
    nan = float("nan")
    return {f"{prefix}mase": float(np.mean(mase)) if mase else nan,
            f"{prefix}smape": float(np.mean(smape)) if smape else nan}
