"""The training loop: :class:`vlrnn.Trainer`, :func:`vlrnn.pack_and_train` and the
:class:`vlrnn.TrainedModel` it returns.

``trainer`` (the options and the fit loop), ``epochs`` (one training and one validation
pass), ``predict`` (streamed inference), ``checkpointing`` (the Trainer's checkpoints and
exact resume) over ``checkpoint_files`` (atomic, checksummed writes, safe verified loads, rotation,
random-number state; the checksum and :class:`CheckpointError` in ``_integrity``),
``guards`` (non-finite losses and gradients), ``placement`` and ``distributed`` (devices,
ranks, each rank's batches), ``tensorboard`` (the scalars of ``Trainer(log_dir=...)``),
``helpers`` (seeding, batches, out-of-memory messages). From a frame: ``pipeline``
(``pack_and_train``), ``trained`` (``TrainedModel``: predict, forecast, evaluate, save),
``tasks`` (task inference, class codes, labels per series, time steps), ``frames`` (a
frame to the dataset of a task), ``losses`` (per-row losses that leave missing targets
out) and ``metrics`` (accuracy, MAE, RMSE and baselines).
"""
from ._integrity import CheckpointError
from ._pipeline import pack_and_train
from ._trained import TrainedModel
from ._trainer import Trainer

__all__ = ["CheckpointError", "TrainedModel", "Trainer", "pack_and_train"]
