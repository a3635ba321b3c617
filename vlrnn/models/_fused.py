"""One fused call per layer for torch's built-in cells (the fast path of ``StackedRNN``).

``nn.LSTMCell``, ``nn.GRUCell`` and ``nn.RNNCell`` hold their weights in the same layout
as one layer of ``nn.LSTM``/``nn.GRU``/``nn.RNN`` (``weight_ih (G*H, F)``, ``weight_hh
(G*H, H)``, ``bias_ih``, ``bias_hh``, gates in the same order), so a whole layer over a
block can run as one call of torch's fused kernels (``torch.lstm``, ``torch.gru``,
``torch.rnn_tanh``, ``torch.rnn_relu``) on the cell's own parameters: same numbers as the
Python step loop over the cell, one kernel call instead of ``T`` cell calls, and the
state_dict is untouched.

Packed input runs as one dense kernel call per run of steps with the same batch size
(see :func:`run_fused_layer`): rows are in packed (sorted) order and each sequence's
returned state is its state after its own last step, exactly as the step loop gives.
"""
from __future__ import annotations

from itertools import groupby
from typing import Callable, List, Optional, Sequence, Tuple, Union

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
                    sizes: Optional[Sequence[int]], h: CellState
                    ) -> Tuple[torch.Tensor, CellState]:
    """One layer of built-in ``cell`` over a whole block with fused kernel calls.

    Args:
        cell: ``nn.LSTMCell``, ``nn.GRUCell`` or ``nn.RNNCell`` (see :func:`fused_kernel`).
        kernel: ``fused_kernel(cell)``.
        data: dense ``(T, B, F)``, or packed rows ``(N, F)`` (sorted order) when
            ``sizes`` (the ``PackedSequence``'s ``batch_sizes`` as ints) is given.
        h: the layer's state, batch on dim 0 in sorted order: ``(h, c)`` of ``(B, H)``
            for LSTM, else ``(B, H)``.

    Returns:
        ``out`` (``(T, B, H)`` dense or ``(N, H)`` packed) and the state after each
        sequence's own last step, in the form of ``h``.

    Packed input runs as one *dense* kernel call per run of steps with the same batch
    size (a block of a ragged batch has a few such runs: one more per sequence that ends
    in it). The packed rows of such a run are exactly a dense ``(t, b, F)`` tensor, and
    torch's packed kernels are several times slower than its dense ones on the CPU
    (their backward grows faster than linearly with the number of steps).
    """
    if sizes is None:
        return _dense_call(cell, kernel, data, h)
    runs = [(n, len(list(group))) for n, group in groupby(sizes)]
    pieces = data.split([n * t for n, t in runs])  # one backward node for all runs
    outs: List[torch.Tensor] = []
    ended: List[List[torch.Tensor]] = []  # rows set aside when their sequences ended
    leaves = _leaves(h)
    cur = runs[0][0]
    for (n, t), piece in zip(runs, pieces):
        if n < cur:  # rows n:cur finished at the previous step: keep them, run on the rest
            ended.append([s[n:cur] for s in leaves])
            leaves = [s[:n] for s in leaves]
            cur = n
        state = tuple(leaves) if kernel is torch.lstm else leaves[0]
        out, new = _dense_call(cell, kernel, piece.reshape(t, n, piece.shape[1]), state)
        outs.append(out.reshape(n * t, out.shape[2]))
        leaves = _leaves(new)
    if ended:  # later enders are earlier rows: reverse to restore sorted order
        leaves = [torch.cat(ts) for ts in zip(leaves, *[e for e in ended[::-1]])]
    final = tuple(leaves) if kernel is torch.lstm else leaves[0]
    return (outs[0] if len(outs) == 1 else torch.cat(outs)), final


def _leaves(h: CellState) -> List[torch.Tensor]:
    return [h] if isinstance(h, torch.Tensor) else list(h)


def _dense_call(cell: nn.Module, kernel: Callable, data: torch.Tensor, h: CellState
                ) -> Tuple[torch.Tensor, CellState]:
    """The kernel on dense ``(T, B, F)`` from state ``h`` (batch on dim 0)."""
    # (params, has_biases, num_layers, dropout, train, bidirectional, batch_first):
    # inter-layer dropout is StackedRNN's own (one F.dropout per layer, replayed by the
    # engine), never the kernel's
    if kernel is torch.lstm:
        out, h_n, c_n = kernel(data, (h[0].unsqueeze(0), h[1].unsqueeze(0)), _weights(cell),
                               cell.bias, 1, 0.0, False, False, False)
        return out, (h_n[0], c_n[0])
    out, h_n = kernel(data, h.unsqueeze(0), _weights(cell), cell.bias, 1, 0.0, False, False,
                      False)
    return out, h_n[0]
