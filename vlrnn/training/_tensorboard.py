"""TensorBoard scalars for :class:`vlrnn.Trainer` (``log_dir=``), through
``torch.utils.tensorboard``.

What is written (``tensorboard --logdir DIR`` shows it):

- ``step/train_loss``: the loss of every optimizer step, at the run's global step (batches
  of this rank since the start of the run, skipped steps counted but not written; a
  resumed run continues the numbering from its checkpoint).
- ``epoch/<column>``: every numeric column of the history row (``train_loss``,
  ``val_loss``, ``val_accuracy``/``val_mae``/..., ``lr``, ``steps_per_s``, ``seconds``,
  ``skipped``) at the epoch number; NaN values (no validation) are left out.
- ``memory/peak_rss_mb`` (peak resident memory of the process so far) and, on CUDA,
  ``memory/cuda_max_allocated_mb`` (``torch.cuda.max_memory_allocated``), per epoch.

Give each run its own folder: a new ``fit`` without ``resume`` numbers from 1 again. The
scalars of an epoch a crash interrupted (before its checkpoint) are written again when
the resumed run redoes it; TensorBoard then shows both.
"""
from __future__ import annotations

import math
from numbers import Real
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch

from ..memory import peak_rss_mb

INSTALL_HINT = 'pip install "vlrnn[tensorboard]" (or: pip install tensorboard)'


def summary_writer_class() -> type:
    """``torch.utils.tensorboard.SummaryWriter``; ``ImportError`` naming the fix when the
    ``tensorboard`` package is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        raise ImportError(f"log_dir= writes TensorBoard logs, which needs the tensorboard "
                          f"package: {INSTALL_HINT}; or drop log_dir ({err})") from None
    return SummaryWriter


def tensorboard_available() -> bool:
    """Whether :func:`summary_writer_class` can import ``SummaryWriter``."""
    try:
        summary_writer_class()
    except ImportError:
        return False
    return True


class TensorBoardLogger:
    """Scalars of one Trainer run into ``log_dir``; only the writing rank opens a writer.

    ``open()`` at the start of ``fit``, ``step()`` after every batch, ``epoch()`` after every
    epoch (then flushed), ``close()`` at the end.
    """

    def __init__(self, log_dir: Union[str, Path], *, write: bool = True):
        self._writer_class = summary_writer_class()  # fails now, not after an epoch
        self.log_dir = Path(log_dir)
        self.write = write
        self._writer: Any = None

    def open(self) -> None:
        self.close()
        if self.write:
            self._writer = self._writer_class(log_dir=str(self.log_dir))

    def step(self, global_step: int, loss: Optional[float]) -> None:
        """The training loss of optimizer step ``global_step`` (``None``: skipped)."""
        if self._writer is not None and loss is not None:
            self._writer.add_scalar("step/train_loss", loss, global_step)

    def epoch(self, row: Dict[str, Any], device: Optional[torch.device] = None) -> None:
        """Every numeric value of the history row ``row`` and the peak memory so far, at
        step ``row["epoch"]``; flushed to disk."""
        if self._writer is None:
            return
        epoch = int(row["epoch"])
        for name, value in row.items():
            if name == "epoch" or isinstance(value, bool) or not isinstance(value, Real):
                continue
            if not math.isnan(float(value)):
                self._writer.add_scalar(f"epoch/{name}", float(value), epoch)
        self._writer.add_scalar("memory/peak_rss_mb", peak_rss_mb(), epoch)
        if device is not None and device.type == "cuda":
            self._writer.add_scalar("memory/cuda_max_allocated_mb",
                                    torch.cuda.max_memory_allocated(device) / 2**20, epoch)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
