"""The Python step loop over a recurrent cell, and the cell-state helpers it needs.

A cell's state is one tensor ``(B, H)`` or a tuple/list (or namedtuple) of them, batch
on dim 0; these helpers rebuild a state of the same kind from its tensors.
"""
from __future__ import annotations

from typing import Callable, List, Sequence, Tuple, Union

import torch

__all__ = ["step_loop"]

# A cell's state: one tensor (B, H) or a tuple/list of them, like LSTMCell's (h, c).
CellState = Union[torch.Tensor, Tuple[torch.Tensor, ...], List[torch.Tensor]]


def _leaves(s: CellState) -> List[torch.Tensor]:
    return [s] if isinstance(s, torch.Tensor) else list(s)


def _same_kind(like: CellState, leaves: Sequence[torch.Tensor]) -> CellState:
    """``leaves`` in the structure of ``like`` (tensor, tuple, list or namedtuple)."""
    if isinstance(like, torch.Tensor):
        return leaves[0]
    if hasattr(like, "_fields"):  # namedtuple: positional constructor
        return type(like)(*leaves)
    return type(like)(leaves)


def _narrow(s: CellState, n: int) -> CellState:
    """First ``n`` rows of every tensor of ``s`` (views)."""
    if isinstance(s, torch.Tensor):
        return s[:n]
    return _same_kind(s, [t[:n] for t in s])


def step_loop(cell: Callable[[torch.Tensor, CellState], CellState], steps: Sequence[torch.Tensor], sizes: Sequence[int],
               h: CellState) -> Tuple[List[torch.Tensor], CellState]:
    """One layer over all steps, one cell call per step (any cell).

    ``steps[t]`` is ``(sizes[t], in_size)``, sorted order; ``sizes`` never grows, so the
    sequences running at ``t`` are a prefix of the batch. Returns the outputs per step
    and the final state, ``(sizes[0], H)`` rows, each row frozen at its sequence's end.
    """
    outs: List[torch.Tensor] = []
    ended: List[List[torch.Tensor]] = []  # rows set aside when their sequences ended
    cur = sizes[0] if sizes else 0
    for x_t, n in zip(steps, sizes):
        if n < cur:
            # rows n:cur finished at the previous step: keep them (views), run on the rest
            ended.append([t[n:cur] for t in _leaves(h)])
            h = _narrow(h, n)
            cur = n
        h = cell(x_t, h)
        outs.append(h[0] if isinstance(h, (tuple, list)) else h)
    if ended:
        # later enders are earlier rows: reverse to restore sorted order
        pieces = [_leaves(h)] + ended[::-1]
        h = _same_kind(h, [torch.cat(ts) for ts in zip(*pieces)])
    return outs, h
