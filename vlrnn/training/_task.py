"""The task a model was trained for, as one frozen value: :class:`Task`.

What to predict (a class or a value, at every step or once per series, or the next
``horizon`` steps), from which columns, with which classes and scalers, and what the
naive baselines of ``evaluate`` need from the training series. ``pack_and_train``
builds it once (:func:`describe_task`, then :meth:`Task.fitted` after the split);
losses, metrics, baselines, ``predict``, ``forecast`` and ``TrainedModel.save``/``load``
read it. It is saved as plain values (:meth:`Task.to_dict`; the scalers' tensors
beside them), so a saved model loads with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pandas as pd

from ._task_scaling import Scalers
from ._tasks import TASKS, ClassCodes, check_task, infer_kind, series_labels

__all__ = ["LEVELS", "Task", "describe_task", "split_config"]

#: where the target lives: one per step (``"step"``) or one per series (``"series"``)
LEVELS = ("step", "series")


def _int_or_none(value: Any, name: str, least: int) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
        raise ValueError(f"{name} must be an int >= {least} or None, got {value!r}")
    return int(value)


def _names(value: Any, name: str) -> Tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise TypeError(f"Task.{name} must be a list or tuple of column names, got {value!r}")
    bad = [v for v in value if not isinstance(v, str) or not v]
    if bad:
        raise TypeError(f"Task.{name} must hold non-empty strings, got {bad!r}")
    if len(set(value)) != len(value):
        raise ValueError(f"Task.{name} names a column twice: {list(value)}")
    return tuple(value)


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


@dataclass(frozen=True)
class Task:
    """What a model predicts and from what; frozen (change it with :meth:`replace`).

    Attributes:
        kind: ``"classification"`` or ``"regression"``.
        level: ``"step"`` (a target at every step, or forecasts) or ``"series"`` (one
            label per series).
        id_col, time_col: the series id and time columns of the frames it reads.
        target_cols: the target columns (``()`` for series tasks).
        feature_cols: the input columns; forecasts also read the targets' own past
            values after them (:attr:`input_cols`).
        horizon: forecast this many steps ahead (``None``: not a forecast).
        season: the season length of a forecast's series (``None``: none known); gives
            the seasonal naive baseline in ``evaluate``.
        classes: class labels in id order (classification), else ``None``.
        label_col: the column the series labels were read from, if they came from one.
        majority_class: the training series' most common class (classification).
        mean_label: the training series' mean label in target units (series regression).
        scalers: the fitted :class:`~vlrnn.training._task_scaling.Scalers`.

    >>> t = Task("regression", "step", "id", "t", ("y",), ("u",), horizon=3)
    >>> t.input_cols, t.n_outputs
    (('u', 'y'), 3)
    >>> Task.from_dict(t.to_dict()) == t
    True
    """

    kind: str
    level: str
    id_col: str
    time_col: str
    target_cols: Tuple[str, ...] = ()
    feature_cols: Tuple[str, ...] = ()
    horizon: Optional[int] = None
    season: Optional[int] = None
    classes: Optional[Tuple[Any, ...]] = None
    label_col: Optional[str] = None
    majority_class: Any = None
    mean_label: Optional[float] = None
    scalers: Scalers = field(default_factory=lambda: Scalers(None, None, None), hash=False)

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        if self.kind not in TASKS:
            raise ValueError(f"Task.kind must be one of {TASKS}, got {self.kind!r}")
        if self.level not in LEVELS:
            raise ValueError(f"Task.level must be one of {LEVELS}, got {self.level!r}")
        for name in ("id_col", "time_col"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise TypeError(f"Task.{name} must be a column name (str), got "
                                f"{getattr(self, name)!r}")
        if self.id_col == self.time_col:
            raise ValueError(f"Task.id_col and time_col are the same column {self.id_col!r}")
        put("target_cols", _names(self.target_cols, "target_cols"))
        put("feature_cols", _names(self.feature_cols, "feature_cols"))
        put("horizon", _int_or_none(self.horizon, "horizon", 1))
        put("season", _int_or_none(self.season, "season", 2))
        taken = {self.id_col, self.time_col, *self.target_cols}
        overlap = [c for c in self.feature_cols if c in taken]
        if overlap:
            raise ValueError(f"column(s) {overlap} are targets (or id/time) and cannot also "
                             "be features" + ("; with horizon= the targets' past values are "
                                              "inputs already" if self.horizon else ""))
        if not self.feature_cols and not self.horizon:
            raise ValueError("a task needs input columns: no feature_cols and no horizon "
                             "(whose targets' past values would be the inputs)")
        if self.level == "series":
            if self.target_cols:
                raise ValueError("a series task has no target_cols (one label per series, "
                                 f"from series_target), got {list(self.target_cols)}")
            if self.horizon is not None:
                raise ValueError("horizon= forecasts target_cols; it does not apply to "
                                 "series tasks")
        else:
            if not self.target_cols:
                raise ValueError("a per-step task needs target_cols (or series_target= for "
                                 "one label per series)")
            if self.label_col is not None:
                raise ValueError("label_col belongs to series tasks only")
        if self.season is not None and self.horizon is None:
            raise ValueError("season= gives forecasts a seasonal naive baseline; it needs "
                             "horizon=")
        if self.kind == "classification":
            if self.horizon is not None:
                raise ValueError("horizon= forecasts numeric targets; a classification "
                                 "task has classes")
            if self.level == "step" and len(self.target_cols) != 1:
                raise ValueError(f"classification takes one target column, got "
                                 f"{list(self.target_cols)}")
            if self.classes is None or len(self.classes) < 2:
                raise ValueError(f"a classification task needs at least two classes, got "
                                 f"{self.classes!r}")
            put("classes", tuple(_plain(c) for c in self.classes))
            if len(set(self.classes)) != len(self.classes):
                raise ValueError(f"Task.classes repeats a class: {list(self.classes)}")
            put("majority_class", _plain(self.majority_class))
            if self.majority_class is not None and self.majority_class not in self.classes:
                raise ValueError(f"majority_class {self.majority_class!r} is not one of the "
                                 f"classes {list(self.classes)}")
        else:
            if self.classes is not None or self.majority_class is not None:
                raise ValueError("a regression task has no classes (nor majority_class)")
        if self.mean_label is not None:
            if self.kind != "regression" or self.level != "series":
                raise ValueError("mean_label is the baseline of series regression only")
            put("mean_label", float(self.mean_label))
        if not isinstance(self.scalers, Scalers):
            raise TypeError(f"Task.scalers must be a Scalers, got {type(self.scalers).__name__}")

    # -- derived ----------------------------------------------------------------------
    @property
    def input_cols(self) -> Tuple[str, ...]:
        """Columns the model reads: the features, then (forecasts) the targets' values."""
        return self.feature_cols + (self.target_cols if self.horizon else ())

    @property
    def n_outputs(self) -> int:
        """Output units of the model's head: one per class, else one per target and step
        ahead (one for series regression)."""
        if self.classes is not None:
            return len(self.classes)
        return max(len(self.target_cols) * (self.horizon or 1), 1)

    @property
    def target_inputs(self) -> List[int]:
        """Positions of the targets' own values among the raw inputs (forecasts)."""
        n = len(self.feature_cols)
        return [n + j for j in range(len(self.target_cols))] if self.horizon else []

    @property
    def scale(self) -> Optional[str]:
        """The scale mode of the fitted scalers (``"global"``, ``"series"`` or ``None``)."""
        return self.scalers.mode

    def codes(self) -> Optional[ClassCodes]:
        """Class labels <-> ids (classification), else ``None``."""
        return None if self.classes is None else ClassCodes(list(self.classes))

    def replace(self, **changes: Any) -> "Task":
        """A copy with some fields changed (checked again)."""
        return dataclasses.replace(self, **changes)

    def fitted(self, train: Any, scalers: Scalers) -> "Task":
        """This task with its scalers and the baselines ``evaluate`` reads from the raw
        training series ``train`` (a task dataset: class ids or target values)."""
        majority, mean = None, None
        if self.classes is not None:
            ys = [y[:1, 0] if self.level == "series" else y[:, 0] for y in train.ys]
            c = np.concatenate([y.double().numpy() for y in ys])
            counts = np.bincount(c[np.isfinite(c)].astype(int), minlength=len(self.classes))
            majority = self.classes[int(counts.argmax())]
        elif self.level == "series":
            mean = float(np.mean([float(y[0, 0]) for y in train.ys]))
        return self.replace(scalers=scalers, majority_class=majority, mean_label=mean)

    # -- plain values -----------------------------------------------------------------
    def describe(self) -> Dict[str, Any]:
        """The fields as plain values (lists, not tuples), without the scalers' tensors:
        the scale mode under ``"scale"`` and the forecast anchor under ``"anchor"``."""
        out: Dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "scalers":
                continue
            out[f.name] = list(v) if isinstance(v, tuple) else v
        out["scale"] = self.scale
        out["anchor"] = self.scalers.anchor
        return out

    def to_dict(self) -> Dict[str, Any]:
        """Plain values that :meth:`from_dict` reads back: :meth:`describe` with the
        scalers' state (tensors) in place of the mode."""
        out = self.describe()
        del out["scale"], out["anchor"]
        out["scalers"] = self.scalers.state_dict()
        return out

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "Task":
        """The task :meth:`to_dict` wrote; unknown or missing keys are errors."""
        if not isinstance(data, dict):
            raise TypeError(f"Task.from_dict expects a dict, got {type(data).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ValueError(f"a saved task has unknown field(s) {unknown}; it has "
                             f"{sorted(names)}")
        missing = [n for n in ("kind", "level", "id_col", "time_col") if n not in data]
        if missing:
            raise ValueError(f"a saved task lacks the field(s) {missing}")
        kw = dict(data)
        for n in ("target_cols", "feature_cols", "classes"):
            if isinstance(kw.get(n), list):
                kw[n] = tuple(kw[n])
        if "scalers" in kw:
            kw["scalers"] = Scalers.from_state_dict(kw["scalers"])
        return cls(**kw)


