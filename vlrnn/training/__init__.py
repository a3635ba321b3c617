"""The training loop: :class:`vlrnn.Trainer`, :func:`vlrnn.pack_and_train`, the
:class:`vlrnn.TrainedModel` it returns and the :class:`Task` it trains for.

Public: ``Trainer``, ``pack_and_train``, ``TrainedModel``, ``Task``, ``CheckpointError``.
Internal modules: ``_trainer`` (the options and the fit loop) over ``_batch_loss`` (one
batch's loss), ``_epochs`` (one epoch's passes), ``_guards`` (non-finite losses and
gradients), ``_placement`` and ``_distributed`` (devices, ranks, each rank's batches),
``_checkpointing`` (checkpoints and exact resume) over ``_checkpoint_files`` (atomic,
checksummed writes, verified loads, rotation; the checksum in ``_integrity``),
``_predict`` (streamed inference), ``_tensorboard``; from a frame: ``_pipeline``
(``pack_and_train``), ``_recipe`` (the training recipe), ``_task`` (the task as one
frozen ``Task``: what every module below reads), ``_trained`` (``TrainedModel``; its
saved file in ``_model_file``), ``_tasks``, ``_frames``, ``_task_scaling``, ``_losses``,
``_metrics`` and ``_forecast_metrics``. docs/guides/how-it-works.md has the map.
"""
from ._integrity import CheckpointError
from ._pipeline import pack_and_train
from ._task import Task
from ._trained import TrainedModel
from ._trainer import Trainer

__all__ = ["CheckpointError", "Task", "TrainedModel", "Trainer", "pack_and_train"]
