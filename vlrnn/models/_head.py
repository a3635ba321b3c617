"""``WithHead``: a recurrent model followed by a per-step output head, as one vlrnn model."""
from __future__ import annotations

from typing import Any, Optional, Tuple

from torch import nn
from torch.nn.utils.rnn import PackedSequence

from .._common import Batch

__all__ = ["WithHead"]



class WithHead(nn.Module):
    """``rnn`` then ``head`` on every output step, called as ``model(x, state) -> (y, state)``.

    Args:
        rnn: a recurrent model following vlrnn's contract (``nn.LSTM``, ``nn.GRU``,
            ``nn.RNN``, :class:`~vlrnn.models.StackedRNN`, ...).
        head: a module applied to the last dim of each output row, e.g.
            ``nn.Linear(hidden_size, n_targets)``.

    Inputs/outputs: ``x`` and ``state`` go to ``rnn`` unchanged; ``new_state`` is the
    rnn's. ``y`` has the layout of the rnn's output: for a ``PackedSequence`` the head
    maps ``data`` ``(N, H) -> (N, K)`` and ``batch_sizes``, ``sorted_indices`` and
    ``unsorted_indices`` are kept; for a dense output ``(T, B, H)`` (or ``(B, T, H)``)
    the head maps the last dim.

    ``state_batch_dim`` and ``batch_first`` are those of ``rnn`` (1 for ``nn.RNNBase``),
    so the block engine finds the batch in the state and the time axis of dense input.

    >>> import torch
    >>> from torch import nn
    >>> from vlrnn.models import WithHead
    >>> model = WithHead(nn.GRU(3, 8), nn.Linear(8, 2))
    >>> y, h = model(torch.randn(20, 4, 3), None)      # (T, B, F) in, (T, B, 2) out
    >>> y.shape, h.shape
    (torch.Size([20, 4, 2]), torch.Size([1, 4, 8]))
    """

    def __init__(self, rnn: nn.Module, head: nn.Module):
        super().__init__()
        if not isinstance(rnn, nn.Module) or not isinstance(head, nn.Module):
            raise TypeError(f"WithHead expects two nn.Modules (rnn, head), got "
                            f"{type(rnn).__name__} and {type(head).__name__}")
        self.rnn = rnn
        self.head = head

    @property
    def state_batch_dim(self) -> int:
        if isinstance(self.rnn, nn.RNNBase):
            return 1
        return int(getattr(self.rnn, "state_batch_dim", 0))

    @property
    def batch_first(self) -> bool:
        return bool(getattr(self.rnn, "batch_first", False))

    def forward(self, x: Batch, state: Optional[Any] = None) -> Tuple[Batch, Any]:
        out = self.rnn(x, state)
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise TypeError(f"WithHead: the rnn must return a pair (y, new_state), got "
                            f"{type(out).__name__}")
        y, new_state = out
        if isinstance(y, PackedSequence):
            y = PackedSequence(self.head(y.data), y.batch_sizes, y.sorted_indices,
                               y.unsorted_indices)
        else:
            y = self.head(y)
        return y, new_state
