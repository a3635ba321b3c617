"""Time blocks: cutting a packed batch into consecutive ranges of time steps.

A ``PackedSequence`` stores its batch time-major in sorted order (longest sequence
first): step ``t`` holds rows ``offsets[t] : offsets[t] + batch_sizes[t]`` of ``.data``,
one per sequence still running at ``t``, in sorted order. The steps ``[start, stop)``
are therefore one contiguous slice of ``.data`` and, with ``batch_sizes[start:stop]``,
form a valid (sorted, unpermuted) ``PackedSequence`` that ``nn.LSTM`` and friends accept
directly. The sequences running at ``start`` are the first ``batch_sizes[start]`` in
sorted order, so a block's state is always a prefix of the batch.
"""
from __future__ import annotations

from typing import List, Optional

import torch
from torch.nn.utils.rnn import PackedSequence


class TimeBlock:
    """Steps ``[start, stop)`` of a batch.

    Attributes:
        x: ``PackedSequence`` of this block's steps, sorted order, no permutation
            (``None`` for blocks of a dense batch).
        start, stop: the time-step range ``[start, stop)``.
        rows: slice of ``x.data`` rows of the whole batch that this block covers (for a
            dense batch: the rows of the time-major flattening ``(T * B, ...)``).
        n_in: number of sequences running at ``start`` (the first ``n_in`` in sorted
            order).
        n_out: number of sequences still running at ``stop`` (0 for the last block).
        batch_sizes: ``batch_sizes[start:stop]`` (CPU int64), rows per step.
        active: bool ``(B,)``, input batch order: the sequence has a step in this block.
        ends: bool ``(B,)``, input batch order: the sequence's last step is in this block.

    >>> import torch
    >>> from torch.nn.utils.rnn import pack_sequence
    >>> import vlrnn
    >>> x = pack_sequence([torch.randn(4, 1), torch.randn(3, 1)])
    >>> first, second = vlrnn.split_packed(x, 2)
    >>> second.start, second.stop, second.rows, tuple(second.batch_sizes.tolist())
    (2, 4, slice(4, 7, None), (2, 1))
    """

    __slots__ = ("x", "start", "stop", "rows", "n_in", "n_out", "batch_sizes", "_lengths")

    def __init__(self, x: Optional[PackedSequence], start: int, stop: int, rows: slice,
                 n_in: int, n_out: int, batch_sizes: torch.Tensor, lengths: torch.Tensor):
        self.x = x
        self.start = start
        self.stop = stop
        self.rows = rows
        self.n_in = n_in
        self.n_out = n_out
        self.batch_sizes = batch_sizes
        self._lengths = lengths  # (B,) input batch order, shared by all blocks

    @property
    def active(self) -> torch.Tensor:
        return self._lengths > self.start

    @property
    def ends(self) -> torch.Tensor:
        return (self._lengths > self.start) & (self._lengths <= self.stop)

    def __len__(self) -> int:
        return self.stop - self.start

    def __repr__(self) -> str:
        return (f"TimeBlock(start={self.start}, stop={self.stop}, rows={self.rows.start}:"
                f"{self.rows.stop}, n_in={self.n_in}, n_out={self.n_out})")


def check_block_len(block_len) -> int:
    """``block_len`` as a positive int, or a clear error."""
    if isinstance(block_len, bool) or not isinstance(block_len, int):
        try:
            import numpy as np
            if isinstance(block_len, np.integer):
                block_len = int(block_len)
        except ImportError:  # pragma: no cover - numpy is a dependency
            pass
    if isinstance(block_len, bool) or not isinstance(block_len, int):
        raise TypeError(f"block_len must be a positive int, got {block_len!r} "
                        f"({type(block_len).__name__})")
    if block_len < 1:
        raise ValueError(f"block_len must be >= 1, got {block_len}")
    return block_len


def sorted_lengths(batch_sizes: torch.Tensor) -> torch.Tensor:
    """Length of each sequence in sorted order, ``(B,)`` int64, from ``batch_sizes``.

    Sequence ``j`` (sorted order) runs at every step whose batch size exceeds ``j``.
    """
    n_batch = int(batch_sizes[0])
    counts = torch.bincount(batch_sizes, minlength=n_batch + 1)  # steps with each size
    # lengths[j] = number of steps with batch size > j = reverse cumulative count
    return counts.flip(0).cumsum(0).flip(0)[1:]


def input_order_lengths(x: PackedSequence) -> torch.Tensor:
    """Length of each sequence of ``x`` in input batch order, ``(B,)`` int64 on CPU."""
    lengths = sorted_lengths(x.batch_sizes)
    if x.unsorted_indices is not None:
        lengths = lengths[x.unsorted_indices.cpu()]
    return lengths


def _time_ranges(n_steps: int, block_len: int) -> List[range]:
    return [range(s, min(s + block_len, n_steps)) for s in range(0, n_steps, block_len)]


def split_packed(x: PackedSequence, block_len: int) -> List[TimeBlock]:
    """Cut ``x`` into blocks of ``block_len`` time steps, first to last.

    Args:
        x: a ``PackedSequence`` (sorted or packed with ``enforce_sorted=False``).
        block_len: steps per block; the last block may be shorter.

    Returns:
        list of :class:`TimeBlock`; ``b.x`` holds the block's steps in sorted order with
        no permutation, ``b.rows`` the slice of ``x.data`` it covers.

    >>> import torch
    >>> from torch.nn.utils.rnn import pack_sequence
    >>> x = pack_sequence([torch.randn(5, 1), torch.randn(2, 1)], enforce_sorted=False)
    >>> for b in split_packed(x, 3):
    ...     print(b.start, b.stop, "active", tuple(b.active.tolist()), "ends", tuple(b.ends.tolist()))
    0 3 active (True, True) ends (False, True)
    3 5 active (True, False) ends (True, False)
    """
    if not isinstance(x, PackedSequence):
        raise TypeError(f"split_packed expects a PackedSequence, got {type(x).__name__}")
    block_len = check_block_len(block_len)
    bs = x.batch_sizes
    offsets = [0] + torch.cumsum(bs, 0).tolist()
    n_steps = len(bs)
    lengths = input_order_lengths(x)
    bs_list = bs.tolist()
    blocks = []
    for r in _time_ranges(n_steps, block_len):
        s, e = r.start, r.stop
        rows = slice(offsets[s], offsets[e])
        sub = bs[s:e]
        blocks.append(TimeBlock(
            PackedSequence(x.data[rows], sub), s, e, rows,
            n_in=bs_list[s], n_out=bs_list[e] if e < n_steps else 0,
            batch_sizes=sub, lengths=lengths))
    return blocks


def split_dense(n_steps: int, n_batch: int, block_len: int) -> List[TimeBlock]:
    """Blocks of a dense batch of ``n_batch`` sequences of ``n_steps`` each."""
    block_len = check_block_len(block_len)
    lengths = torch.full((n_batch,), n_steps, dtype=torch.int64)
    # one shared tensor, viewed by every block: millions of steps make thousands of blocks
    sizes = torch.full((min(block_len, n_steps),), n_batch, dtype=torch.int64)
    blocks = []
    for r in _time_ranges(n_steps, block_len):
        s, e = r.start, r.stop
        blocks.append(TimeBlock(
            None, s, e, slice(s * n_batch, e * n_batch), n_in=n_batch,
            n_out=n_batch if e < n_steps else 0, batch_sizes=sizes[:e - s], lengths=lengths))
    return blocks
