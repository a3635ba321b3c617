"""A long frame -> the ``SeriesDataset`` a task trains or predicts on.

One function, :func:`task_dataset`, used both by ``pack_and_train`` and by
``TrainedModel``, so that training and prediction read a frame the same way:

- per-step tasks: ``y`` ``(T_i, K)``, the target values (class ids for classification),
  NaN where a target is missing;
- forecasting (``horizon=h``): the inputs also hold the targets' own values at each step
  (forward-filled within the series: only the past), and ``y`` ``(T_i, h * K)`` holds
  the next ``h`` steps' targets, column ``(k - 1) * K + j`` = target ``j`` at ``t + k``,
  NaN past the series' end;
- series tasks: ``y`` ``(T_i, 1)`` repeats the series' label on every row (the loader
  keeps its first row; see :func:`series_batches`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, List, Optional, Tuple

import numpy as np
import pandas as pd
import torch

from ..data import SeriesDataset, from_dataframe
from ._tasks import ClassCodes, series_labels

if TYPE_CHECKING:
    from ._task import Task

_PLACEHOLDER = "__vlrnn_target_{}__"


def _check_columns(df: pd.DataFrame, cols: List[str], why: str) -> None:
    missing = [c for c in dict.fromkeys(cols) if c not in df.columns]
    if missing:
        raise ValueError(f"column(s) {missing} needed {why} are not in the frame; it has "
                         f"columns {list(df.columns)}")


def _past_filled(frame: pd.DataFrame, task: Task) -> pd.DataFrame:
    """The target columns as inputs: a missing value takes the series' last observed one
    (never a later one); a series that starts with a missing target is an error."""
    id_col, time_col = task.id_col, task.time_col
    order = frame.sort_values([id_col, time_col], kind="stable").index
    out = frame.copy()
    for t in task.target_cols:
        filled = frame.loc[order].groupby(id_col, sort=False)[t].ffill()
        lead = filled.isna()
        if lead.any():
            ids = list(dict.fromkeys(frame.loc[filled.index[lead], id_col]))
            raise ValueError(f"target column {t!r} is missing (NaN) at the start of series "
                             f"{ids[:5]}: forecasting reads each series' own past values, "
                             "and there is none before its first observed value; drop those "
                             "leading rows")
        out[t] = filled.reindex(frame.index)
    return out


def task_dataset(df: pd.DataFrame, task: Task, *, with_targets: bool,
                 series_target: Any = None,
                 min_length: int = 1) -> Tuple[SeriesDataset, int]:
    """The dataset of ``df`` for ``task``.

    Args:
        df: long frame; its index may be anything (``dataset.index`` holds row positions
            ``0..len(df)-1``).
        task: columns, level and horizon (:class:`~vlrnn.training._task.Task`).
        with_targets: read the targets (training, evaluation); otherwise ``y`` is zeros.
        series_target: labels (series tasks with targets), as ``pack_and_train`` takes.
        min_length: fewest rows a series may have.

    Returns:
        ``(dataset, n_missing)``: ``n_missing`` counts missing target values.
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame, got {type(df).__name__}")
    id_col, time_col = task.id_col, task.time_col
    inputs = list(task.input_cols)
    _check_columns(df, [id_col, time_col, *inputs], "as inputs")
    frame = df.reset_index(drop=True)
    step_targets = task.level == "step"
    if step_targets and with_targets:
        _check_columns(df, list(task.target_cols), "as targets")
    if task.horizon:
        frame = _past_filled(frame, task)
    n_out = len(task.target_cols) if step_targets else 1
    holders = [_PLACEHOLDER.format(j) for j in range(n_out)]
    load = frame[[id_col, time_col, *inputs]].copy()
    for h in holders:
        load[h] = 0.0
    ds = from_dataframe(load, id_col=id_col, time_col=time_col, target_cols=holders,
                        feature_cols=inputs, min_length=min_length,
                        dtype=torch.get_default_dtype())
    if not with_targets:
        return ds, 0
    dtype = torch.get_default_dtype()
    codes = task.codes()
    if step_targets:
        values = _step_values(df, task, codes)
        ys = [torch.as_tensor(values[ix.to_numpy()], dtype=dtype) for ix in ds.index]
        if task.horizon:
            _check_horizon(ds, task.horizon)
            ys = [_future(y, task.horizon) for y in ys]
        n_missing = int(sum(int(torch.isnan(y).sum()) for y in ys)) if not \
            task.horizon else int(np.isnan(values).sum())
    else:
        labels = series_labels(df, id_col, series_target, ds.ids)
        if codes is not None:
            ids = pd.Series(list(labels.index), index=labels.index)
            enc = codes.encode(labels, "series_target", ids=ids)
        else:
            enc = _floats(labels, "series_target")
        ys = [torch.full((T, 1), float(v), dtype=dtype) for v, T in zip(enc, ds.lengths)]
        n_missing = 0
    ds = SeriesDataset(ds.xs, ys, ids=ds.ids, feature_cols=ds.feature_cols,
                       target_cols=[f"y{j}" for j in range(ys[0].shape[1])] if ys else [],
                       index=ds.index, times=ds.times, id_col=id_col, time_col=time_col)
    return ds, n_missing


def _floats(values: pd.Series, what: str) -> np.ndarray:
    try:
        return values.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError):
        raise ValueError(f"{what} holds {values.dtype} values; regression needs numbers"
                         ) from None


def _step_values(df: pd.DataFrame, task: Task, codes: Optional[ClassCodes]) -> np.ndarray:
    """``(N, K)`` float targets in row position order; NaN where missing."""
    if codes is not None:
        col = task.target_cols[0]
        ids = df[task.id_col].reset_index(drop=True)
        return codes.encode(df[col].reset_index(drop=True), f"target column {col!r}",
                            ids=ids)[:, None]
    out = np.column_stack([_floats(df[c], f"target column {c!r}")
                           for c in task.target_cols])
    bad = np.isinf(out)
    if bad.any():
        col = task.target_cols[int(np.flatnonzero(bad.any(0))[0])]
        raise ValueError(f"target column {col!r} has infinite values; only NaN (missing) "
                         "is allowed in targets")
    return out


def _check_horizon(ds: SeriesDataset, h: int) -> None:
    short = [(i, T) for i, T in zip(ds.ids, ds.lengths) if T <= h]
    if short:
        shown = ", ".join(f"{i!r} ({T} steps)" for i, T in short[:5])
        raise ValueError(f"horizon={h} is longer than series {shown}: a series needs more "
                         f"than {h} steps to give at least one step its next {h} targets; "
                         "drop those series or lower the horizon")


def _future(y: torch.Tensor, h: int) -> torch.Tensor:
    """``(T, K)`` -> ``(T, h * K)``: row ``t`` holds rows ``t+1 .. t+h``, NaN past the end."""
    T, K = y.shape
    pad = torch.cat([y, y.new_full((h, K), float("nan"))])
    return torch.cat([pad[k:k + T] for k in range(1, h + 1)], dim=1)
