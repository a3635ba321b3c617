"""The checks ``from_dataframe`` runs on a long-format frame, and ``DataWarning``.

A long-format frame has one row per (series id, time step).  Every check below names the
column, the series id and the time stamp at fault; every row that is dropped is counted in
a ``DataWarning``.  :func:`vlrnn.data.from_dataframe` runs them in this order: arguments,
columns, column dtypes, missing ids/times, duplicate (id, time) rows, non-finite values,
short series, regular grid.
"""
from __future__ import annotations

import warnings
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd
import torch
from pandas.api import types as pdt

from .._common import SHOW, show

Columns = Union[str, Sequence[str]]

_NONFINITE = ("raise", "drop", "ffill")
_SHORT = ("raise", "drop")
_SHOW = SHOW  # how many offending ids / time stamps an error message lists


class DataWarning(UserWarning):
    """Rows were dropped or values filled while loading a frame.

    >>> import warnings
    >>> import pandas as pd
    >>> from vlrnn.data import DataWarning, from_dataframe
    >>> df = pd.DataFrame({"id": [0, 0, 0, 1], "t": [0, 1, 2, 0], "x": [1.0, 2, 3, 4],
    ...                    "y": [0.0, 1, 2, 3]})
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     ds = from_dataframe(df, id_col="id", time_col="t", target_cols="y",
    ...                         short_series="drop")             # series 1 has one step
    >>> len(ds), any(issubclass(w.category, DataWarning) for w in caught)
    (1, True)
    """


def _as_list(cols: Optional[Columns], arg: str) -> Optional[List[str]]:
    if cols is None:
        return None
    if isinstance(cols, str):
        return [cols]
    try:
        out = list(cols)
    except TypeError:
        raise TypeError(f"{arg} must be a column name or a list of column names, "
                        f"got {type(cols).__name__}") from None
    if len(set(out)) != len(out):
        dup = sorted({c for c in out if out.count(c) > 1}, key=str)
        raise ValueError(f"{arg} lists column(s) {dup} more than once")
    return out


def _fmt(v: Any) -> str:
    """An id or time stamp as the user would write it: 'a', 3, 2024-01-01 00:00:00."""
    v = _scalar(v)
    return repr(v) if isinstance(v, str) else str(v)


def _show(items: Sequence[Any], n: int = _SHOW) -> str:
    return show(items, n, fmt=_fmt)


def _is_numeric(s: pd.Series) -> bool:
    # bool counts as 0/1; complex has no order and no place in a float tensor.
    return pdt.is_bool_dtype(s) or (pdt.is_numeric_dtype(s) and not pdt.is_complex_dtype(s))


def _non_numeric_error(col: str, s: pd.Series, role: str) -> ValueError:
    fix = ("map it to numbers first (e.g. df[col].map({...}) or pd.to_numeric), "
           "pass it in categorical=[...] to one-hot encode it, or list feature_cols "
           "explicitly to leave it out" if role == "feature" else
           "map it to numbers first (e.g. df[col].map({...}) or pd.to_numeric)")
    return ValueError(f"{role} column {col!r} has non-numeric dtype {s.dtype}; "
                      f"{role}s must be numeric (bool counts as 0/1): {fix}")


def _check_args(df: Any, on_nonfinite: str, short_series: str, min_length: int,
                dtype: torch.dtype) -> None:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"from_dataframe expects a pandas DataFrame, got {type(df).__name__}")
    if on_nonfinite not in _NONFINITE:
        raise ValueError(f"on_nonfinite must be one of {_NONFINITE}, got {on_nonfinite!r}")
    if short_series not in _SHORT:
        raise ValueError(f"short_series must be one of {_SHORT}, got {short_series!r}")
    if isinstance(min_length, bool) or not isinstance(min_length, (int, np.integer)) \
            or min_length < 1:
        raise ValueError(f"min_length must be an int >= 1, got {min_length!r}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating torch dtype, got {dtype!r}")


