"""Non-finite losses and gradients in the Trainer: raise with what to change, or skip the
step (``skip_nonfinite``); in a distributed run every rank decides alike.

:class:`Guards` is one of the Trainer's collaborators: everything it reads is given to it.
"""
from __future__ import annotations

import math
from typing import Any, List, Sequence, Tuple

import torch
from torch import nn

from . import _distributed as dd
from ._helpers import _nonfinite_grad


class Guards:
    """The non-finite checks of one training run.

    Args:
        skip_nonfinite: skip a step with a non-finite loss or gradient instead of raising.
        distributed: decide on every rank alike (a loss is bad if it is on any rank).
        params: the trained tensors, whose gradients are checked.
        named: modules whose parameter names label ``params`` in messages, as
            ``(prefix, module)`` pairs (``""`` for the model).
    """

    def __init__(self, skip_nonfinite: bool, distributed: bool, params: Sequence[torch.Tensor],
                 named: Sequence[Tuple[str, Any]]):
        self.skip_nonfinite = skip_nonfinite
        self.distributed = distributed
        names: dict = {}
        for prefix, module in named:
            if isinstance(module, nn.Module):
                for n, p in module.named_parameters():
                    names.setdefault(id(p), f"{prefix}{n}")
        self.named_params: List[Tuple[str, torch.Tensor]] = [
            (names.get(id(p), f"parameter {j}"), p) for j, p in enumerate(params)]

    def bad_loss(self, value: float, epoch: int, i: int) -> bool:
        """Whether to skip this step for a non-finite loss (on any rank); raises
        ``FloatingPointError`` without ``skip_nonfinite``."""
        bad = not math.isfinite(value)
        ranks = dd.ranks_with(bad) if self.distributed else ([0] if bad else [])
        if not ranks:
            return False
        if self.skip_nonfinite:
            return True
        where = f"at epoch {epoch}, batch {i} (0-based)"
        if self.distributed:
            where += f" of each rank's share, on rank(s) {ranks}"
        shown = value if bad else "not finite"
        raise FloatingPointError(
            f"loss is {shown} {where}, before the optimizer step; check the data for "
            "NaN/inf or extreme values, lower lr, set clip_grad_norm, or pass "
            "skip_nonfinite=True to skip such steps")

    def bad_gradient(self, epoch: int, i: int) -> bool:
        """Whether a parameter's gradient holds NaN/inf (then skip the step); raises
        ``FloatingPointError`` without ``skip_nonfinite``. DDP has already averaged the
        gradients, so every rank sees the same ones and decides alike."""
        name = _nonfinite_grad(self.named_params)
        if name is None:
            return False
        if self.skip_nonfinite:
            return True
        raise FloatingPointError(
            f"gradient of {name} is not finite (NaN/inf) at epoch {epoch}, batch {i} "
            "(0-based), although the loss is finite; the optimizer step was not taken. "
            "Set clip_grad_norm, lower lr, check the model for operations with infinite "
            "derivatives (sqrt or log at 0), or pass skip_nonfinite=True to skip such steps")
