"""Non-finite losses and gradients in the Trainer: raise with what to change, or skip the
step (``skip_nonfinite``); in a distributed run every rank decides alike."""
from __future__ import annotations

import math
from typing import List, Tuple

import torch
from torch import nn

from . import distributed as dd
from .helpers import _nonfinite_grad


class GuardsMixin:
    """The non-finite checks of :class:`vlrnn.Trainer` (reads the trainer's fields)."""

    def _bad_loss(self, value: float, epoch: int, i: int) -> bool:
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

    def _bad_gradient(self, epoch: int, i: int) -> bool:
        """Whether a parameter's gradient holds NaN/inf (then skip the step); raises
        ``FloatingPointError`` without ``skip_nonfinite``. DDP has already averaged the
        gradients, so every rank sees the same ones and decides alike."""
        name = _nonfinite_grad(self._named_params())
        if name is None:
            return False
        if self.skip_nonfinite:
            return True
        raise FloatingPointError(
            f"gradient of {name} is not finite (NaN/inf) at epoch {epoch}, batch {i} "
            "(0-based), although the loss is finite; the optimizer step was not taken. "
            "Set clip_grad_norm, lower lr, check the model for operations with infinite "
            "derivatives (sqrt or log at 0), or pass skip_nonfinite=True to skip such steps")

    def _named_params(self) -> List[Tuple[str, torch.Tensor]]:
        names = {id(p): n for n, p in self.model.named_parameters()}
        if isinstance(self.loss_fn, nn.Module):
            for n, p in self.loss_fn.named_parameters():
                names.setdefault(id(p), f"loss_fn.{n}")
        if isinstance(self.sequence_loss_fn, nn.Module):
            for n, p in self.sequence_loss_fn.named_parameters():
                names.setdefault(id(p), f"sequence_loss_fn.{n}")
        return [(names.get(id(p), f"parameter {j}"), p) for j, p in enumerate(self.params)]
