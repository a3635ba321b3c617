"""sktime estimators over vlrnn: ``RNNClassifier`` and ``RNNRegressor``.

Recurrent networks trained with the exact gradient of full BPTT on series of any, and
different, lengths: no padding, no truncation. They take sktime's panels as every sktime
classifier or regressor does, unequal lengths included ("pd-multiindex": a frame indexed
by ``(instance, time)`` with one column per variable; "numpy3D"; any other panel mtype
sktime converts)::

    from vlrnn.sktime import RNNClassifier

    clf = RNNClassifier(hidden_size=32, random_state=0).fit(X, y)
    clf.predict_proba(X_test)          # (n_instances, n_classes), classes_ order

Both train with :func:`vlrnn.pack_and_train` (its defaults, unless a parameter says
otherwise) and keep its :class:`~vlrnn.TrainedModel` as ``model_``. Needs the ``sktime``
extra: ``pip install "vlrnn[sktime]"``.
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd

from ._estimators import _docs
from ._estimators._core import (
    CLASSIFIER_OPTIONS,
    FORECASTER_OPTIONS,
    REGRESSOR_OPTIONS,
    TEST_PARAMS,
    as_series_list,
    fit_series_model,
    import_extra,
    predict_proba,
    predict_values,
    train_options,
)
from ._estimators._forecast import fit_forecaster, forecast_frame, forecast_values

import_extra("sktime", "sktime")

from sktime.classification.base import BaseClassifier
from sktime.forecasting.base import BaseForecaster
from sktime.regression.base import BaseRegressor

__all__ = ["RNNClassifier", "RNNForecaster", "RNNRegressor"]

#: what both estimators can do, in sktime's tags
_TAGS = {
    "authors": ["vlrnn developers"],
    # "pd-multiindex" carries unequal lengths; "numpy3D" is passed as it is
    "X_inner_mtype": ["pd-multiindex", "numpy3D"],
    "capability:multivariate": True,
    "capability:unequal_length": True,
    # pack_and_train refuses NaN features; sktime then raises its ValueError first
    "capability:missing_values": False,
    "capability:random_state": True,
    # random_state=None is pack_and_train's default seed, not a fresh draw: the same
    # data give the same model on the same device
    "property:randomness": "deterministic",
    "python_dependencies": "torch",
}


def _series(X: pd.DataFrame | np.ndarray) -> list[np.ndarray]:
    """sktime's inner panel -> ``N`` arrays ``(n_variables, n_timepoints_i)``, in instance
    order (the order of the first index level; time order within each instance)."""
    if isinstance(X, pd.DataFrame):
        return [g.to_numpy(dtype=np.float64).T for _, g in X.groupby(level=0, sort=False)]
    return as_series_list(X)


class RNNClassifier(BaseClassifier):
    __doc__ = """Recurrent network time series classifier, any series lengths, exact BPTT.

    An sktime classifier: ``fit(X, y)``, ``predict(X)``, ``predict_proba(X)`` with ``X``
    any sktime panel (unequal lengths in "pd-multiindex", "df-list", "nested_univ").
    Trains ``vlrnn.pack_and_train(frame, series_target=y, task="classification", ...)``.
""" + _docs.parameters(classifier=True) + """
    Attributes
    ----------
    model_ : vlrnn.TrainedModel
        The trained model (``model_.history``: one row per epoch).
    classes_ : np.ndarray
        Class labels; ``predict_proba``'s columns are in this order.

    Examples
    --------
    >>> import numpy as np
    >>> import pandas as pd
    >>> from vlrnn.sktime import RNNClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = pd.concat({i: pd.DataFrame(rng.normal(size=(n, 2)), columns=["a", "b"])
    ...                for i, n in enumerate((12, 30, 7, 21, 16, 9))})  # pd-multiindex
    >>> y = np.array(["up", "down"] * 3)
    >>> clf = RNNClassifier(hidden_size=8, epochs=2, progress=False).fit(X, y)
    >>> clf.predict_proba(X).shape
    (6, 2)
    >>> clf.classes_.tolist()
    ['down', 'up']
"""

    _tags: ClassVar[dict[str, Any]] = dict(_TAGS, **{"capability:predict_proba": True,
                                                          "capability:class_weight": True})

    def __init__(self, cell=None, hidden_size=None, num_layers=None, block_len=None,
                 batch_size=None, epochs=None, lr=None, val_fraction=None, scale=None,
                 pool=None, class_weight=None, clip_grad_norm=None,
                 early_stopping_patience=None, device=None, progress=None,
                 train_options=None, random_state=None):
        self.cell = cell
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.block_len = block_len
        self.batch_size = batch_size
        self.epochs = epochs
        self.lr = lr
        self.val_fraction = val_fraction
        self.scale = scale
        self.pool = pool
        self.class_weight = class_weight
        self.clip_grad_norm = clip_grad_norm
        self.early_stopping_patience = early_stopping_patience
        self.device = device
        self.progress = progress
        self.train_options = train_options
        self.random_state = random_state
        super().__init__()

    def _fit(self, X: pd.DataFrame | np.ndarray, y: np.ndarray) -> RNNClassifier:
        params = {k: getattr(self, k) for k in CLASSIFIER_OPTIONS}
        self.model_ = fit_series_model(_series(X), y, "classification",
                                       train_options(params))
        return self

    def _predict_proba(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """``(n_instances, n_classes)`` probabilities, columns in ``classes_`` order."""
        return predict_proba(self.model_, _series(X), self.classes_)

    def _predict(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """``(n_instances,)`` labels from ``classes_``: the most probable class."""
        return self.classes_[self._predict_proba(X).argmax(axis=1)]

    @classmethod
    def get_test_params(cls, parameter_set: str = "default") -> list[dict[str, Any]]:
        """Tiny settings for sktime's estimator checks (a second or so per fit)."""
        return [dict(TEST_PARAMS),
                dict(TEST_PARAMS, cell="gru", pool=("mean", "max"), class_weight=False,
                     random_state=1)]


