"""The loss of one batch for the Trainer: batches moved to the model's device and dtype,
the engine's per-row loss plus an optional loss on the final states, and each batch's
weight in an epoch's mean loss."""
from __future__ import annotations

from typing import Any, Callable, Optional, Tuple, Union

import torch
from torch import nn

from .._common import Batch
from ..engine._bptt import block_loss
from ._helpers import _move, _n_observed, _n_rows, _n_seqs, engine_block_len

__all__ = ["BatchLoss", "dtype_of"]


def dtype_of(model: nn.Module) -> Optional[torch.dtype]:
    """The dtype of ``model``'s first floating-point parameter (batches are cast to it)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return None


class BatchLoss:
    """``loss(model, x, y, train) -> scalar``: one batch's loss through the engine.

    Args:
        model: the plain module (not a DDP wrapper): its ``batch_first`` and parameter
            dtype decide how batches are read and cast.
        loss_fn, sequence_loss_fn, reduction: as in :class:`vlrnn.Trainer`
            (``"observed"`` runs the engine's ``"sum"`` and divides by the number of
            observed targets).
        block_len, schedule, memory_budget, offload: the engine's options for training
            batches; evaluation batches run without schedule, budget or offload (no graph
            is kept, so they cost nothing to honour).
        device: where batches go.
    """

    def __init__(self, model: nn.Module, loss_fn: Optional[Callable],
                 sequence_loss_fn: Optional[Callable[[Any, Any], torch.Tensor]], *,
                 reduction: str, block_len: Union[int, str], schedule: Optional[str],
                 memory_budget: Union[int, str, None], offload: Optional[str],
                 device: torch.device):
        self.model = model
        self.loss_fn = loss_fn
        self.sequence_loss_fn = sequence_loss_fn
        self.reduction = reduction
        self.block_len = block_len
        self.schedule = schedule
        self.memory_budget = memory_budget
        self.offload = offload
        self.device = device

    def move(self, batch: Any, i: int) -> Tuple[Batch, Any]:
        """Batch ``i`` as ``(x, y)`` on the device, floating tensors in the model's dtype."""
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise TypeError(f"batch {i}: every batch must be a pair (x, y), got "
                            f"{type(batch).__name__}"
                            + (f" of length {len(batch)}" if isinstance(batch, (tuple, list))
                               else ""))
        dtype = dtype_of(self.model)
        return _move(batch[0], self.device, dtype), _move(batch[1], self.device, dtype)

    def targets(self, y: Any) -> Tuple[Any, Any]:
        """(per-step targets, per-series targets) of a batch's ``y``."""
        if self.loss_fn is not None and self.sequence_loss_fn is not None:
            if not isinstance(y, (tuple, list)) or len(y) != 2:
                raise TypeError("with both loss_fn and sequence_loss_fn each batch must be "
                                f"(x, (y_steps, y_series)), got y of type {type(y).__name__}")
            return y[0], y[1]
        return (None, y) if self.loss_fn is None else (y, None)

    def __call__(self, model: nn.Module, x: Batch, y: Any, train: bool) -> torch.Tensor:
        """The batch's loss: the engine's per-row loss (divided by the observed targets
        for ``"observed"``) plus ``sequence_loss_fn`` on the final states. ``model`` is
        the module to run (the DDP wrapper when training distributed)."""
        steps_y, series_y = self.targets(y)
        reduction = "sum" if self.reduction == "observed" else self.reduction
        out = block_loss(model, self.loss_fn, x, steps_y if self.loss_fn is not None else None,
                         block_len=engine_block_len(self.model, x, self.block_len),
                         reduction=reduction,
                         schedule=self.schedule if train else None,
                         memory_budget=self.memory_budget if train else None,
                         offload=self.offload if train else None)
        loss = out.loss
        if self.loss_fn is not None and self.reduction == "observed":
            loss = loss / max(_n_observed(steps_y), 1)
        if self.sequence_loss_fn is None:
            return loss
        seq = self.sequence_loss_fn(out.state, series_y)
        if not isinstance(seq, torch.Tensor) or seq.dim() != 0:
            raise ValueError("sequence_loss_fn must return a scalar tensor (reduce over the "
                             f"sequences itself), got {getattr(seq, 'shape', type(seq))}")
        return seq if self.loss_fn is None else loss + seq

    def weigh(self, loss: float, x: Batch, y: Any = None) -> Tuple[float, float]:
        """(contribution, weight) of one batch to the epoch's average loss: rows for
        ``"mean"``/``"sum"``, sequences for ``"seq_mean"`` and sequence losses, observed
        targets for ``"observed"``."""
        batch_first = bool(getattr(self.model, "batch_first", False))
        if self.loss_fn is None:  # a loss per sequence, averaged by sequence_loss_fn
            n = _n_seqs(x, batch_first)
            return loss * n, float(n)
        if self.reduction == "observed":
            n = _n_observed(self.targets(y)[0])
            return loss * n, float(n)
        if self.reduction == "seq_mean":
            n = _n_seqs(x, batch_first)
            return loss * n, float(n)
        n = _n_rows(x)
        return (loss * n if self.reduction == "mean" else loss), float(n)
