"""Scaling each series by its own statistics: whole-series or causal (past-only).

Two kinds of per-series statistics, both computed per column and ignoring NaN:

- :func:`series_stats`: mean and std of the whole series. For tasks that read a whole
  series before predicting (one label per series) this is leak-free.
- :func:`causal_stats`: at every step ``t`` the mean and std of steps ``0..t`` only,
  so a value scaled with them never depends on a later row. For per-step tasks and
  forecasts.
- :func:`causal_diff_scale`: at every step ``t`` the mean absolute one-step change of
  steps ``0..t`` (the in-sample naive error MASE divides by, computed from the past
  only): the unit a forecast's change from the last value is measured in.

Every scale is floored so that a constant stretch (std 0) does not divide by zero: by
``0.1 * |mean|`` of the same past when that is not 0, else by 1.
"""
from __future__ import annotations

import torch

__all__ = ["causal_diff_scale", "causal_stats", "scale_series", "series_stats"]

_REL_FLOOR = 0.1


def _check(x: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        raise ValueError("expected one series as a 2-D tensor (T, C), got "
                         + (f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor)
                            else type(x).__name__))
    return x.detach().double()


def _floor(scale: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """``scale`` where it is positive, else ``0.1 * |mean|``, else 1 (same shapes)."""
    tiny = 1e-12 * mean.abs().clamp_min(1.0)
    rel = _REL_FLOOR * mean.abs()
    fallback = torch.where(rel > tiny, rel, torch.ones_like(rel))
    return torch.where(scale > tiny, scale, fallback)


def series_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (population) std of each column of one whole series.

    Args:
        x: ``(T, C)``; NaN values are left out.

    Returns:
        ``(mean, std)``, float64 ``(C,)`` each; a constant column gets the floor (see
        the module docstring), a column with no observed value mean 0 and std 1.
    """
    v = _check(x)
    seen = torch.isfinite(v)
    n = seen.sum(0).clamp_min(1)
    z = torch.where(seen, v, torch.zeros_like(v))
    mean = z.sum(0) / n
    var = (torch.where(seen, v - mean, torch.zeros_like(v)) ** 2).sum(0) / n
    return mean, _floor(var.sqrt(), mean)


def causal_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Running mean and (population) std of each column over steps ``0..t``.

    Args:
        x: ``(T, C)``, time first; NaN values are left out (a step before the first
            observed value gets mean 0 and std 1).

    Returns:
        ``(loc, scale)``, float64 ``(T, C)`` each: row ``t`` reads rows ``0..t`` only.
    """
    v = _check(x)
    seen = torch.isfinite(v)
    # shift by each column's first observed value (a past value) against cancellation
    first_idx = seen.double().argmax(0)
    first = v.gather(0, first_idx[None]).nan_to_num(0.0)
    z = torch.where(seen, v - first, torch.zeros_like(v))
    n = seen.double().cumsum(0)
    s1, s2 = z.cumsum(0), (z * z).cumsum(0)
    nn_ = n.clamp_min(1.0)
    mean0 = s1 / nn_
    var = (s2 / nn_ - mean0 ** 2).clamp_min(0.0)
    loc = torch.where(n > 0, mean0 + first, torch.zeros_like(v))
    scale = torch.where(n > 0, _floor(var.sqrt(), loc), torch.ones_like(v))
    return loc, scale


def causal_diff_scale(x: torch.Tensor) -> torch.Tensor:
    """Running mean absolute one-step change of each column over steps ``0..t``.

    Args:
        x: ``(T, C)``, time first, finite (e.g. forward-filled target values).

    Returns:
        float64 ``(T, C)``: row ``t`` is the mean of ``|x[s] - x[s-1]|`` for
        ``1 <= s <= t``, floored by ``0.1 * |running mean|`` (row 0, which has no
        change yet, and constant stretches), else 1.
    """
    v = _check(x)
    d = torch.zeros_like(v)
    d[1:] = (v[1:] - v[:-1]).abs().nan_to_num(0.0)
    steps = torch.arange(v.shape[0], dtype=v.dtype, device=v.device)[:, None]
    mad = d.cumsum(0) / steps.clamp_min(1.0)
    loc, _ = causal_stats(v)
    return _floor(mad, loc)


def scale_series(xs: list[torch.Tensor], *, causal: bool) -> list[torch.Tensor]:
    """Each series standardised by its own statistics: ``(x - loc) / scale``.

    Args:
        xs: series ``(T_i, C)``.
        causal: ``True``: by :func:`causal_stats` (row ``t`` by rows ``0..t``), for
            per-step tasks and forecasts; ``False``: by :func:`series_stats` of the
            whole series, for tasks that read the whole series first.

    Returns:
        new tensors of the same shapes and dtypes, in the same order.
    """
    out = []
    for x in xs:
        if causal:
            loc, scale = causal_stats(x)
        else:
            loc, scale = series_stats(x)
        out.append(((x.double() - loc) / scale).to(x.dtype))
    return out
