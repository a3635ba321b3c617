"""Per-row losses, the reductions that turn them into one scalar, and the running sum of
the blocks' losses.

The engine needs the total loss to be a sum of per-row terms, so that each block can
backpropagate its own share. ``"mean"`` and ``"seq_mean"`` are such sums with fixed
weights known before the first block runs.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from ._blocks import TimeBlock
from ._directions import AnyLayout
from ._layout import REDUCTIONS, Data

LossFn = Callable[[torch.Tensor, Optional[torch.Tensor]], torch.Tensor]


def check_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; expected one of "
                         + ", ".join(repr(r) for r in REDUCTIONS))
    return reduction


def block_loss_value(loss_fn: LossFn, out_rows: torch.Tensor, target_rows: Optional[torch.Tensor],
                     layout: AnyLayout, block: TimeBlock, reduction: str) -> torch.Tensor:
    """The block's share of the total loss, a scalar.

    Args:
        out_rows: ``(R, ...)`` model outputs of the block's rows.
        target_rows: ``(R, ...)`` targets of the same rows (or ``None``).
    """
    n = out_rows.shape[0]
    per_row = loss_fn(out_rows, target_rows)
    if not isinstance(per_row, torch.Tensor):
        raise TypeError(f"loss_fn must return a tensor with one loss per row, got "
                        f"{type(per_row).__name__}")
    if per_row.dim() == 0 or per_row.shape[0] != n:
        hint = (" (a scalar: build the loss with reduction='none', e.g. "
                "nn.MSELoss(reduction='none'); vlrnn applies `reduction` itself)"
                if per_row.dim() == 0 else "")
        raise ValueError(f"loss_fn must return a tensor whose first dimension is the number "
                         f"of rows ({n}), got shape {tuple(per_row.shape)}{hint}")
    if per_row.dim() > 1:
        per_row = per_row.reshape(n, -1).sum(1)  # trailing dims are summed
    if reduction == "sum":
        return per_row.sum()
    if reduction == "mean":
        return per_row.sum() / layout.n_rows
    return (per_row * layout.row_weights(block, per_row.dtype, per_row.device)).sum()


def add_loss(total: Optional[torch.Tensor], loss: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """Running sum of detached block losses (``None`` while there is none)."""
    if loss is None:
        return total
    loss = loss.detach()
    return loss if total is None else total + loss


def finish_loss(total: Optional[torch.Tensor], x_data: Data) -> torch.Tensor:
    """The loss to report: the sum, or 0 when there is no per-step loss."""
    if total is not None:
        return total
    dtype = x_data.dtype if x_data.dtype.is_floating_point else torch.get_default_dtype()
    return torch.zeros((), dtype=dtype, device=x_data.device)
