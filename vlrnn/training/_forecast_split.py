"""The validation split of a forecast: the last ``horizon`` steps of every series.

A forecast is scored on what follows the end of each series, so its validation is the
same question one window earlier: every series trains on its steps before the last
``h`` (targets that would read into those ``h`` steps masked out), and the validation
loss is each series' forecast from that cut, over the ``h`` steps held out. Holding out
whole series instead (20% of them, the other tasks' split) leaves two or three series to
choose the epochs on a small panel: on the US macro panel (12 series) one seed in three
then stopped at a model that forecasts no change (docs/benchmarks/real-data.md).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from ..data import SeriesDataset

__all__ = ["last_window_split"]


def last_window_split(ds: SeriesDataset, horizon: int, n_targets: int
                      ) -> Tuple[SeriesDataset, Optional[SeriesDataset]]:
    """``(train, val)``: each series' last ``horizon`` steps held out for validation.

    Args:
        ds: a forecast dataset: ``ys`` ``(T_i, horizon * n_targets)``, row ``t`` holding
            the targets of steps ``t + 1 .. t + horizon`` (one block of ``n_targets``
            columns per step ahead; NaN past the end).
        horizon: steps ahead ``h``.
        n_targets: target columns ``K``.

    Returns:
        ``train``: every series' first ``T_i - h`` steps, the targets of row ``t``
        that fall at or after the cut NaN (left out of the loss); a series of ``2 h``
        steps or fewer stays whole in ``train`` (it has no window to spare).
        ``val``: the series that gave a window, whole, with targets only at the row
        before the cut (its ``h`` held-out steps); ``None`` if no series gave one.
    """
    h, K = int(horizon), int(n_targets)
    if h < 1 or K < 1:
        raise ValueError(f"last_window_split: horizon and n_targets must be >= 1, got "
                         f"{horizon} and {n_targets}")
    if any(y.shape[1] != h * K for y in ds.ys):
        raise ValueError(f"last_window_split: expected targets of {h} x {K} = {h * K} "
                         f"columns, got {ds.ys[0].shape[1] if ds.ys else 0}")
    cuts = [T - h if T > 2 * h else T for T in ds.lengths]
    train = ds.slice_steps([(0, c) for c in cuts])
    ahead = torch.arange(1, h + 1).repeat_interleave(K)             # step ahead per column
    masked = []
    for y, c in zip(train.ys, cuts):
        late = torch.arange(y.shape[0]).unsqueeze(1) + ahead.unsqueeze(0) >= c
        masked.append(y.masked_fill(late, float("nan")))
    train = train.replace(ys=masked)
    keep = [i for i, (T, c) in enumerate(zip(ds.lengths, cuts)) if c < T]
    if not keep:
        return train, None
    val = ds.subset(keep)
    only = []
    for y, i in zip(val.ys, keep):
        v = torch.full_like(y, float("nan"))
        v[cuts[i] - 1] = y[cuts[i] - 1]
        only.append(v)
    return train, val.replace(ys=only)
