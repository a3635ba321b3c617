"""One code path under the classifiers and regressors: series -> ``pack_and_train`` -> arrays.

The aeon and sktime adapters differ only in the framework's base class, tags and the
collection formats it hands to ``_fit``/``_predict``; each turns its format into a list
of ``N`` arrays of shape ``(n_channels, n_timepoints_i)`` (lengths may differ) and calls:

- :func:`train_options`: the estimator's constructor parameters -> keyword options of
  :func:`vlrnn.pack_and_train` (``None`` left out, so ``pack_and_train``'s own default
  applies; ``random_state`` becomes ``seed``);
- :func:`fit_series_model`: series + one label per series -> the
  :class:`~vlrnn.TrainedModel` that ``pack_and_train(frame, series_target=labels)``
  returns on the same data (:func:`vlrnn.data.from_arrays` builds the frame);
- :func:`predict_values`, :func:`predict_proba`: that model's ``predict`` as arrays in
  series order, probabilities with one column per class in the estimator's ``classes_``
  order.
"""
from __future__ import annotations

import importlib
import numbers
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd

from ..data import from_arrays
from ..training import TrainedModel, pack_and_train
from ..training._tasks import ClassCodes

__all__ = ["CLASSIFIER_OPTIONS", "FORECASTER_OPTIONS", "REGRESSOR_OPTIONS", "TEST_PARAMS",
           "as_series_list", "fit_series_model", "import_extra", "predict_proba",
           "predict_values", "train_options"]

#: constructor parameters of the regressors, in signature order: ``pack_and_train``'s
#: options (``clip_grad_norm`` ... ``progress`` are the ``vlrnn.Trainer`` options it
#: passes on), then ``train_options`` (a dict of any further ``pack_and_train`` keyword
#: options) and ``random_state`` (``seed``). Every default is ``None``: "whatever
#: ``pack_and_train`` does by default", so its defaults reach the estimators unchanged.
REGRESSOR_OPTIONS = ("cell", "hidden_size", "num_layers", "block_len", "batch_size",
                     "epochs", "lr", "val_fraction", "scale", "pool", "clip_grad_norm",
                     "early_stopping_patience", "device", "progress", "train_options",
                     "random_state")
#: the classifiers' parameters: the regressors' plus ``class_weight``
CLASSIFIER_OPTIONS = REGRESSOR_OPTIONS[:10] + ("class_weight",) + REGRESSOR_OPTIONS[10:]
#: the forecaster's parameters: the regressors' less ``pool`` (a forecast reads every step)
FORECASTER_OPTIONS = tuple(k for k in REGRESSOR_OPTIONS if k != "pool")

#: tiny settings for the frameworks' estimator checks (about a second per fit on 2 CPU
#: cores); not a recommendation
TEST_PARAMS = {"hidden_size": 4, "num_layers": 1, "epochs": 2, "batch_size": 4,
               "block_len": 8, "val_fraction": 0.0, "progress": False}

#: keyword options the adapters set themselves (the frame's columns, the task)
_RESERVED = ("id_col", "time_col", "target_cols", "feature_cols", "series_target", "task",
             "horizon", "seed")
_ID, _TIME = "series", "t"


