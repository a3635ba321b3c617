"""Preallocated room for the small states the engine keeps across blocks.

The forward pass keeps a few rows of recurrent state per block for a long time: the
boundary states until the reverse pass reaches them, each sequence's final state until
the call returns. Cloned one at a time, each of them can be carved out of the memory the
block's activations have just freed, and then pins it: glibc's allocator can neither
give that memory back to the system nor hand the gap whole to the next block. On ragged
CPU batches the process's resident memory was seen, in some runs (more often with 2
threads than with 1), to climb by 1-3 MB per block in the forward pass (the standard
library demo's largest batch, 671 blocks: up to 2.4 GB where 0.5 GB suffice; see
``benchmarks/fragmentation.py``).
:class:`StateSlots` allocates the room for all of them once, before the blocks run, and
the engine copies each state into its slot, so that nothing the forward pass keeps lands
among the blocks' activations.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch

# Slot starts are aligned to this many bytes, as a fresh allocation would be (vector
# loads, and some GPU kernels, want aligned pointers).
ALIGN_BYTES = 64


class StateSlots:
    """Flat states of known row counts, in one preallocated buffer per state leaf.

    Slot ``key`` holds a state of ``rows[key]`` rows on ``batch_dim``: its leaf ``i`` is
    a contiguous tensor on the memory of buffer ``i`` (1-D), shaped as ``template[i]``
    with ``rows[key]`` rows on ``batch_dim``, as ``clone()`` of such a state would be.

    Args:
        template: a flat state (list of tensors ``(..., n, ...)``, batch on
            ``batch_dim``) giving each leaf's dtype and its shape off the batch dim.
        batch_dim: the batch dimension of every leaf.
        rows: the number of rows of each slot, by key.
        device: where the buffers live (default: each template leaf's device).
        pin: allocate them in pinned host memory (the target of GPU-to-host copies).
    """

    def __init__(self, template: Sequence[torch.Tensor], batch_dim: int, rows: Dict[int, int],
                 device: Optional[torch.device] = None, pin: bool = False):
        self.batch_dim = batch_dim
        self.rows = dict(rows)
        self.shapes = [list(t.shape) for t in template]
        self.dtypes = [t.dtype for t in template]
        self.row_numel = [_row_numel(t, batch_dim) for t in template]
        # offsets[i][key]: first element of slot ``key`` in buffer ``i``
        self.offsets: List[Dict[int, int]] = []
        self.buffers: List[torch.Tensor] = []
        for t, per_row in zip(template, self.row_numel):
            step = max(1, ALIGN_BYTES // t.element_size())
            offsets, total = {}, 0
            for key, n in self.rows.items():
                offsets[key] = total
                total += -(-n * per_row // step) * step  # rounded up to the alignment
            self.offsets.append(offsets)
            self.buffers.append(torch.empty(total, dtype=t.dtype, pin_memory=pin,
                                            device=device if device is not None else t.device))

    def __contains__(self, key: int) -> bool:
        return key in self.rows

    def state(self, key: int) -> List[torch.Tensor]:
        """Slot ``key``: one contiguous tensor ``(..., rows[key], ...)`` per leaf, on the
        buffer's memory.

        Each is a tensor of its own rather than a view of the buffer: autograd gives all
        views of a tensor one version counter, so writing one slot would mark the others
        (and a graph that saved one of them, e.g. as a block's input state) as modified
        in place. The slots do not overlap, so separate counters lose no check."""
        n = self.rows[key]
        out = []
        for buf, offs, shape in zip(self.buffers, self.offsets, self.shapes):
            size = _with_dim(shape, self.batch_dim, n)
            out.append(buf.new_empty(0).set_(buf.untyped_storage(), offs[key], size,
                                             _contiguous_strides(size)))
        return out

    def fits(self, state: Sequence[torch.Tensor]) -> bool:
        """Whether ``state`` has the template's leaves (number, dtypes, shape off the
        batch dim), so that copying it into a slot changes no value."""
        d = self.batch_dim
        return len(state) == len(self.shapes) and all(
            t.dtype == dtype and _with_dim(t.shape, d, 0) == _with_dim(shape, d, 0)
            for t, dtype, shape in zip(state, self.dtypes, self.shapes))

    def write(self, key: int, state: Sequence[torch.Tensor], start: int = 0,
              non_blocking: bool = False) -> List[torch.Tensor]:
        """Copy ``state`` (leaves ``(..., n, ...)``, which :meth:`fits`) into rows
        ``[start, start + n)`` of slot ``key``; returns those rows: the slot's tensors
        (:meth:`state`) when they are the whole slot, else views of them."""
        out = self.state(key)
        n = state[0].shape[self.batch_dim] if state else 0
        if start != 0 or n != self.rows[key]:
            out = [t.narrow(self.batch_dim, start, n) for t in out]
        with torch.no_grad():
            for dst, src in zip(out, state):
                dst.copy_(src.detach(), non_blocking=non_blocking)
        return out


def _row_numel(t: torch.Tensor, batch_dim: int) -> int:
    """Elements of ``t`` per row of its batch dim."""
    n = 1
    for i, size in enumerate(t.shape):
        if i != batch_dim:
            n *= size
    return n


def _contiguous_strides(size: Sequence[int]) -> List[int]:
    strides, step = [], 1
    for n in reversed(size):
        strides.append(step)
        step *= max(n, 1)
    return strides[::-1]


def _with_dim(shape, d: int, size: int) -> List[int]:
    shape = list(shape)
    shape[d] = size
    return shape
