"""``from_arrays``: a list of per-series numpy arrays -> the long-format frame vlrnn trains on.

Users of sktime/aeon/tslearn often hold a ragged collection as a list of arrays, one per
series (the "nested" or "np-list" shape), plus one label per series.  ``from_arrays``
checks that collection and turns it into a long-format ``pandas.DataFrame`` (one row per
series and step) and, when labels are given, a ``pandas.Series`` of labels indexed by
series id, so the one-call API takes it as it is::

    frame, labels = vlrnn.data.from_arrays(X, y)
    result = vlrnn.pack_and_train(frame, id_col="id", time_col="t", series_target=labels)

or the lower-level path: ``vlrnn.data.from_dataframe(frame, id_col="id", time_col="t",
target_cols=...)``.  Every check names the series (position and id), step and column.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence

import numpy as np
import pandas as pd

__all__ = ["ArrayFrame", "from_arrays"]

_SHOW = 5


class ArrayFrame(tuple):
    """What :func:`from_arrays` returns: a pair that unpacks as ``frame, labels``.

    Attributes:
        frame: long-format ``DataFrame`` with columns ``[id_col, time_col, *feature_cols,
            *target_cols]``, one row per (series, step), series in input order, steps in
            time order (``time_col`` counts 0, 1, ... within each series).
        labels: ``Series`` of one label per series indexed by series id (index name
            ``id_col``, name ``"label"``), values as given (dtype kept, so text labels stay
            text); ``None`` when no labels were given.
        id_col, time_col: names of the id and time columns.
        feature_cols: names of the ``F`` feature columns, in array column order.
        target_cols: names of the per-step target columns (empty without ``targets``).

    >>> import numpy as np
    >>> from vlrnn.data import from_arrays
    >>> data = from_arrays(np.zeros((2, 5, 3)), labels=[0, 1], feature_names=["x", "y", "z"])
    >>> data.feature_cols, data.id_col, data.frame.groupby("id").size().tolist()
    (['x', 'y', 'z'], 'id', [5, 5])
    """

    def __new__(cls, frame: pd.DataFrame, labels: Optional[pd.Series], id_col: str,
                time_col: str, feature_cols: List[str], target_cols: List[str]
                ) -> "ArrayFrame":
        self = super().__new__(cls, (frame, labels))
        self.frame, self.labels = frame, labels
        self.id_col, self.time_col = id_col, time_col
        self.feature_cols, self.target_cols = list(feature_cols), list(target_cols)
        return self

    def __repr__(self) -> str:
        n = self.frame[self.id_col].nunique()
        return (f"ArrayFrame({n} series, {len(self.frame)} rows, features "
                f"{self.feature_cols}, targets {self.target_cols}, "
                f"labels={'no' if self.labels is None else 'yes'})")

    @property
    def train_kwargs(self) -> dict:
        """Keyword arguments naming the columns for ``vlrnn.pack_and_train(frame, **kw)``:
        ``id_col``, ``time_col``, ``feature_cols``, and ``series_target`` (the labels) or
        ``target_cols`` (the per-step targets), whichever were given."""
        kw: dict = dict(id_col=self.id_col, time_col=self.time_col,
                        feature_cols=list(self.feature_cols))
        if self.labels is not None:
            kw["series_target"] = self.labels
        if self.target_cols:
            kw["target_cols"] = list(self.target_cols)
        return kw


def _name(pos: int, ids: Optional[Sequence[Any]]) -> str:
    return f"series {pos}" + ("" if ids is None else f" (id {ids[pos]!r})")


def _as_series_list(arrays: Any, what: str, channels_first: bool) -> List[Any]:
    """``arrays`` as a list of per-series array-likes; a 3-D array is N equal-length series."""
    if isinstance(arrays, (str, bytes)) or isinstance(arrays, (pd.DataFrame, pd.Series)):
        raise TypeError(f"{what} must be a list of per-series arrays (T_i, F) or a 3-D array "
                        f"(N, T, F), got a {type(arrays).__name__}; for a long-format frame "
                        "use vlrnn.data.from_dataframe")
    if isinstance(arrays, np.ndarray):
        if arrays.ndim != 3 or arrays.dtype == object:
            if arrays.dtype == object and arrays.ndim == 1:
                return list(arrays)       # a 1-D object array of per-series arrays
            raise ValueError(f"{what} as one numpy array must be 3-D (N series, T steps, F "
                             f"features){' (N, F, T) with channels_first' if channels_first else ''}, "
                             f"got shape {arrays.shape}; pass a list of (T_i, F) arrays for "
                             "ragged series")
        return list(arrays)
    try:
        return list(arrays)
    except TypeError:
        raise TypeError(f"{what} must be a list of per-series arrays (T_i, F), got "
                        f"{type(arrays).__name__}") from None


def _to_2d(a: Any, pos: int, ids: Optional[Sequence[Any]], what: str,
           channels_first: bool) -> np.ndarray:
    try:
        arr = np.asarray(a)
    except ValueError as err:       # e.g. a list of rows of different widths
        raise ValueError(f"{what}: {_name(pos, ids)} is not a rectangular array ({err})"
                         ) from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number)
                                   or arr.dtype == bool):
        raise ValueError(f"{what}: {_name(pos, ids)} has dtype {arr.dtype}; expected numbers "
                         "(map text to numbers first)")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"{what}: {_name(pos, ids)} is complex; expected real numbers")
    if arr.ndim == 1:
        arr = arr[:, None]            # a univariate series (T_i,) is (T_i, 1)
    elif arr.ndim == 2:
        if channels_first:
            arr = arr.T
    else:
        shape = "(F, T_i)" if channels_first else "(T_i, F)"
        raise ValueError(f"{what}: {_name(pos, ids)} has shape {arr.shape} ({arr.ndim}-D); "
                         f"expected a 2-D array {shape} or a 1-D array (T_i,) for one feature")
    if arr.shape[0] == 0:
        raise ValueError(f"{what}: {_name(pos, ids)} has 0 time steps; every series needs at "
                         "least one (drop empty series first)")
    return arr.astype(np.float64, copy=False)


def _check_ids(ids: Any, n: int, id_col: str) -> List[Any]:
    ids = list(np.asarray(ids, dtype=object)) if isinstance(ids, np.ndarray) else list(ids)
    if len(ids) != n:
        raise ValueError(f"ids has {len(ids)} entries for {n} series; expected one id per "
                         "series")
    missing = [i for i, v in enumerate(ids) if v is None or (isinstance(v, float) and v != v)]
    if missing:
        raise ValueError(f"ids has missing values (None/NaN) at position(s) {missing[:_SHOW]}")
    seen: dict = {}
    dup = []
    for v in ids:
        if v in seen:
            dup.append(v)
        seen[v] = True
    if dup:
        raise ValueError(f"ids must be unique (one per series); repeated: "
                         f"{list(dict.fromkeys(dup))[:_SHOW]}")
    return [v.item() if isinstance(v, np.generic) else v for v in ids]


def _check_nonfinite(arr: np.ndarray, pos: int, ids: Sequence[Any], cols: Sequence[str],
                     what: str, allow_nan: bool) -> None:
    bad = np.isinf(arr) if allow_nan else ~np.isfinite(arr)
    if bad.any():
        t, j = (int(v) for v in np.argwhere(bad)[0])
        kind = "infinite" if allow_nan else "non-finite (NaN or inf)"
        hint = ("" if allow_nan else "; clean them, or pass allow_nan=True to keep NaN for "
                "from_dataframe's on_nonfinite= to drop or forward-fill")
        raise ValueError(f"{what}: {_name(pos, ids)} has {int(bad.sum())} {kind} value(s), "
                         f"first at step {t}, column {cols[j]!r}{hint}")


def _names(given: Optional[Sequence[str]], k: int, prefix: str, what: str) -> List[str]:
    if given is None:
        return [f"{prefix}{j}" for j in range(k)] if k > 1 or prefix == "f" else [prefix]
    names = [given] if isinstance(given, str) else list(given)
    if len(names) != k:
        raise ValueError(f"{what} has {len(names)} names {names} for {k} columns")
    if len(set(names)) != len(names):
        raise ValueError(f"{what} must be unique, got {names}")
    return names


def _show_index(index: pd.Index) -> str:
    items = [repr(v) for v in index[:_SHOW]]
    return "[" + ", ".join(items) + (", ...]" if len(index) > _SHOW else "]")


def _check_labels(labels: Any, n: int, ids: Sequence[Any], id_col: str) -> pd.Series:
    if isinstance(labels, (str, bytes)):
        raise TypeError(f"labels must be one label per series (a list, array or Series), got "
                        f"a {type(labels).__name__}")
    if isinstance(labels, pd.Series):
        index = labels.index
        if index.is_unique and len(index) == n and set(index) == set(ids):
            values = labels.reindex(pd.Index(ids)).to_numpy()     # aligned by series id
        elif index.equals(pd.RangeIndex(len(index))):
            values = labels.to_numpy()                            # plain positions
        else:
            raise ValueError(f"labels is a Series whose index {_show_index(index)} is neither "
                             f"the series ids {_show_index(pd.Index(ids))} nor 0..N-1; pass "
                             "ids= matching its index, or labels.to_numpy() to take them in "
                             "order")
    else:
        try:
            values = np.asarray(labels)
        except ValueError as err:
            raise ValueError(f"labels must be one label per series ({err})") from None
    if values.ndim != 1:
        if values.ndim == 2 and values.shape[1] == 1:
            values = values[:, 0]
        else:
            raise ValueError(f"labels must be 1-D, one label per series, got shape "
                             f"{values.shape}")
    if len(values) != n:
        raise ValueError(f"labels has {len(values)} entries for {n} series; expected one "
                         "label per series")
    out = pd.Series(values, index=pd.Index(ids, name=id_col), name="label")
    missing = np.flatnonzero(out.isna().to_numpy())
    if missing.size:
        shown = ", ".join(_name(int(p), ids) for p in missing[:_SHOW])
        raise ValueError(f"labels: {missing.size} series have no label (None/NaN): {shown}; "
                         "give every series a label or leave those series out")
    return out


def from_arrays(arrays: Any, labels: Any = None, *, targets: Any = None,
                ids: Optional[Sequence[Any]] = None,
                feature_names: Optional[Sequence[str]] = None,
                target_names: Optional[Sequence[str]] = None,
                id_col: str = "id", time_col: str = "t", channels_first: bool = False,
                allow_nan: bool = False) -> ArrayFrame:
    """Turn a collection of per-series arrays into a checked long-format frame.

    Args:
        arrays: ``N`` series: a list (or tuple, or 1-D object array) of arrays of shape
            ``(T_i, F)`` (lengths may differ; ``F`` the same for all), or ``(T_i,)`` for one
            feature; or one 3-D array ``(N, T, F)`` of equal-length series.  Anything
            ``numpy.asarray`` turns into such an array works (lists, DataFrames).
        labels: optional, one label per series: a list or array in series order, or a
            ``Series`` indexed by series id (aligned to ``ids``) or by ``0..N-1``; the
            class or value to predict from the whole series.
        targets: optional per-step targets, one array per series of shape ``(T_i,)`` or
            ``(T_i, K)`` (same ``T_i`` as its series); NaN marks a missing target.
        ids: optional series ids (unique, one per series; default ``0..N-1``).
        feature_names: the ``F`` feature column names (default ``f0, f1, ...``).
        target_names: the ``K`` target column names (default ``target`` for one,
            ``target0, target1, ...`` for several).
        id_col, time_col: names of the id and time columns of the frame.
        channels_first: the arrays are ``(F, T_i)`` (``(N, F, T)`` for a 3-D array), as
            aeon's and sktime's loaders return them.
        allow_nan: keep NaN features in the frame (for ``from_dataframe``'s
            ``on_nonfinite=``) instead of raising; inf always raises.

    Returns:
        :class:`ArrayFrame` ``(frame, labels, id_col, time_col, feature_cols,
        target_cols)``; ``frame, labels = from_arrays(X, y)`` unpacks the first two, and
        ``vlrnn.pack_and_train(out.frame, **out.train_kwargs)`` trains on it.

    Raises:
        ValueError: naming the series (position and id), step and column at fault:
            wrong number of dimensions, series with 0 steps, differing feature counts,
            NaN/inf, non-numeric values, labels or targets that do not match the series.
        TypeError: ``arrays`` or ``labels`` that are not a list/array of series.

    >>> import numpy as np
    >>> from vlrnn.data import from_arrays
    >>> frame, labels = from_arrays([np.zeros((4, 2)), np.ones((3, 2))], labels=["a", "b"])
    >>> list(frame.columns), len(frame), list(labels)
    (['id', 't', 'f0', 'f1'], 7, ['a', 'b'])
    """
    if not isinstance(id_col, str) or not isinstance(time_col, str) or id_col == time_col:
        raise ValueError(f"id_col and time_col must be two different column names, got "
                         f"{id_col!r} and {time_col!r}")
    series = _as_series_list(arrays, "arrays", channels_first)
    n = len(series)
    if n == 0:
        raise ValueError("arrays is empty: no series to load")
    id_list = list(range(n)) if ids is None else _check_ids(ids, n, id_col)
    mats = [_to_2d(a, i, id_list, "arrays", channels_first) for i, a in enumerate(series)]

    widths = [m.shape[1] for m in mats]
    if len(set(widths)) > 1:
        odd = next(i for i, w in enumerate(widths) if w != widths[0])
        hint = ""
        if not channels_first and len({m.shape[0] for m in mats}) == 1:
            hint = (f"; all series have {mats[0].shape[0]} rows, so the arrays may be "
                    "(F, T_i), channels first as aeon/sktime load them: pass "
                    "channels_first=True")
        raise ValueError(f"arrays: series must all have the same number of features F; "
                         f"{_name(0, id_list)} has {widths[0]} but {_name(odd, id_list)} has "
                         f"{widths[odd]} (arrays are read as (T_i, F){hint})")
    feat = _names(feature_names, widths[0], "f", "feature_names")
    for i, m in enumerate(mats):
        _check_nonfinite(m, i, id_list, feat, "arrays", allow_nan)

    tgt_mats: List[np.ndarray] = []
    tgt: List[str] = []
    if targets is not None:
        t_series = _as_series_list(targets, "targets", False)
        if len(t_series) != n:
            raise ValueError(f"targets has {len(t_series)} entries for {n} series; expected "
                             "one per-step target array per series")
        tgt_mats = [_to_2d(a, i, id_list, "targets", False) for i, a in enumerate(t_series)]
        for i, (m, y) in enumerate(zip(mats, tgt_mats)):
            if y.shape[0] != m.shape[0]:
                raise ValueError(f"targets: {_name(i, id_list)} has {y.shape[0]} steps but its "
                                 f"features have {m.shape[0]}; expected one target row per step")
            if y.shape[1] != tgt_mats[0].shape[1]:
                raise ValueError(f"targets: series must all have the same number of target "
                                 f"columns; {_name(0, id_list)} has {tgt_mats[0].shape[1]}, "
                                 f"{_name(i, id_list)} has {y.shape[1]}")
        tgt = _names(target_names, tgt_mats[0].shape[1], "target", "target_names")
        for i, y in enumerate(tgt_mats):
            _check_nonfinite(y, i, id_list, tgt, "targets", allow_nan=True)   # NaN = missing
    elif target_names is not None:
        raise ValueError("target_names given without targets")

    clash = [c for c in (id_col, time_col) if c in feat or c in tgt]
    both = [c for c in feat if c in tgt]
    if clash or both:
        raise ValueError(f"column names must differ: {clash or both} is used twice "
                         f"(id {id_col!r}, time {time_col!r}, features {feat}, targets {tgt})")

    label_series = None if labels is None else _check_labels(labels, n, id_list, id_col)

    lengths = np.array([m.shape[0] for m in mats])
    id_values = np.empty(n, dtype=object)
    id_values[:] = id_list
    columns = {id_col: np.repeat(id_values, lengths) if ids is not None
               else np.repeat(np.arange(n), lengths),
               time_col: np.concatenate([np.arange(T) for T in lengths])}
    x_all = np.concatenate(mats)
    for j, c in enumerate(feat):
        columns[c] = x_all[:, j]
    if tgt:
        y_all = np.concatenate(tgt_mats)
        for j, c in enumerate(tgt):
            columns[c] = y_all[:, j]
    frame = pd.DataFrame(columns)
    if ids is not None:
        # ids of one plain type (ints, strings) get that column dtype, not object
        frame[id_col] = frame[id_col].infer_objects()
    return ArrayFrame(frame, label_series, id_col, time_col, feat, tgt)
