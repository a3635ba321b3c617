"""One fused call per layer for torch's built-in cells (the fast path of ``StackedRNN``).

``nn.LSTMCell``, ``nn.GRUCell`` and ``nn.RNNCell`` hold their weights in the same layout
as one layer of ``nn.LSTM``/``nn.GRU``/``nn.RNN`` (``weight_ih (G*H, F)``, ``weight_hh
(G*H, H)``, ``bias_ih``, ``bias_hh``, gates in the same order), so a whole layer over a
block can run as one call of torch's fused kernels (``torch.lstm``, ``torch.gru``,
``torch.rnn_tanh``, ``torch.rnn_relu``) on the cell's own parameters: same numbers as the
Python step loop over the cell, one kernel call instead of ``T`` cell calls, and the
state_dict is untouched.

Packed input goes through the kernels' packed form (``data`` ``(N, F)`` and
``batch_sizes``): rows are in packed (sorted) order and each sequence's returned state
is its state after its own last step, exactly as the step loop gives.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple, Union

import torch
from torch import nn

__all__ = ["fused_kernel", "run_fused_layer"]

CellState = Union[torch.Tensor, Tuple[torch.Tensor, ...]]


def fused_kernel(cell: nn.Module) -> Optional[Callable]:
    """torch's fused kernel for ``cell`` if it is exactly a built-in cell, else ``None``.

    Subclasses are excluded: they may override ``forward`` and then the kernel would not
    compute what the cell does.
    """
    kind = type(cell)
    if kind is nn.LSTMCell:
        return torch.lstm
    if kind is nn.GRUCell:
        return torch.gru
    if kind is nn.RNNCell:
        return torch.rnn_tanh if cell.nonlinearity == "tanh" else torch.rnn_relu
    return None


def _weights(cell: nn.Module):
    if cell.bias:
        return [cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh]
    return [cell.weight_ih, cell.weight_hh]


def run_fused_layer(cell: nn.Module, kernel: Callable, data: torch.Tensor,
                    batch_sizes: Optional[torch.Tensor], h: CellState
                    ) -> Tuple[torch.Tensor, CellState]:
    """One layer of built-in ``cell`` over a whole block with one fused kernel call.

    Args:
        cell: ``nn.LSTMCell``, ``nn.GRUCell`` or ``nn.RNNCell`` (see :func:`fused_kernel`).
        kernel: ``fused_kernel(cell)``.
        data: dense ``(T, B, F)``, or packed rows ``(N, F)`` (sorted order) when
            ``batch_sizes`` (the ``PackedSequence``'s, a CPU int64 tensor) is given.
        h: the layer's state, batch on dim 0 in sorted order: ``(h, c)`` of ``(B, H)``
            for LSTM, else ``(B, H)``.

    Returns:
        ``out`` (``(T, B, H)`` dense or ``(N, H)`` packed) and the state after each
        sequence's own last step, in the form of ``h``.
    """
    lstm = kernel is torch.lstm
    if lstm:
        hx = (h[0].unsqueeze(0), h[1].unsqueeze(0))
    else:
        hx = h.unsqueeze(0)
    weights = _weights(cell)
    # (params, has_biases, num_layers, dropout, train, bidirectional): inter-layer dropout
    # is StackedRNN's own (one F.dropout per layer, replayed by the engine), never here
    if batch_sizes is None:
        res = kernel(data, hx, weights, cell.bias, 1, 0.0, False, False, False)
    else:
        res = kernel(data, batch_sizes, hx, weights, cell.bias, 1, 0.0, False, False)
    if lstm:
        out, h_n, c_n = res
        return out, (h_n[0], c_n[0])
    out, h_n = res
    return out, h_n[0]
