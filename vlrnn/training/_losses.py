"""The losses of a task: per-row losses that leave missing (NaN) targets out, for
``Trainer(reduction="observed")``, class weights, and :func:`task_losses`.

A missing target gives a loss of exactly 0 and no gradient, while its step still feeds
the model; the Trainer divides the batch's sum by the number of observed target values.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional, Tuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

if TYPE_CHECKING:
    from ._task import Task


def masked_mse(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``(output - target)^2`` per value, ``(R, K)``; 0 where ``target`` is NaN."""
    seen = torch.isfinite(target)
    diff = output - torch.where(seen, target, output.detach())
    return torch.where(seen, diff * diff, torch.zeros_like(diff))


class MaskedCrossEntropy(nn.Module):
    """Cross-entropy per row, ``(R,)``, of logits ``(R, C)`` against class ids.

    ``target``: ``(R,)`` or ``(R, 1)``, class ids stored as floats (as the data layer
    keeps every target), NaN where the class is missing (loss 0 there).
    ``weight``: optional ``(C,)`` class weights, as in ``nn.CrossEntropyLoss``.
    ``label_smoothing``: as in ``nn.CrossEntropyLoss`` (the target a mix of the class,
    ``1 - label_smoothing``, and the uniform distribution, ``label_smoothing``).
    """

    def __init__(self, weight: Optional[torch.Tensor] = None, label_smoothing: float = 0.0):
        super().__init__()
        if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)) \
                or not 0.0 <= float(label_smoothing) < 1.0:
            raise ValueError(f"label_smoothing must be a number in [0, 1), got "
                             f"{label_smoothing!r}")
        self.label_smoothing = float(label_smoothing)
        self.register_buffer("weight", None if weight is None else weight.clone())

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        t = target.reshape(target.shape[0], -1)[:, 0] if target.dim() > 1 else target
        seen = torch.isfinite(t) if t.is_floating_point() else torch.ones_like(t, dtype=bool)
        ids = torch.where(seen, t, torch.zeros_like(t)).long()
        w = None if self.weight is None else self.weight.to(output)
        loss = F.cross_entropy(output, ids, weight=w, reduction="none",
                               label_smoothing=self.label_smoothing)
        return torch.where(seen, loss, torch.zeros_like(loss))


def masked_l1(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``|output - target|`` per value, ``(R, K)``; 0 where ``target`` is NaN."""
    seen = torch.isfinite(target)
    diff = output - torch.where(seen, target, output.detach())
    return torch.where(seen, diff.abs(), torch.zeros_like(diff))


def class_weights(codes: np.ndarray, n: int, class_weight: Any) -> Optional[torch.Tensor]:
    """Weights per class of ``class_weight`` for the class ids ``codes`` of the training
    targets (NaN = missing). ``"auto"``: balanced weights when the largest class is at
    least twice the smallest (a model that learns the majority alone then pays for it),
    else none; ``"balanced"``: always; ``None``/``False``: none; or ``n`` weights."""
    if class_weight is None or class_weight is False:
        return None
    counts = np.bincount(codes[np.isfinite(codes)].astype(int), minlength=n).astype(float)
    if isinstance(class_weight, str):
        if class_weight not in ("auto", "balanced"):
            raise ValueError(f"class_weight must be 'auto', 'balanced', None or a list of "
                             f"{n} weights, got {class_weight!r}")
        if class_weight == "auto" and counts.max() < 2 * max(counts.min(), 1):
            return None
        w = counts.sum() / (n * np.maximum(counts, 1))
        return torch.as_tensor(w, dtype=torch.get_default_dtype())
    w = torch.as_tensor(class_weight, dtype=torch.get_default_dtype())
    if w.shape != (n,):
        raise ValueError(f"class_weight must have one weight per class ({n}), got shape "
                         f"{tuple(w.shape)}")
    return w


def task_losses(model: nn.Module, task: Task, weight: Optional[torch.Tensor],
                label_smoothing: float = 0.0
                ) -> Tuple[Optional[Callable], Optional[Callable]]:
    """``(per-row loss, loss on the final states)`` of ``task`` for ``model``: masked MSE
    or cross-entropy per step; for series tasks MSE or cross-entropy of
    ``model.readout(state)`` against the series' labels. ``label_smoothing``: of the
    cross-entropy (classification; :class:`MaskedCrossEntropy`).

    Series-scaled forecasts (``scale="series"``) take the absolute error instead of the
    squared one: their targets are changes in units of each series' own mean one-step
    change, so the loss is MASE's own (scaled absolute error, every origin and step
    ahead), and a few origins with a small causal scale do not dominate it as they do
    a squared loss (side by side: docs/benchmarks/real-data.md)."""
    if task.level == "step":
        if task.kind == "regression" and task.horizon and task.scale == "series":
            return masked_l1, None
        return (masked_mse if task.kind == "regression"
                else MaskedCrossEntropy(weight, label_smoothing)), None
    if task.kind == "regression":
        def series_mse(state: Any, y: torch.Tensor) -> torch.Tensor:
            return F.mse_loss(model.readout(state), y.to(model.head.weight.dtype))
        return None, series_mse
    ce = MaskedCrossEntropy(weight, label_smoothing)

    def series_ce(state: Any, y: torch.Tensor) -> torch.Tensor:
        return ce(model.readout(state), y).mean()
    return None, series_ce