def import_extra(module: str, extra: str) -> ModuleType:
    """``import module``, or an ImportError that names the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"vlrnn.{extra} needs the {module} package, which is not "
                          f"installed ({err}); install it with: pip install "
                          f"\"vlrnn[{extra}]\"") from err


def _seed(random_state: Any) -> int:
    """``random_state`` (an int, ``numpy.random.RandomState`` or ``Generator``) -> int."""
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(np.iinfo(np.int32).max))
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(np.iinfo(np.int32).max))
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        return int(random_state)
    raise TypeError(f"random_state must be None, an int or a numpy RandomState/Generator, "
                    f"got {type(random_state).__name__} {random_state!r}")


def train_options(params: Mapping[str, Any]) -> dict[str, Any]:
    """The estimator's parameters (``get_params()``) -> ``pack_and_train`` keyword options.

    ``None`` values are left out (``pack_and_train``'s default applies), ``random_state``
    becomes ``seed``, the ``train_options`` dict is merged in (a key that is also a named
    parameter, or one the adapter sets itself, is refused).
    """
    opts = {k: v for k, v in params.items()
            if v is not None and k not in ("train_options", "random_state")}
    extra = params.get("train_options")
    if extra is not None:
        if not isinstance(extra, Mapping):
            raise TypeError(f"train_options must be a dict of further pack_and_train "
                            f"options, got {type(extra).__name__}")
        clash = sorted(set(extra) & (set(params) | set(_RESERVED)))
        if clash:
            raise ValueError(f"train_options sets {clash}, which the estimator sets itself "
                             "(pass them as its own parameters: random_state for seed)")
        opts.update(extra)
    if params.get("random_state") is not None:
        opts["seed"] = _seed(params["random_state"])
    return opts


def as_series_list(X: Any) -> list[np.ndarray]:
    """A collection -> list of ``N`` float arrays ``(n_channels, n_timepoints_i)``.

    Args:
        X: a 3-D array ``(N, n_channels, n_timepoints)`` (aeon and sktime "numpy3D"), or
            a list of ``N`` 2-D arrays ``(n_channels, n_timepoints_i)`` (aeon "np-list").
    """
    if isinstance(X, np.ndarray) and X.ndim == 3:
        return [np.asarray(x, dtype=np.float64) for x in X]
    if isinstance(X, (list, tuple)):
        out = [np.asarray(x, dtype=np.float64) for x in X]
        bad = [i for i, x in enumerate(out) if x.ndim != 2]
        if bad:
            raise ValueError(f"series {bad[0]} has shape {out[bad[0]].shape}; expected a 2-D "
                             "array (n_channels, n_timepoints) per series")
        return out
    raise TypeError(f"expected a 3-D array (n_cases, n_channels, n_timepoints) or a list of "
                    f"(n_channels, n_timepoints_i) arrays, got {type(X).__name__}")


def _frame(series: Sequence[np.ndarray], labels: Any = None):
    return from_arrays(list(series), labels, channels_first=True, id_col=_ID, time_col=_TIME)


def _weights_in_class_order(weights: Mapping[Any, float], labels: pd.Series) -> list[float]:
    """``{class: weight}`` (scikit-learn's form; a class left out weighs 1) -> the list
    in ``pack_and_train``'s class order."""
    classes = ClassCodes.fit(labels, "y").classes
    unknown = [c for c in weights if _plain(c) not in classes]
    if unknown:
        raise ValueError(f"class_weight names classes {unknown} that are not in y "
                         f"(classes {classes})")
    by_class = {_plain(c): float(w) for c, w in weights.items()}
    return [by_class.get(c, 1.0) for c in classes]


def fit_series_model(series: Sequence[np.ndarray], y: Any, task: str,
                     options: Mapping[str, Any]) -> TrainedModel:
    """Train one model on ``N`` series with one label each.

    Args:
        series: ``N`` arrays ``(n_channels, n_timepoints_i)``.
        y: ``N`` labels in series order (classes, or numbers for regression).
        task: ``"classification"`` or ``"regression"``.
        options: ``pack_and_train`` keyword options (:func:`train_options`).

    Returns:
        The :class:`~vlrnn.TrainedModel` of ``pack_and_train(frame, id_col=..., time_col=...,
        series_target=labels, task=task, **options)``, with its ``trainer`` let go (the
        optimizer and data loaders it holds are not needed to predict, and cannot be
        pickled): the same object :meth:`~vlrnn.TrainedModel.load` gives.
    """
    data = _frame(series, np.asarray(y))
    options = dict(options)
    if isinstance(options.get("class_weight"), Mapping):
        options["class_weight"] = _weights_in_class_order(options["class_weight"],
                                                          data.labels)
    result = pack_and_train(data.frame, id_col=_ID, time_col=_TIME,
                            feature_cols=data.feature_cols, series_target=data.labels,
                            task=task, **options)
    result.trainer = None
    return result


def _predict_frame(model: TrainedModel, series: Sequence[np.ndarray]) -> pd.DataFrame:
    want = model.settings["n_features"]
    got = {s.shape[0] for s in series}
    if got != {want}:
        raise ValueError(f"the model was fitted on series of {want} channel(s); X has series "
                         f"of {sorted(got)} channel(s)")
    data = _frame(series)
    return model.predict(data.frame).reindex(pd.Index(range(len(series)), name=_ID))


def predict_values(model: TrainedModel, series: Sequence[np.ndarray]) -> np.ndarray:
    """A regression model's predictions ``(N,)`` float, series order."""
    return _predict_frame(model, series)["prediction"].to_numpy(dtype=np.float64)


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def predict_proba(model: TrainedModel, series: Sequence[np.ndarray],
                  classes: Sequence[Any] | None = None) -> np.ndarray:
    """A classifier's class probabilities ``(N, n_classes)``, rows summing to 1.

    Args:
        model: a series-classification :class:`~vlrnn.TrainedModel`.
        series: ``N`` arrays ``(n_channels, n_timepoints_i)``.
        classes: the column order wanted (the estimator's ``classes_``); default the
            model's own ``classes``. Each must be one of the model's classes.
    """
    res = _predict_frame(model, series)
    own = [_plain(c) for c in model.classes]
    prob = res.iloc[:, 1:1 + len(own)].to_numpy(dtype=np.float64)
    if classes is None:
        return prob
    where = {c: j for j, c in enumerate(own)}
    missing = [c for c in classes if _plain(c) not in where]
    if missing:
        raise ValueError(f"classes {missing} are not among the model's classes {own}")
    return prob[:, [where[_plain(c)] for c in classes]]
