"""aeon estimators over vlrnn: ``RNNClassifier`` and ``RNNRegressor``.

Recurrent networks trained with the exact gradient of full BPTT on series of any, and
different, lengths: no padding, no truncation. They take aeon's collections as every aeon
classifier or regressor does, unequal lengths included::

    from aeon.datasets import load_japanese_vowels   # 9 channels, lengths 7 to 29
    from vlrnn.aeon import RNNClassifier

    X, y = load_japanese_vowels(split="train")       # a list of (9, n_timepoints_i) arrays
    clf = RNNClassifier(hidden_size=32, random_state=0).fit(X, y)
    clf.predict_proba(X_test)                        # (n_cases, n_classes), classes_ order

Both train with :func:`vlrnn.pack_and_train` (its defaults, unless a parameter says
otherwise) and keep its :class:`~vlrnn.TrainedModel` as ``model_``. Needs the ``aeon``
extra: ``pip install "vlrnn[aeon]"``.
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ._estimators import _docs
from ._estimators._core import (
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

import_extra("aeon", "aeon")

from aeon.classification import BaseClassifier
from aeon.regression import BaseRegressor

__all__ = ["RNNClassifier", "RNNRegressor"]

#: what both estimators can do, in aeon's tags
_TAGS = {
    # "np-list": a list of (n_channels, n_timepoints_i) arrays, any lengths; "numpy3D":
    # (n_cases, n_channels, n_timepoints), passed as it is
    "X_inner_type": ["np-list", "numpy3D"],
    "capability:multivariate": True,
    "capability:unequal_length": True,
    # pack_and_train refuses NaN features; aeon then raises its ValueError first
    "capability:missing_values": False,
    "algorithm_type": "deeplearning",
    "python_dependencies": "torch",
    # a fixed seed (random_state, or pack_and_train's default when None) gives the same
    # model on the same data and device
    "non_deterministic": False,
    "cant_pickle": False,
}



class RNNClassifier(BaseClassifier):
    __doc__ = """Recurrent network time series classifier, any series lengths, exact BPTT.

    An aeon classifier: ``fit(X, y)``, ``predict(X)``, ``predict_proba(X)`` with ``X`` a
    list of ``(n_channels, n_timepoints_i)`` arrays (lengths may differ) or a 3-D array
    ``(n_cases, n_channels, n_timepoints)``. Trains
    ``vlrnn.pack_and_train(frame, series_target=y, task="classification", ...)``.
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
    >>> from vlrnn.aeon import RNNClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = [rng.normal(size=(2, n)) for n in (12, 30, 7, 21, 16, 9)]  # 2 channels
    >>> y = np.array(["up", "down"] * 3)
    >>> clf = RNNClassifier(hidden_size=8, epochs=2, progress=False).fit(X, y)
    >>> clf.predict_proba(X).shape
    (6, 2)
    >>> clf.classes_.tolist()
    ['down', 'up']
"""

    _tags: ClassVar[dict[str, Any]] = dict(_TAGS)

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

    def _fit(self, X: np.ndarray | list[np.ndarray], y: np.ndarray) -> RNNClassifier:
        params = {k: getattr(self, k) for k in CLASSIFIER_OPTIONS}
        self.model_ = fit_series_model(as_series_list(X), y, "classification",
                                       train_options(params))
        return self

    def _predict_proba(self, X: np.ndarray | list[np.ndarray]) -> np.ndarray:
        """``(n_cases, n_classes)`` probabilities, columns in ``classes_`` order."""
        return predict_proba(self.model_, as_series_list(X), self.classes_)

    def _predict(self, X: np.ndarray | list[np.ndarray]) -> np.ndarray:
        """``(n_cases,)`` labels from ``classes_``: the most probable class."""
        return self.classes_[self._predict_proba(X).argmax(axis=1)]

    @classmethod
    def _get_test_params(cls, parameter_set: str = "default"
                         ) -> dict[str, Any] | list[dict[str, Any]]:
        return [dict(TEST_PARAMS),
                dict(TEST_PARAMS, cell="gru", pool=("mean", "max"), class_weight=False,
                     random_state=1)]


class RNNRegressor(BaseRegressor):
    __doc__ = """Recurrent network time series regressor, any series lengths, exact BPTT.

    An aeon regressor: ``fit(X, y)``, ``predict(X)`` with ``X`` a list of
    ``(n_channels, n_timepoints_i)`` arrays (lengths may differ) or a 3-D array
    ``(n_cases, n_channels, n_timepoints)``, ``y`` one float per series. Trains
    ``vlrnn.pack_and_train(frame, series_target=y, task="regression", ...)``.
""" + _docs.parameters(classifier=False) + """
    Attributes
    ----------
    model_ : vlrnn.TrainedModel
        The trained model (``model_.history``: one row per epoch).

    Examples
    --------
    >>> import numpy as np
    >>> from vlrnn.aeon import RNNRegressor
    >>> rng = np.random.default_rng(0)
    >>> X = [rng.normal(size=(2, n)) for n in (12, 30, 7, 21, 16, 9)]  # 2 channels
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

    def _fit(self, X: np.ndarray | list[np.ndarray], y: np.ndarray) -> RNNRegressor:
        params = {k: getattr(self, k) for k in REGRESSOR_OPTIONS}
        self.model_ = fit_series_model(as_series_list(X), np.asarray(y, dtype=np.float64),
                                       "regression", train_options(params))
        return self

    def _predict(self, X: np.ndarray | list[np.ndarray]) -> np.ndarray:
        """``(n_cases,)`` float predictions."""
        return predict_values(self.model_, as_series_list(X))

    @classmethod
    def _get_test_params(cls, parameter_set: str = "default"
                         ) -> dict[str, Any] | list[dict[str, Any]]:
        return [dict(TEST_PARAMS), dict(TEST_PARAMS, cell="gru", scale=False,
                                          random_state=1)]
