"""Per-row losses that leave missing (NaN) targets out, for ``Trainer(reduction="observed")``.

A missing target gives a loss of exactly 0 and no gradient, while its step still feeds
the model; the Trainer divides the batch's sum by the number of observed target values.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F


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
    """

    def __init__(self, weight: Optional[torch.Tensor] = None):
        super().__init__()
        self.register_buffer("weight", None if weight is None else weight.clone())

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        t = target.reshape(target.shape[0], -1)[:, 0] if target.dim() > 1 else target
        seen = torch.isfinite(t) if t.is_floating_point() else torch.ones_like(t, dtype=bool)
        ids = torch.where(seen, t, torch.zeros_like(t)).long()
        w = None if self.weight is None else self.weight.to(output)
        loss = F.cross_entropy(output, ids, weight=w, reduction="none")
        return torch.where(seen, loss, torch.zeros_like(loss))
