"""The training loop: :class:`vlrnn.Trainer`, :func:`vlrnn.pack_and_train` and the
:class:`vlrnn.TrainedModel` it returns.

``trainer`` (the options and the fit loop), ``epochs`` (one training and one validation
pass), ``predict`` (streamed inference), ``checkpointing`` (the Trainer's checkpoints and
exact resume) over ``checkpoint_files`` (atomic, checksummed writes, safe verified loads, rotation,
random-number state; the checksum and :class:`CheckpointError` in ``_integrity``),
``guards`` (non-finite losses and gradients), ``placement`` and ``distributed`` (devices,
ranks, each rank's batches), ``tensorboard`` (the scalars of ``Trainer(log_dir=...)``),
``helpers`` (seeding, batches, out-of-memory messages). From a frame: ``pipeline``
(``pack_and_train``), ``_task`` (the task as one frozen ``Task``: kind, level, columns,
horizon, season, classes, scalers, baselines; what every module below reads),
``trained`` (``TrainedModel``: predict, forecast, evaluate, save), ``tasks`` (task
inference, class codes, labels per series, time steps), ``frames`` (a frame to the
dataset of a task), ``task_scaling`` (the scalers), ``losses`` (per-row losses that
leave missing targets out, class weights, a task's losses), ``metrics`` (accuracy, MAE,
RMSE and baselines) and ``forecast_metrics`` (MASE, sMAPE, drift and seasonal naive).
"""
from ._integrity import CheckpointError
from ._task import Task
from .pipeline import pack_and_train
from .trained import TrainedModel
from .trainer import Trainer

__all__ = ["CheckpointError", "Task", "TrainedModel", "Trainer", "pack_and_train"]
