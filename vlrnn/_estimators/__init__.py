"""The shared core of vlrnn's aeon and sktime estimators (``vlrnn.aeon``, ``vlrnn.sktime``).

Nothing here imports aeon or sktime: the estimator classes are thin adapters that turn
each framework's collection format into per-series ``(n_channels, n_timepoints_i)``
arrays (or a panel frame, for the forecaster) and call the functions of
:mod:`vlrnn._estimators._core` and :mod:`vlrnn._estimators._forecast`, which train with
:func:`vlrnn.pack_and_train` and read its :class:`~vlrnn.TrainedModel` back.
"""
from ._core import (
    CLASSIFIER_OPTIONS,
    FORECASTER_OPTIONS,
    REGRESSOR_OPTIONS,
    as_series_list,
    fit_series_model,
    import_extra,
    predict_proba,
    predict_values,
    train_options,
)
from ._forecast import PanelFrame, fit_forecaster, forecast_frame, forecast_values

__all__ = [
    "CLASSIFIER_OPTIONS",
    "FORECASTER_OPTIONS",
    "REGRESSOR_OPTIONS",
    "PanelFrame",
    "as_series_list",
    "fit_forecaster",
    "fit_series_model",
    "forecast_frame",
    "forecast_values",
    "import_extra",
    "predict_proba",
    "predict_values",
    "train_options",
]