def _resolve_columns(df: pd.DataFrame, id_col: str, time_col: str, target_cols: Columns,
                     feature_cols: Optional[Columns], categorical: Any
                     ) -> Tuple[List[str], List[str], Dict[str, Optional[list]]]:
    """Check that every named column exists and roles do not overlap; infer features."""
    targets = _as_list(target_cols, "target_cols")
    if not targets:
        raise ValueError("target_cols is empty; name at least one target column")
    features = _as_list(feature_cols, "feature_cols")
    if isinstance(categorical, Mapping):
        cats: Dict[str, Optional[list]] = {c: list(v) for c, v in categorical.items()}
    else:
        cats = {c: None for c in (_as_list(categorical, "categorical") or [])}
    if id_col == time_col:
        raise ValueError(f"id_col and time_col are both {id_col!r}; they must differ")

    named = [id_col, time_col, *targets, *(features or []), *cats]
    missing = [c for c in dict.fromkeys(named) if c not in df.columns]
    if missing:
        raise ValueError(f"column(s) {missing} not in the frame; it has columns "
                         f"{list(df.columns)}")
    dup_labels = [c for c in dict.fromkeys(named) if (df.columns == c).sum() > 1]
    if dup_labels:
        raise ValueError(f"the frame has several columns named {dup_labels}; "
                         "rename them so each name is unique")

    for role, cols in (("target", targets), ("feature", features or []),
                       ("categorical", list(cats))):
        for key in (id_col, time_col):
            if key in cols:
                raise ValueError(f"column {key!r} is the id/time column and cannot also be "
                                 f"a {role} column")
    both = [c for c in targets if c in (features or []) or c in cats]
    if both:
        raise ValueError(f"column(s) {both} are both targets and features; the model would "
                         "see its own target (add a lagged copy as a feature instead)")
    both = [c for c in (features or []) if c in cats]
    if both:
        raise ValueError(f"column(s) {both} are in both feature_cols and categorical; "
                         "list each column in one of them")

    if features is None:
        # Every other column is a feature; a non-numeric one is refused rather than
        # silently skipped, so nothing the user expected to feed the model goes missing.
        taken = {id_col, time_col, *targets, *cats}
        features = [c for c in df.columns if c not in taken]
    for c in targets:
        if not _is_numeric(df[c]):
            raise _non_numeric_error(c, df[c], "target")
    for c in features:
        if not _is_numeric(df[c]):
            raise _non_numeric_error(c, df[c], "feature")
    if not features and not cats:
        raise ValueError(f"no feature columns: the frame has only {list(df.columns)} "
                         f"(id {id_col!r}, time {time_col!r}, targets {targets}); "
                         "add at least one feature column")
    return targets, features, cats


def _check_time_dtype(df: pd.DataFrame, time_col: str) -> None:
    s = df[time_col]
    ok = (pdt.is_datetime64_any_dtype(s) or pdt.is_timedelta64_dtype(s)
          or (_is_numeric(s) and not pdt.is_bool_dtype(s)))
    if not ok:
        raise ValueError(f"time column {time_col!r} has dtype {s.dtype}; expected numbers or "
                         "datetimes (convert with pd.to_datetime or pd.to_numeric first)")


def _check_missing_keys(df: pd.DataFrame, id_col: str, time_col: str) -> None:
    bad = df[id_col].isna().to_numpy()
    if bad.any():
        raise ValueError(f"id column {id_col!r} has {int(bad.sum())} missing value(s) "
                         f"(NaN/None), at index label(s) {_show(df.index[bad])}; every row "
                         "needs a series id")
    bad = df[time_col].isna().to_numpy()
    if bad.any():
        ids = pd.unique(df.loc[bad, id_col])
        raise ValueError(f"time column {time_col!r} has {int(bad.sum())} missing value(s) "
                         f"(NaN/NaT), in series id(s) {_show(ids)} at index label(s) "
                         f"{_show(df.index[bad])}; every row needs a time stamp")
    if pdt.is_float_dtype(df[time_col]):
        bad = ~np.isfinite(df[time_col].to_numpy())
        if bad.any():
            ids = pd.unique(df.loc[bad, id_col])
            raise ValueError(f"time column {time_col!r} has {int(bad.sum())} infinite "
                             f"value(s), in series id(s) {_show(ids)} at index label(s) "
                             f"{_show(df.index[bad])}; time stamps must be finite")


