"""``predict_blocks``: a model's outputs over a long batch, streamed block by block.

The forward pass the Trainer and ``TrainedModel`` use for inference: no graph, one
block's activations at a time, the outputs kept.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import torch
from torch import nn

from .._common import Batch
from ..engine._bptt import block_outputs


def predict_blocks(model: nn.Module, x: Batch, state: Any = None, *, block_len: int = 256,
                   batch_first: Optional[bool] = None,
                   state_batch_dim: Optional[int] = None) -> Tuple[Batch, Any]:
    """Run ``model`` over ``x`` block by block, as the engine does, without a graph.

    The same result as ``model(x, state)`` in one call, but a long batch never holds
    more than one block's activations (outputs are kept: ``(N, K)`` rows).

    Args:
        model: called as ``model(x_block, state) -> (y_block, new_state)``.
        x: ``PackedSequence`` (sorted or ``enforce_sorted=False``) or dense ``(T, B, F)``
            (``(B, T, F)`` when batch-first); a dense numpy array or ``np.memmap`` is read
            block by block (see :mod:`vlrnn.engine._streaming`) onto the model's device.
        state: initial state in the model's format and ``x``'s batch order (input order);
            ``None`` lets the model start from its zeros.
        block_len: time steps per model call.
        batch_first: dense ``x`` is ``(B, T, F)``; ``None`` follows ``model.batch_first``.
        state_batch_dim: batch dim of the state tensors; default as in
            :func:`vlrnn.block_loss` (1 for ``nn.RNNBase``, else ``model.state_batch_dim``,
            else 0).

    Returns:
        ``(y, final_state)``: ``y`` in ``x``'s layout (a ``PackedSequence`` with ``x``'s
        ``batch_sizes``, ``sorted_indices`` and ``unsorted_indices``, or a dense tensor with
        ``x``'s time and batch dims); ``final_state`` each sequence's state after its own
        last step, in the model's format and ``x``'s batch order.

    Builds no graph whatever the caller's grad mode (it runs under ``torch.no_grad()``:
    ``block_outputs`` with gradients on would keep every block's outputs differentiable);
    the model's train/eval mode is left as it is.

    >>> lstm = nn.LSTM(3, 5)
    >>> y, (h, c) = predict_blocks(lstm, torch.randn(40, 2, 3), block_len=16)
    >>> y.shape, y.requires_grad
    (torch.Size([40, 2, 5]), False)
    """
    with torch.no_grad():
        return block_outputs(model, x, block_len=block_len, state=state,
                             batch_first=batch_first, state_batch_dim=state_batch_dim)