def split_config(config: Dict[str, Any], scalers: Scalers
                 ) -> Tuple[Task, Dict[str, Any]]:
    """``(task, settings)`` of one flat dict laid out as ``TrainedModel.config`` (the
    task's fields, ``"task"`` its kind, and the model settings), with ``scalers``."""
    names = {f.name for f in dataclasses.fields(Task)} - {"scalers"}
    kw = {k: config[k] for k in names if k in config}
    kw.setdefault("kind", config.get("task"))
    for n in ("target_cols", "feature_cols", "classes"):
        if isinstance(kw.get(n), list):
            kw[n] = tuple(kw[n])
    settings = {k: v for k, v in config.items() if k not in names | {"task", "scale", "anchor"}}
    return Task(scalers=scalers, **kw), settings


def _columns(cols: Any) -> Optional[List[str]]:
    if cols is None:
        return None
    return [cols] if isinstance(cols, str) else list(cols)


def describe_task(df: pd.DataFrame, *, id_col: str, time_col: str, target_cols: Any,
                  feature_cols: Any, series_target: Any, task: Optional[str],
                  horizon: Optional[int], season: Optional[int] = None) -> Task:
    """The task ``pack_and_train``'s arguments ask for, checked against ``df`` with
    clear errors (scalers and baselines are fitted later: :meth:`Task.fitted`)."""
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"pack_and_train expects a pandas DataFrame, got {type(df).__name__}")
    check_task(task)
    horizon = _int_or_none(horizon, "horizon", 1)
    targets, features = _columns(target_cols), _columns(feature_cols)
    for c in (id_col, time_col):
        if c not in df.columns:
            raise ValueError(f"column {c!r} not in the frame; it has columns "
                             f"{list(df.columns)}")
    classes = None
    if series_target is not None:
        if targets:
            raise ValueError("pass either target_cols (a target at every step) or "
                             "series_target (one label per series), not both")
        if horizon is not None:
            raise ValueError("horizon= forecasts target_cols; it does not apply to "
                             "series_target")
        level, label_col = "series", series_target if isinstance(series_target, str) else None
        taken = {id_col, time_col, label_col}
        labels = series_labels(df, id_col, series_target, pd.unique(df[id_col]))
        kind = infer_kind(labels, "series_target", task)
        if kind == "classification":
            classes = ClassCodes.fit(labels, "series_target").classes
        targets = []
    else:
        if not targets:
            raise ValueError("name the target: target_cols='col' (a value or class at every "
                             "step, or what to forecast with horizon=) or series_target= "
                             "(one label per series)")
        level, label_col, taken = "step", None, {id_col, time_col, *targets}
        missing = [c for c in targets if c not in df.columns]
        if missing:
            raise ValueError(f"target column(s) {missing} not in the frame; it has columns "
                             f"{list(df.columns)}")
        kinds = {infer_kind(df[c], f"target column {c!r}", task) for c in targets}
        if len(kinds) > 1:
            raise ValueError(f"target columns {targets} mix classes and numbers; train "
                             "one task at a time")
        kind = kinds.pop()
        if kind == "classification" and len(targets) != 1:
            raise ValueError(f"classification takes one target column, got {targets}")
        if kind == "classification" and horizon is not None:
            raise ValueError("horizon= forecasts numeric targets; target column "
                             f"{targets[0]!r} holds classes")
        if kind == "classification":
            classes = ClassCodes.fit(df[targets[0]], f"target column {targets[0]!r}").classes
    if features is None:
        features = [c for c in df.columns if c not in taken]
    if not features and not horizon:
        raise ValueError(f"no feature columns: the frame has only {list(df.columns)}")
    return Task(kind, level, id_col, time_col, tuple(targets), tuple(features),
                horizon=horizon, season=season,
                classes=None if classes is None else tuple(classes), label_col=label_col)