def _sort(df: pd.DataFrame, id_col: str, time_col: str) -> pd.DataFrame:
    try:
        # Multi-key sort is a stable lexsort: ties keep their input order.
        return df.sort_values([id_col, time_col], kind="stable")
    except TypeError as err:
        raise ValueError(f"cannot sort id column {id_col!r} (dtype {df[id_col].dtype}): its "
                         f"values are not mutually comparable ({err}); use ids of one type"
                         ) from None


def _check_duplicates(df: pd.DataFrame, id_col: str, time_col: str) -> None:
    dup = df.duplicated([id_col, time_col], keep=False).to_numpy()
    if dup.any():
        pairs = list(dict.fromkeys(zip(df.loc[dup, id_col], df.loc[dup, time_col])))
        shown = ", ".join(f"({_fmt(i)}, {_fmt(t)})" for i, t in pairs[:_SHOW])
        more = f", ... ({len(pairs)} pairs in all)" if len(pairs) > _SHOW else ""
        raise ValueError(f"{int(dup.sum())} rows share an ({id_col!r}, {time_col!r}) pair "
                         f"with another row; first duplicates (id, time): {shown}{more}. "
                         "Aggregate or drop them first (e.g. "
                         f"df.drop_duplicates([{id_col!r}, {time_col!r}]))")


def _where(df: pd.DataFrame, rows: np.ndarray, id_col: str, time_col: str) -> str:
    r = int(np.flatnonzero(rows)[0])
    i, t = df[id_col].iloc[r], df[time_col].iloc[r]
    return f"first at {id_col}={_fmt(i)}, {time_col}={_fmt(t)}"


