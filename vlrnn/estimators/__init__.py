"""The shared core of vlrnn's aeon and sktime estimators (``vlrnn.aeon``, ``vlrnn.sktime``).

Nothing here imports aeon or sktime: the four estimator classes are thin adapters that
turn each framework's collection format into per-series ``(n_channels, n_timepoints_i)``
arrays and call the functions of :mod:`vlrnn.estimators._core`, which train with
:func:`vlrnn.pack_and_train` and read its :class:`~vlrnn.TrainedModel` back.
"""
from ._core import (
                    CLASSIFIER_OPTIONS,
                    REGRESSOR_OPTIONS,
                    as_series_list,
                    fit_series_model,
                    import_extra,
                    predict_proba,
                    predict_values,
                    train_options,
)

__all__ = [
    "CLASSIFIER_OPTIONS",
    "REGRESSOR_OPTIONS",
    "as_series_list",
    "fit_series_model",
    "import_extra",
    "predict_proba",
    "predict_values",
    "train_options",
]
