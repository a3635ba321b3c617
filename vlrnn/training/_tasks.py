"""What a pandas user asks for: which task, which classes, which label per series.

``infer_kind`` reads the task from the values' dtype; ``ClassCodes`` maps class labels
to ids and back; ``series_labels`` turns ``series_target`` (a Series/mapping by id, or
a column constant within each series) into one label per series id. Every error names
the column or the series at fault.
"""
from __future__ import annotations

import warnings
from typing import Any, List, Mapping, Optional, Sequence, Union

import numpy as np
import pandas as pd
from pandas.api import types as pdt

from .._common import show
from ..data import DataWarning

TASKS = ("classification", "regression")
_show = show  # (one rule for listing offending values: vlrnn._common)


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def check_task(task: Optional[str]) -> Optional[str]:
    if task is not None and task not in TASKS:
        raise ValueError(f"task must be None (inferred), 'classification' or 'regression', "
                         f"got {task!r}")
    return task


def infer_kind(values: pd.Series, what: str, task: Optional[str]) -> str:
    """``"classification"`` or ``"regression"`` for the target ``values``.

    Text, categorical and bool mean classification, floats regression; integers are
    ambiguous (class ids or counts) and need ``task=``. ``what`` names the values in
    messages (e.g. ``"target column 'y'"``).
    """
    task = check_task(task)
    text = (pdt.is_object_dtype(values) or pdt.is_string_dtype(values)
            or isinstance(values.dtype, pd.CategoricalDtype) or pdt.is_bool_dtype(values))
    if task == "regression" and text:
        raise ValueError(f"task='regression' but {what} holds {values.dtype} values; "
                         "regression needs numbers (map them first) or use "
                         "task='classification'")
    if task is not None:
        return task
    if text:
        return "classification"
    if pdt.is_float_dtype(values):
        return "regression"
    if pdt.is_integer_dtype(values):
        raise ValueError(f"{what} holds integers ({values.dtype}): class ids or amounts? "
                         "Pass task='classification' or task='regression'")
    raise ValueError(f"{what} has dtype {values.dtype}; expected text, categories or bool "
                     "(classification) or floats (regression)")


class ClassCodes:
    """Class labels <-> ids ``0..C-1`` (labels sorted, or in categorical order)."""

    def __init__(self, classes: Sequence[Any]):
        self.classes = [_plain(c) for c in classes]
        self._ids = {c: i for i, c in enumerate(self.classes)}

    @classmethod
    def fit(cls, values: pd.Series, what: str) -> "ClassCodes":
        seen = values.dropna()
        if isinstance(values.dtype, pd.CategoricalDtype):
            present = set(seen.astype(object))
            classes = [c for c in values.cat.categories if c in present]
        else:
            uniq = list(pd.unique(seen.astype(object)))
            try:
                classes = sorted(uniq)
            except TypeError:
                classes = sorted(uniq, key=str)
        if len(classes) < 2:
            raise ValueError(f"{what} has a single class {_show(classes)}; classification "
                             "needs at least two classes")
        return cls(classes)

    def encode(self, values: pd.Series, what: str, ids: Optional[pd.Series] = None
               ) -> np.ndarray:
        """Float class ids, NaN where ``values`` is missing; a label not seen in training
        is an error naming it (and the series, given ``ids`` aligned with ``values``)."""
        miss = values.isna().to_numpy()
        obj = values.astype(object).to_numpy()
        out = np.full(len(obj), np.nan)
        unknown = []
        for j, v in enumerate(obj):
            if miss[j]:
                continue
            k = self._ids.get(_plain(v))
            if k is None:
                unknown.append(j)
            else:
                out[j] = k
        if unknown:
            labels = list(dict.fromkeys(_plain(obj[j]) for j in unknown))
            where = ""
            if ids is not None:
                where = f" in series {_show(list(dict.fromkeys(ids.iloc[unknown])))}"
            raise ValueError(f"{what} has class(es) {_show(labels)}{where} that the model "
                             f"was not trained on; it knows {_show(self.classes)}")
        return out

    def decode(self, codes: np.ndarray) -> List[Any]:
        return [self.classes[int(c)] for c in codes]