class RNNRegressor(BaseRegressor):
    __doc__ = """Recurrent network time series regressor, any series lengths, exact BPTT.

    An sktime regressor: ``fit(X, y)``, ``predict(X)`` with ``X`` any sktime panel
    (unequal lengths in "pd-multiindex", "df-list", "nested_univ"), ``y`` one float per
    instance. Trains ``vlrnn.pack_and_train(frame, series_target=y, task="regression",
    ...)``.
""" + _docs.parameters(classifier=False) + """
    Attributes
    ----------
    model_ : vlrnn.TrainedModel
        The trained model (``model_.history``: one row per epoch).

    Examples
    --------
    >>> import numpy as np
    >>> import pandas as pd
    >>> from vlrnn.sktime import RNNRegressor
    >>> rng = np.random.default_rng(0)
    >>> X = pd.concat({i: pd.DataFrame(rng.normal(size=(n, 2)), columns=["a", "b"])
    ...                for i, n in enumerate((12, 30, 7, 21, 16, 9))})  # pd-multiindex
    >>> y = rng.normal(size=6)
    >>> RNNRegressor(hidden_size=8, epochs=2, progress=False).fit(X, y).predict(X).shape
    (6,)
"""

    _tags: ClassVar[dict[str, Any]] = dict(_TAGS)

    def __init__(self, cell=None, hidden_size=None, num_layers=None, block_len=None,
                 batch_size=None, epochs=None, lr=None, val_fraction=None, scale=None,
                 pool=None, clip_grad_norm=None, early_stopping_patience=None, device=None,
                 progress=None, train_options=None, random_state=None):
        self.cell = cell
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.block_len = block_len
        self.batch_size = batch_size
        self.epochs = epochs
        self.lr = lr
        self.val_fraction = val_fraction
        self.scale = scale
        self.pool = pool
        self.clip_grad_norm = clip_grad_norm
        self.early_stopping_patience = early_stopping_patience
        self.device = device
        self.progress = progress
        self.train_options = train_options
        self.random_state = random_state
        super().__init__()

    def _fit(self, X: pd.DataFrame | np.ndarray, y: np.ndarray) -> RNNRegressor:
        params = {k: getattr(self, k) for k in REGRESSOR_OPTIONS}
        self.model_ = fit_series_model(_series(X), np.asarray(y, dtype=np.float64),
                                       "regression", train_options(params))
        return self

    def _predict(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """``(n_instances,)`` float predictions."""
        return predict_values(self.model_, _series(X))

    @classmethod
    def get_test_params(cls, parameter_set: str = "default") -> list[dict[str, Any]]:
        """Tiny settings for sktime's estimator checks (a second or so per fit)."""
        return [dict(TEST_PARAMS), dict(TEST_PARAMS, cell="gru", scale=False,
                                         random_state=1)]


_PANELS = ["pd.DataFrame", "pd-multiindex", "pd_multiindex_hier"]


def _extend(old: pd.DataFrame | None, new: pd.DataFrame | None) -> pd.DataFrame | None:
    """``old`` with the rows of ``new`` (a row of both: ``new``'s), in index order."""
    if old is None or new is None:
        return new if old is None else old
    both = pd.concat([old, new])
    return both[~both.index.duplicated(keep="last")].sort_index()


class RNNForecaster(BaseForecaster):
    __doc__ = """Global recurrent forecaster: one model over every series of a panel.

    An sktime forecaster: ``fit(y, X=None, fh=fh)``, ``predict(fh)``. ``y`` is one series
    or a panel / hierarchy ("pd-multiindex", "pd_multiindex_hier"), of any lengths, one
    or several variables; a single network learns from all series at once (a global
    model) and forecasts each from its own past. Trains
    ``vlrnn.pack_and_train(frame, target_cols=y's columns, feature_cols=X's columns,
    horizon=max(fh))``: at every step the next ``h`` values from the steps up to it.

    ``fh`` is needed in ``fit`` (it sets ``h``), relative or absolute, out of sample
    (steps 1 to ``h`` after the cutoff). Exogenous ``X`` (one row per row of ``y``) is
    read up to each series' end; its future values (``X`` passed to ``predict``) are not
    used. Every series is forecast from its own last step, at the horizon's times after
    the cutoff: panels whose series end at one time, as sktime's do.
""" + _docs.parameters(classifier=False, pool=False) + """
    With one series and ``val_fraction`` left at ``None``, no series is held out.

    Attributes
    ----------
    model_ : vlrnn.TrainedModel
        The trained model (``model_.task.horizon`` is ``h``).

    Examples
    --------
    >>> import numpy as np
    >>> import pandas as pd
    >>> from vlrnn.sktime import RNNForecaster
    >>> t = np.arange(40)
    >>> y = pd.concat({k: pd.DataFrame({"load": np.sin(t / 4 + k)}) for k in range(3)})
    >>> f = RNNForecaster(hidden_size=8, epochs=2, progress=False).fit(y, fh=[1, 2, 3])
    >>> f.predict().shape
    (9, 1)
"""

    _tags: ClassVar[dict[str, Any]] = {
        "authors": ["vlrnn developers"],
        "y_inner_mtype": _PANELS,
        "X_inner_mtype": _PANELS,
        "capability:multivariate": True,
        "capability:exogenous": True,
        "capability:insample": False,
        "capability:pred_int": False,
        "capability:missing_values": False,
        "capability:categorical_in_X": False,
        "capability:random_state": True,
        "property:randomness": "deterministic",
        "requires-fh-in-fit": True,
        # update(y_new) extends each series' history (the model reads the new steps);
        # with update_params=True it also trains again on all the data seen
        "capability:update": True,
        "python_dependencies": "torch",
    }
    # the forecaster keeps the history it forecasts from itself (_history)
    _config: ClassVar[dict[str, Any]] = {"remember_data": False}

    def __init__(self, cell=None, hidden_size=None, num_layers=None, block_len=None,
                 batch_size=None, epochs=None, lr=None, val_fraction=None, scale=None,
                 clip_grad_norm=None, early_stopping_patience=None, device=None,
                 progress=None, train_options=None, random_state=None):
        self.cell = cell
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.block_len = block_len
        self.batch_size = batch_size
        self.epochs = epochs
        self.lr = lr
        self.val_fraction = val_fraction
        self.scale = scale
        self.clip_grad_norm = clip_grad_norm
        self.early_stopping_patience = early_stopping_patience
        self.device = device
        self.progress = progress
        self.train_options = train_options
        self.random_state = random_state
        super().__init__()
        # sktime's own data store, used only when remember_data is set True by hand
        self._y, self._X = None, None

    def _steps(self, fh) -> np.ndarray:
        steps = np.asarray(fh.to_relative(self.cutoff), dtype=np.int64)
        if steps.min() < 1:
            raise NotImplementedError(
                f"RNNForecaster forecasts out of sample only (steps 1, 2, ... after the "
                f"cutoff); fh has steps {steps.tolist()}")
        return steps

    def _fit(self, y: pd.DataFrame, X: pd.DataFrame | None = None, fh=None) -> RNNForecaster:
        steps = self._steps(fh)
        params = {k: getattr(self, k) for k in FORECASTER_OPTIONS}
        self._history = (y, X)
        self.model_ = fit_forecaster(forecast_frame(y, X), int(steps.max()),
                                     train_options(params))
        return self

    def _update(self, y: pd.DataFrame, X: pd.DataFrame | None = None,
                update_params: bool = True) -> RNNForecaster:
        old_y, old_X = self._history
        y = _extend(old_y, y)
        X = None if old_X is None and X is None else _extend(old_X, X)
        if update_params:
            return self._fit(y, X, self._fh)
        self._history = (y, X)
        return self

    def _predict(self, fh, X: pd.DataFrame | None = None) -> pd.DataFrame:
        steps = self._steps(fh)
        h = self.model_.task.horizon
        if steps.max() > h:
            raise ValueError(f"fh reaches {int(steps.max())} steps ahead; the model was "
                             f"fitted for {h} (fit again with that fh)")
        y, X_seen = self._history
        panel = forecast_frame(y, X_seen)
        values = forecast_values(self.model_, panel)[:, steps - 1, :]   # (N, len(fh), K)
        when = fh.to_absolute_index(self.cutoff)
        columns = y.columns
        if not isinstance(y.index, pd.MultiIndex):
            return pd.DataFrame(values[0], index=when, columns=columns)
        keys = [k if isinstance(k, tuple) else (k,) for k in panel.instances]
        index = pd.MultiIndex.from_tuples([(*k, t) for k in keys for t in when],
                                          names=y.index.names)
        return pd.DataFrame(values.reshape(-1, values.shape[2]), index=index,
                            columns=columns)

    @classmethod
    def get_test_params(cls, parameter_set: str = "default") -> list[dict[str, Any]]:
        """Tiny settings for sktime's estimator checks (a second or so per fit)."""
        return [dict(TEST_PARAMS), dict(TEST_PARAMS, cell="gru", scale=False,
                                         random_state=1)]