def _handle_nonfinite(df: pd.DataFrame, values: np.ndarray, cols: List[str], codes: np.ndarray,
                      mode: str, id_col: str, time_col: str
                      ) -> Tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Apply ``on_nonfinite`` to the ``(N, C)`` value matrix of columns ``cols``."""
    bad = ~np.isfinite(values)
    if not bad.any():
        return df, values, codes
    bad_cols = [j for j in range(len(cols)) if bad[:, j].any()]
    detail = "; ".join(f"column {cols[j]!r}: {int(bad[:, j].sum())} row(s), "
                       f"{_where(df, bad[:, j], id_col, time_col)}" for j in bad_cols)
    if mode == "raise":
        raise ValueError(f"non-finite values (NaN or inf) in {detail}. Clean them, or pass "
                         "on_nonfinite='drop' to drop those rows or 'ffill' to forward-fill "
                         "within each series")
    if mode == "drop":
        keep = ~bad.any(axis=1)
        if not keep.any():
            raise ValueError(f"on_nonfinite='drop': every row has a non-finite value, "
                             f"nothing is left ({detail})")
        gone = np.setdiff1d(codes, codes[keep])  # series that lose every row
        lost = ""
        if gone.size:
            first = np.searchsorted(codes, gone)
            lost = (f"; {gone.size} series lost all their rows: id(s) "
                    f"{_show([df[id_col].iloc[r] for r in first])}")
        warnings.warn(f"on_nonfinite='drop': dropped {int((~keep).sum())} of {len(keep)} "
                      f"rows with NaN/inf ({detail}){lost}", DataWarning, stacklevel=3)
        return df[keep], values[keep], codes[keep]
    # ffill: within each series only, so one series never leaks into the next.
    filled = pd.DataFrame(np.where(bad, np.nan, values)).groupby(codes).ffill().to_numpy()
    left = np.isnan(filled)
    if left.any():
        j = int(np.flatnonzero(left.any(axis=0))[0])
        raise ValueError(f"on_nonfinite='ffill': column {cols[j]!r} has {int(left[:, j].sum())} "
                         "leading non-finite value(s) with nothing before them to fill from, "
                         f"{_where(df, left[:, j], id_col, time_col)}; drop those rows "
                         "(on_nonfinite='drop') or fill them yourself")
    warnings.warn(f"on_nonfinite='ffill': forward-filled {int(bad.sum())} non-finite "
                  f"value(s) ({detail})", DataWarning, stacklevel=3)
    return df, filled, codes


def _handle_short(df: pd.DataFrame, values: np.ndarray, codes: np.ndarray, min_length: int,
                  mode: str, id_col: str) -> Tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    counts = np.bincount(codes)
    short = np.flatnonzero((counts > 0) & (counts < min_length))
    if short.size == 0:
        return df, values, codes
    first = np.searchsorted(codes, short)  # codes are sorted: first row of each short series
    ids = [df[id_col].iloc[r] for r in first]
    desc = ", ".join(f"id {_fmt(i)} ({counts[c]} row{'' if counts[c] == 1 else 's'})"
                     for i, c in zip(ids[:_SHOW], short[:_SHOW]))
    if len(ids) > _SHOW:
        desc += f", ... ({len(ids)} in all)"
    if mode == "raise":
        raise ValueError(f"{len(ids)} series (id column {id_col!r}) have fewer than "
                         f"min_length={min_length} rows: {desc}. Pass short_series='drop' "
                         "to drop them or lower min_length")
    keep = ~np.isin(codes, short)
    if not keep.any():
        raise ValueError(f"every series (id column {id_col!r}) has fewer than "
                         f"min_length={min_length} rows: {desc}; nothing is left")
    warnings.warn(f"short_series='drop': dropped {len(ids)} series (id column {id_col!r}) "
                  f"with fewer than {min_length} rows: {desc}", DataWarning, stacklevel=3)
    return df[keep], values[keep], codes[keep]


def _time_numbers(s: pd.Series) -> np.ndarray:
    """Time stamps as numbers whose differences are the steps (datetimes as int ticks)."""
    if pdt.is_datetime64_any_dtype(s) or pdt.is_timedelta64_dtype(s):
        return pd.Index(s).asi8
    if pdt.is_integer_dtype(s) and not pdt.is_extension_array_dtype(s):
        return s.to_numpy()
    return s.to_numpy(dtype=np.float64)


def _check_regular(df: pd.DataFrame, codes: np.ndarray, id_col: str, time_col: str) -> None:
    """Raise if some step of a series differs from that series' most common step."""
    t = _time_numbers(df[time_col])
    same = codes[1:] == codes[:-1]  # consecutive rows of one series
    d = (t[1:] - t[:-1])[same]
    if d.size == 0:
        return
    c = codes[1:][same]
    key = d
    if d.dtype.kind == "f":
        # Float time stamps (0.1, 0.2, 0.30000000000000004, ...): group steps to 10
        # significant digits so rounding noise does not count as a gap.
        mag = 10.0 ** np.floor(np.log10(np.abs(d)))
        key = np.round(d / mag, 9) * mag
    # Most common step per series (the smallest on ties).
    counts = pd.DataFrame({"c": c, "d": key}).groupby(["c", "d"]).size().reset_index(name="n")
    counts = counts.sort_values(["c", "n", "d"], ascending=[True, False, True])
    step = counts.drop_duplicates("c").set_index("c")["d"]
    expected = step.reindex(c).to_numpy()
    off = ~np.isclose(d, expected, rtol=1e-8, atol=0.0) if d.dtype.kind == "f" \
        else d != expected
    if not off.any():
        return
    pos = np.flatnonzero(same)          # row r: the step from row r to row r + 1
    times = df[time_col]
    by_series: Dict[int, List[int]] = {}
    for r in pos[off]:                  # the row before an irregular step: where a gap starts
        by_series.setdefault(int(codes[r]), []).append(int(r))
    parts = []
    for code, rows in list(by_series.items())[:_SHOW]:
        # Show the series' regular step in the time column's own units.
        r0 = int(pos[(c == code) & ~off][0]) if ((c == code) & ~off).any() else rows[0]
        stp = times.iloc[r0 + 1] - times.iloc[r0]
        parts.append(f"id {_fmt(df[id_col].iloc[rows[0]])} (step {stp}): gaps start after "
                     f"{time_col}={_show([times.iloc[r] for r in rows])}")
    more = f"; ... ({len(by_series)} series in all)" if len(by_series) > _SHOW else ""
    raise ValueError(f"time column {time_col!r} is not on a regular grid in "
                     f"{len(by_series)} series (id column {id_col!r}): " + "; ".join(parts)
                     + more + ". Resample or fill the missing steps, or pass "
                     "check_regular=False")


def _scalar(v: Any) -> Any:
    """numpy scalar -> plain Python value, so ids print and compare as the user wrote them."""
    return v.item() if isinstance(v, np.generic) and not isinstance(v, (np.datetime64,
                                                                        np.timedelta64)) else v