def series_labels(df: pd.DataFrame, id_col: str, series_target: Any,
                  ids: Sequence[Any]) -> pd.Series:
    """One label per series id in ``ids`` (a ``pd.Series`` indexed by those ids).

    ``series_target``: a ``pd.Series`` or mapping indexed by series id, or the name of
    a column of ``df`` whose value is the same on every row of a series. Errors: a
    column that varies within a series, a series without a label (missing or NaN).
    """
    if isinstance(series_target, str):
        col = series_target
        if col not in df.columns:
            raise ValueError(f"series_target column {col!r} is not in the frame; it has "
                             f"columns {list(df.columns)}")
        per = df.groupby(id_col, sort=False, dropna=False)[col]
        n_values = per.nunique(dropna=True)  # rows without a value do not disagree
        varying = list(n_values.index[n_values > 1])
        if varying:
            raise ValueError(f"series_target column {col!r} is not constant within "
                             f"series {_show(varying)}; it must hold one label per series "
                             "(pass a Series indexed by id instead)")
        labels = per.first().reindex(list(ids))  # first non-missing value of each series
        what = f"series_target column {col!r}"
    else:
        if isinstance(series_target, Mapping) and not isinstance(series_target, pd.Series):
            series_target = pd.Series(dict(series_target))
        if not isinstance(series_target, pd.Series):
            raise TypeError("series_target must be a pandas Series (or dict) indexed by "
                            "series id, or the name of a column constant within each series; "
                            f"got {type(series_target).__name__}")
        if series_target.index.has_duplicates:
            dup = series_target.index[series_target.index.duplicated()].unique()
            raise ValueError(f"series_target has several labels for series {_show(dup)}")
        extra = series_target.index.difference(pd.Index(list(ids)), sort=False)
        if len(extra):
            warnings.warn(f"series_target has labels for {len(extra)} id(s) that are not in "
                          f"the frame's id column {id_col!r}: {_show(list(extra))}; they are "
                          "not used", DataWarning, stacklevel=4)
        labels = series_target.reindex(list(ids))
        what = "series_target"
    labels.index.name = id_col
    missing = list(labels.index[labels.isna().to_numpy()])
    if missing:
        raise ValueError(f"{what} has no label for series {_show(missing)} "
                         f"(id column {id_col!r}); every series needs one")
    return labels


def regular_step(times: pd.Index, sid: Any, time_col: str) -> Any:
    """The one step between consecutive time stamps of a series (``Timedelta`` for
    datetimes); an error naming the series if the steps differ or there are too few."""
    if len(times) < 2:
        raise ValueError(f"series {sid!r} has a single time stamp in {time_col!r}; "
                         "forecasting needs two to know the step to extend it by")
    diffs = pd.Index(times[1:]) - pd.Index(times[:-1])
    first = diffs[0]
    if pdt.is_float_dtype(diffs):
        same = np.allclose(np.asarray(diffs, dtype=float), float(first), rtol=1e-9, atol=0)
    else:
        same = bool((diffs == first).all())
    if not same:
        values = sorted(set(_plain(d) for d in diffs), key=str)
        raise ValueError(f"time column {time_col!r} of series {sid!r} is too irregular to "
                         f"extend for forecasting: its steps are {_show(values)}; forecast "
                         "needs one regular step (resample the series first)")
    return first


def extend_times(times: pd.Index, step: Any, h: int) -> List[Any]:
    """The ``h`` time stamps after ``times[-1]``, ``step`` apart."""
    last = times[-1]
    return [_plain(last + step * (k + 1)) for k in range(h)]


Labels = Union[pd.Series, Mapping[Any, Any], str, None]
__all__ = ["ClassCodes", "Labels", "TASKS", "check_task", "extend_times", "infer_kind",
           "regular_step", "series_labels"]
