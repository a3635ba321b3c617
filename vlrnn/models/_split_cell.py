"""The split-cell protocol: how a custom cell gets its speed under :class:`StackedRNN`.

A recurrent cell ``h_t = cell(x_t, h_{t-1})`` usually starts with work that reads only
``x_t`` (an input projection). A cell that says so, by defining

* ``input_part(x) -> u``: that work, for any number of rows: ``x`` ``(R, F)`` ->
  ``u`` ``(R, G)`` (row-wise: row ``r`` of ``u`` depends on row ``r`` of ``x`` only);
* ``step(u_t, h) -> h'``: the rest, one time step: ``u_t`` ``(B, G)`` and the state
  (a tensor ``(B, H)`` or a tuple of them, batch on dim 0) -> the new state;

with ``cell(x, h) == cell.step(cell.input_part(x), h)``, has ``input_part`` run once per
block over all of the block's rows (one large matrix multiply instead of one per step)
and only ``step`` in the per-step loop. Plain PyTorch, public APIs only; gradients are
autograd's, exact. Measured side by side with the retired TorchScript path in
``benchmarks/results/split_cell_speed.md``. The class docstring of :class:`SplitCell` has a runnable example.
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

__all__ = ["SplitCell", "is_split_cell"]


@runtime_checkable
class SplitCell(Protocol):
    """A cell whose input-only part runs over a whole block (see the module docstring).

    >>> import torch
    >>> from torch import nn
    >>> from vlrnn.models import SplitCell, StackedRNN, is_split_cell
    >>> class Elman(nn.Module):
    ...     def __init__(self, n_in, n_hid):
    ...         super().__init__()
    ...         self.ih, self.hh = nn.Linear(n_in, n_hid), nn.Linear(n_hid, n_hid, bias=False)
    ...     def input_part(self, x):
    ...         return self.ih(x)
    ...     def step(self, u, h):
    ...         return torch.tanh(u + self.hh(h))
    ...     def forward(self, x, h):
    ...         return self.step(self.input_part(x), h)
    >>> isinstance(Elman(2, 4), SplitCell), is_split_cell(Elman(2, 4)), is_split_cell(nn.RNNCell(2, 4))
    (True, True, False)
    >>> y, _ = StackedRNN(2, 4, num_layers=2, cell=Elman)(torch.randn(10, 3, 2))
    >>> y.shape
    torch.Size([10, 3, 4])
    """

    def input_part(self, x: torch.Tensor) -> torch.Tensor: ...

    def step(self, u: torch.Tensor, state: Any) -> Any: ...


def is_split_cell(cell: nn.Module) -> bool:
    """Whether ``cell`` follows the split-cell protocol (``input_part`` and ``step``).

    >>> from torch import nn
    >>> from vlrnn.models import is_split_cell
    >>> is_split_cell(nn.GRUCell(2, 3))        # no input_part/step: the plain step loop
    False
    """
    return callable(getattr(cell, "input_part", None)) and callable(getattr(cell, "step", None))
