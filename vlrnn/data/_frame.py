"""``from_dataframe``: a ragged long-format frame -> ``SeriesDataset``, with validation.

A long-format frame has one row per (series id, time step). The checks (in
:mod:`vlrnn.data._validate`) run in this order: arguments, columns, column dtypes, missing
ids/times, duplicate (id, time) rows, non-finite values, short series, regular grid; then
the values become one tensor per series, categorical columns one-hot encoded.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd
import torch

from ._dataset import SeriesDataset
from ._validate import (
    Columns,
    DataWarning,
    _check_args,
    _check_duplicates,
    _check_missing_keys,
    _check_regular,
    _check_time_dtype,
    _handle_nonfinite,
    _handle_short,
    _resolve_columns,
    _scalar,
    _show,
    _sort,
)

__all__ = ["DataWarning", "from_dataframe"]  # DataWarning lives in validate


def _to_matrix(df: pd.DataFrame, cols: List[str]) -> np.ndarray:
    """``(N, len(cols))`` float64; nullable NA becomes NaN."""
    if not cols:
        return np.zeros((len(df), 0))
    return np.column_stack([df[c].to_numpy(dtype=np.float64, na_value=np.nan) for c in cols])


def _encode_categorical(df: pd.DataFrame, full: pd.DataFrame, cats: Dict[str, Optional[list]]
                        ) -> Tuple[np.ndarray, List[str], Dict[str, list]]:
    """One-hot encode ``cats`` columns of ``df``; categories fixed from ``full``."""
    blocks, names, used = [], [], {}
    for col, given in cats.items():
        s = full[col]
        if given is None:
            if isinstance(s.dtype, pd.CategoricalDtype):
                given = list(s.cat.categories)
            else:
                given = list(pd.unique(s.dropna()))
                try:
                    given = sorted(given)
                except TypeError:
                    pass  # mixed types: keep order of appearance
        values = df[col]
        unknown = ~values.isin(given).to_numpy()
        if unknown.any():
            raise ValueError(f"categorical column {col!r} has value(s) "
                             f"{_show(pd.unique(values[unknown]))} outside its categories "
                             f"{_show(given, 20)}")
        codes = pd.Categorical(values, categories=given).codes
        blocks.append(np.eye(len(given))[codes])
        names += [f"{col}={v}" for v in given]
        used[col] = given
    return (np.concatenate(blocks, axis=1) if blocks else np.zeros((len(df), 0))), names, used


def from_dataframe(df: pd.DataFrame, *, id_col: str, time_col: str, target_cols: Columns,
                   feature_cols: Optional[Columns] = None,
                   categorical: Union[None, Columns, Mapping[str, Sequence[Any]]] = None,
                   on_nonfinite: str = "raise", min_length: int = 2,
                   short_series: str = "raise", check_regular: bool = False,
                   dtype: torch.dtype = torch.float32) -> SeriesDataset:
    """Turn a long-format frame (one row per series id and time step) into a dataset.

    Args:
        df: the frame; rows may come in any order.
        id_col: column naming the series of each row (any sortable values).
        time_col: column ordering rows within a series (numbers or datetimes).
        target_cols: column name or list of names; the ``n_targets`` columns of ``y``.
        feature_cols: column name or list of names; the ``F`` columns of ``x``.  Default:
            every column that is not id, time, target or categorical, in frame order
            (each must be numeric; bool counts as 0/1).
        categorical: column name(s) to one-hot encode into extra features (appended after
            ``feature_cols``, named ``"col=value"``), or a ``{column: categories}`` mapping
            to fix the encoding (e.g. the training set's ``dataset.categories``).
        on_nonfinite: what to do with NaN/inf in features or targets (missing values in
            categorical columns count too): ``"raise"`` (default), ``"drop"`` the rows
            (warns), ``"ffill"`` forward-fill within each series (warns; a leading value
            with nothing before it raises).
        min_length: fewest rows a series may have.
        short_series: ``"raise"`` (default) or ``"drop"`` (warns) for shorter series.
        check_regular: raise if a series' time steps are not all equal to its most common
            step, listing the series and the time stamps where the gaps start.
        dtype: floating dtype of the tensors.

    Returns:
        ``SeriesDataset`` with one series per id, in sorted id order: ``dataset[i]`` is
        ``(x, y)`` of shapes ``(T_i, F)`` and ``(T_i, n_targets)``, rows in time order;
        ``dataset.index[i]`` holds the frame's index labels of those rows.

    Raises:
        ValueError: on any bad input, naming the column (and series id and time stamp).

    >>> import pandas as pd
    >>> from vlrnn.data import from_dataframe
    >>> df = pd.DataFrame({"unit": ["a"] * 3 + ["b"] * 2, "t": [0, 1, 2, 0, 1],
    ...                    "temp": [1.0, 2.0, 3.0, 4.0, 5.0], "load": [0.1, 0.2, 0.3, 0.4, 0.5]})
    >>> ds = from_dataframe(df, id_col="unit", time_col="t", target_cols="load")
    >>> len(ds), ds.feature_cols, ds.target_cols
    (2, ['temp'], ['load'])
    >>> x, y = ds[0]
    >>> x.shape, y.shape
    (torch.Size([3, 1]), torch.Size([3, 1]))
    """
    _check_args(df, on_nonfinite, short_series, min_length, dtype)
    targets, features, cats = _resolve_columns(df, id_col, time_col, target_cols,
                                               feature_cols, categorical)
    if len(df) == 0:
        raise ValueError(f"the frame is empty (0 rows; columns {list(df.columns)}); "
                         "nothing to load")
    _check_time_dtype(df, time_col)
    _check_missing_keys(df, id_col, time_col)

    frame = _sort(df, id_col, time_col)
    _check_duplicates(frame, id_col, time_col)
    # Series codes 0..S-1 in sorted id order; rows of a series are contiguous after the sort.
    codes = pd.factorize(frame[id_col], sort=False)[0]

    value_cols = features + targets
    values = _to_matrix(frame, value_cols)
    if cats:
        # A missing category is a missing value too: route it through on_nonfinite.
        miss = np.column_stack([frame[c].isna().to_numpy() for c in cats])
        values = np.concatenate([values, np.where(miss, np.nan, 0.0)], axis=1)
        value_cols = value_cols + list(cats)
    frame, values, codes = _handle_nonfinite(frame, values, value_cols, codes, on_nonfinite,
                                             id_col, time_col)
    if cats and on_nonfinite == "ffill":
        # The value matrix only flags missing categories; fill the labels themselves too.
        frame = frame.copy()
        for c in cats:
            frame[c] = frame[c].groupby(codes).ffill()
    frame, values, codes = _handle_short(frame, values, codes, min_length, short_series,
                                         id_col)
    codes = pd.factorize(codes, sort=False)[0]  # renumber after drops
    if check_regular:
        _check_regular(frame, codes, id_col, time_col)

    n_feat, n_tgt = len(features), len(targets)
    x_np, y_np = values[:, :n_feat], values[:, n_feat:n_feat + n_tgt]
    feature_names = list(features)
    categories: Dict[str, list] = {}
    if cats:
        onehot, names, categories = _encode_categorical(frame, df, cats)
        x_np = np.concatenate([x_np, onehot], axis=1)
        feature_names += names

    # One tensor for all rows; each series is a (contiguous) row slice of it.
    # (np.require: pandas may hand back read-only arrays, which torch warns about.)
    x_all = torch.from_numpy(np.require(x_np, requirements=["C", "W"])).to(dtype)
    y_all = torch.from_numpy(np.require(y_np, requirements=["C", "W"])).to(dtype)
    # a finite value too large for ``dtype`` would silently become inf
    for values, names in ((x_all, feature_names), (y_all, targets)):
        cols = (~torch.isfinite(values)).any(0).nonzero().flatten().tolist()
        if cols:
            raise ValueError(f"column {names[cols[0]]!r} has values too large for {dtype} "
                             f"(they would become inf); rescale it first or pass a wider "
                             f"dtype=")
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    stops = np.r_[starts[1:], len(codes)]
    id_values = frame[id_col].to_numpy()
    time_index = pd.Index(frame[time_col])
    return SeriesDataset(
        [x_all[a:b] for a, b in zip(starts, stops)],
        [y_all[a:b] for a, b in zip(starts, stops)],
        ids=[_scalar(id_values[a]) for a in starts],
        feature_cols=feature_names, target_cols=targets,
        index=[frame.index[a:b] for a, b in zip(starts, stops)],
        times=[time_index[a:b] for a, b in zip(starts, stops)],
        id_col=id_col, time_col=time_col, categories=categories)
