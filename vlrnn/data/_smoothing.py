"""Damped-trend exponential smoothing, run from each step's past: the forecast anchor of
``anchor="holt"`` (:func:`vlrnn.pack_and_train`).

At every step ``t`` of a series, :func:`causal_holt` gives the forecasts for ``1..h``
steps ahead of a damped-trend exponential smoothing (Holt's linear method with a damped
trend, as in Gardner and McKenzie) run over rows ``0..t`` only. Its parameters are
chosen at every step from the fixed grid :data:`GRID`: the setting whose mean absolute
one-step error over rows ``1..t`` is lowest, so both the parameters and the forecast
read no later row. A network trained to forecast the change from this anchor (as ES-RNN
learns on top of exponential smoothing) starts from a per-series statistical forecast
instead of from "no change"; measured in docs/benchmarks/real-data.md.

The recursion, for one setting ``(alpha, beta, phi)``, level ``l`` and trend ``b``::

    f_t     = l_{t-1} + phi * b_{t-1}                  (the one-step forecast of row t)
    l_t     = alpha * y_t + (1 - alpha) * f_t
    b_t     = beta * (l_t - l_{t-1}) + (1 - beta) * phi * b_{t-1}
    y_t+k   = l_t + (phi + phi^2 + ... + phi^k) * b_t  (the forecast k steps ahead)

started at ``l_0`` = the first value and ``b_0 = 0``. A missing (NaN) value updates
nothing but the forecast's step (``l_t = f_t``, ``b_t = phi * b_{t-1}``) and adds no
error; steps before a column's first observed value get NaN.
"""
from __future__ import annotations

import itertools

import numpy as np
import torch

__all__ = ["GRID", "causal_holt"]

#: relative difference of mean errors below which settings tie (the first is taken)
_TIE = 1e-9
#: elements of each of the three buffers of smoothing states kept per chunk of steps
#: (16 MB each)
_CHUNK_ELEMENTS = 2_000_000

#: ``(alpha, beta, phi)`` settings :func:`causal_holt` chooses from; the first,
#: ``(1, 0, 1)`` (the last value: persistence), is taken while errors tie (at step 0)
GRID: tuple[tuple[float, float, float], ...] = (
    (1.0, 0.0, 1.0),
    *((a, 0.0, 1.0) for a in (0.7, 0.5, 0.3, 0.2, 0.1, 0.05)),   # no trend: phi unused
    *((a, b, p) for a, b, p in itertools.product((1.0, 0.7, 0.5, 0.3, 0.2, 0.1, 0.05),
                                                 (0.05, 0.1, 0.3), (0.98, 0.9, 0.8))),
)


def causal_holt(series: list[torch.Tensor], horizon: int) -> list[torch.Tensor]:
    """Damped-trend smoothing forecasts made at every step from that step's past.

    Args:
        series: ``(T_i, K)`` each, time first: ``K`` columns smoothed independently
            (NaN = missing). Series of different lengths are run together (padded).
        horizon: steps ahead ``h >= 1``.

    Returns:
        float64 ``(T_i, h * K)`` per series: row ``t``, column ``k * K + c`` is column
        ``c``'s forecast ``k + 1`` steps after step ``t``, from rows ``0..t`` only, with
        the :data:`GRID` setting of the lowest mean absolute one-step error up to ``t``.
    """
    if int(horizon) < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon!r}")
    for i, y in enumerate(series):
        if not isinstance(y, torch.Tensor) or y.dim() != 2:
            raise ValueError(f"expected series as 2-D tensors (T, K); series {i} is "
                             + (f"shape {tuple(y.shape)}" if isinstance(y, torch.Tensor)
                                else type(y).__name__))
    if not series:
        return []
    k_cols = {y.shape[1] for y in series}
    if len(k_cols) != 1:
        raise ValueError(f"expected every series with the same columns, got {sorted(k_cols)}")
    h, (n, k) = int(horizon), (len(series), k_cols.pop())
    t_max = max(y.shape[0] for y in series)
    y = np.full((t_max, n, k), np.nan)
    for i, s in enumerate(series):
        y[:s.shape[0], i] = s.detach().double().cpu().numpy()
    grid = np.asarray(GRID)                                       # (G, 3)
    a, b, phi = (grid[:, j, None, None] for j in range(3))        # (G, 1, 1) each
    # ``ahead[g, j]``: phi + ... + phi^(j+1), the trend's weight j + 1 steps ahead
    ahead = np.cumsum(grid[:, 2:3] ** np.arange(1, h + 1), axis=1)
    seen_any = np.zeros((n, k), bool)
    level = np.zeros((len(grid), n, k))
    trend, err = np.zeros_like(level), np.zeros_like(level)
    out = np.full((t_max, h, n, k), np.nan)
    # numpy, not torch: the loop is over steps of small arrays, where a torch call's
    # overhead would dominate; the choice of setting is vectorised over chunks of steps
    chunk = max(1, min(256, _CHUNK_ELEMENTS // level.size))
    buf_l, buf_b, buf_e = (np.empty((chunk, *level.shape)) for _ in range(3))
    buf_seen = np.empty((chunk, n, k), bool)
    for t0 in range(0, t_max, chunk):
        t1 = min(t0 + chunk, t_max)
        for t in range(t0, t1):
            v = y[t]
            seen = np.isfinite(v)
            vz = np.where(seen, v, 0.0)
            f = level + phi * trend
            later = seen & seen_any
            err = err + np.where(later, np.abs(vz - f), 0.0)
            new_level = np.where(seen & ~seen_any, vz, np.where(seen, a * vz + (1 - a) * f, f))
            trend = np.where(later, b * (new_level - level) + (1 - b) * phi * trend,
                             phi * trend)
            level = new_level
            seen_any = seen_any | seen
            j = t - t0
            buf_l[j], buf_b[j], buf_e[j], buf_seen[j] = level, trend, err, seen_any
        m = t1 - t0
        # the first setting within a relative _TIE of the lowest error: errors that tie
        # in exact arithmetic must not be told apart by rounding (a series 1000 times
        # larger gets the same settings and 1000 times the forecasts)
        best = buf_e[:m].min(1, keepdims=True)
        pick = (buf_e[:m] <= best * (1 + _TIE)).argmax(1)[:, None]  # (m, 1, n, k)
        lv = np.take_along_axis(buf_l[:m], pick, 1)[:, 0]         # (m, n, k)
        tr = np.take_along_axis(buf_b[:m], pick, 1)[:, 0]
        w = ahead[pick[:, 0]]                                     # (m, n, k, h)
        fc = lv[..., None] + w * tr[..., None]
        fc[~buf_seen[:m]] = np.nan
        out[t0:t1] = fc.transpose(0, 3, 1, 2)
    return [torch.from_numpy(np.ascontiguousarray(out[:s.shape[0], :, i]))
            .reshape(s.shape[0], h * k) for i, s in enumerate(series)]
