"""The Trainer's own arguments, checked before anything is built (the engine's options
are checked by :class:`vlrnn.engine.Options`), and its optimizer and LR scheduler."""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

from ._helpers import _is_scheduler

__all__ = ["check_arguments", "check_loop_options", "optimizer_and_scheduler"]


def check_arguments(model: Any, loss_fn: Optional[Callable], sequence_loss_fn: Any,
                    metrics: Any, monitor: Any) -> None:
    """The model, the losses, ``metrics`` and ``monitor``: a clear error for each."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if loss_fn is None and sequence_loss_fn is None:
        raise ValueError("Trainer needs a loss: a per-row loss_fn, a sequence_loss_fn on "
                         "the final state, or both")
    if sequence_loss_fn is not None and not callable(sequence_loss_fn):
        raise TypeError("sequence_loss_fn must be callable (final_state, targets) -> "
                        f"scalar, got {type(sequence_loss_fn).__name__}")
    if metrics is not None and not callable(metrics):
        raise TypeError(f"metrics must be callable (model, batches) -> dict, got "
                        f"{type(metrics).__name__}")
    if not isinstance(monitor, str) or not monitor.startswith("val_"):
        raise ValueError(f"monitor must be 'val_loss' or 'val_<metric>', got {monitor!r}")


def check_loop_options(early_stopping_patience: Any, clip_grad_norm: Any,
                       config: Optional[Dict[str, Any]]) -> None:
    """Patience, gradient clipping and the run's config."""
    if early_stopping_patience is not None and (
            isinstance(early_stopping_patience, bool)
            or not isinstance(early_stopping_patience, int) or early_stopping_patience < 1):
        raise ValueError(f"early_stopping_patience must be an int >= 1 or None, got "
                         f"{early_stopping_patience!r}")
    if clip_grad_norm is not None and not clip_grad_norm > 0:
        raise ValueError(f"clip_grad_norm must be > 0 or None, got {clip_grad_norm!r}")
    if config is not None and not isinstance(config, dict):
        raise TypeError(f"config must be a dict or None, got {type(config).__name__}")


def optimizer_and_scheduler(params: List[nn.Parameter], optimizer: Optional[torch.optim.Optimizer],
                            lr: float, scheduler: Any) -> Tuple[torch.optim.Optimizer, Any]:
    """The optimizer (default ``Adam(params, lr)``) and the scheduler built on it (a
    callable ``optimizer -> scheduler`` is called), or an error naming the mismatch."""
    if optimizer is None:
        if not params:
            raise ValueError("model has no trainable parameters")
        optimizer = torch.optim.Adam(params, lr=lr)
    if scheduler is not None and not _is_scheduler(scheduler):
        if not callable(scheduler):
            raise TypeError("scheduler must be an LR scheduler or a callable "
                            f"optimizer -> scheduler, got {type(scheduler).__name__}")
        scheduler = scheduler(optimizer)
    if scheduler is not None and getattr(scheduler, "optimizer", None) is not optimizer:
        raise ValueError("scheduler was built on another optimizer than the Trainer's; "
                         "pass optimizer= too, or pass scheduler as a callable "
                         "optimizer -> scheduler")
    return optimizer, scheduler
