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

from .estimators import _docs
from .estimators._core import (
    CLASSIFIER_OPTIONS,
    REGRESSOR_OPTIONS,
    TEST_PARAMS,
    as_series_list,
    fit_series_model,
    import_extra,
    predict_proba,
    predict_values,
    train_options,
)

import_extra("sktime", "sktime")

from sktime.classification.base import BaseClassifier
from sktime.regression.base import BaseRegressor

__all__ = ["RNNClassifier", "RNNRegressor"]

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

    _tags: ClassVar[dict[str, Any]] = dict(_TAGS, **{"capability:predict_proba": True})

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
                dict(TEST_PARAMS, cell="gru", pool=("last",), class_weight=False,
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
