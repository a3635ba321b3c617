"""Where a batch's steps live: packed or dense, time-major or batch-first.

:class:`Layout` checks ``x`` and ``target`` against each other once, then hands the
engine per-block views: the model's input for a block, the block's target rows and
output rows (for the loss), and the per-row weights that implement the reductions.
Packed batches are kept in sorted order (the ``PackedSequence`` storage order); the
caller's batch order is restored only at the edges (initial and final state).
"""
from __future__ import annotations

from typing import List, Optional, Union

import torch
from torch.nn.utils.rnn import PackedSequence

from .._common import Batch
from ._blocks import TimeBlock, input_order_lengths, sorted_lengths, split_dense, split_packed
from ._streaming import ArrayStream, is_stream

REDUCTIONS = ("sum", "mean", "seq_mean")

# What a layout's x_data and y_data hold: a tensor, or (dense only) a stream of one.
Data = Union[torch.Tensor, ArrayStream]


def _describe(obj) -> str:
    if isinstance(obj, PackedSequence):
        return f"PackedSequence(data {tuple(obj.data.shape)}, {len(obj.batch_sizes)} steps)"
    if isinstance(obj, torch.Tensor):
        return f"tensor of shape {tuple(obj.shape)}"
    return type(obj).__name__


class Layout:
    """``x`` and ``target`` of one call, checked, with per-block accessors.

    Attributes:
        packed: whether the batch is a ``PackedSequence``.
        batch_first: dense only: whether ``x`` is ``(B, T, ...)``.
        n_steps, n_batch: ``T`` (longest sequence) and ``B``.
        n_rows: number of valid (sequence, step) rows, the ``"mean"`` denominator.
        x_data: packed: ``x.data`` ``(N, *F)``; dense: ``x`` itself.
        y_data: the target in the same storage order (``None`` without a target).
        lengths: ``(B,)`` int64, input batch order.
    """

    x_data: Data
    y_data: Optional[Data]
    n_steps: int
    n_batch: int
    n_rows: int
    lengths: torch.Tensor
    batch_sizes: torch.Tensor  # packed only
    _sorted_lengths: torch.Tensor  # packed only

    def __init__(self, x: object, target: object, batch_first: bool,
                 device: Optional[torch.device] = None):
        # x, target: a Batch (target also None), or dense arrays to stream; anything
        # else is refused here, so both are typed object
        self.packed = isinstance(x, PackedSequence)
        self.batch_first = bool(batch_first) and not self.packed
        self.sorted_indices: Optional[torch.Tensor] = None
        self.unsorted_indices: Optional[torch.Tensor] = None
        self.streamed = False
        if isinstance(x, PackedSequence):
            self._init_packed(x, target)
        elif isinstance(x, torch.Tensor) or is_stream(x):
            x_dense: Data
            if isinstance(x, torch.Tensor):
                x_dense = x
            else:  # is_stream(x): read block by block, never all at once
                x_dense = ArrayStream(x, self.batch_first, device or torch.device("cpu"), "x")
                self.streamed = True
            if is_stream(target):
                target = ArrayStream(target, self.batch_first, device or torch.device("cpu"),
                                     "target")
            self._init_dense(x_dense, target)
        else:
            raise TypeError("x must be a PackedSequence, a dense tensor (T, B, ...) "
                            "((B, T, ...) when batch_first) or an array to stream "
                            f"(numpy, np.memmap), got {_describe(x)}")

    # -- construction -------------------------------------------------------------------
    def _init_packed(self, x: PackedSequence, target: object) -> None:
        check_packed(x, "x")
        self.x_data = x.data
        self.batch_sizes = x.batch_sizes
        self.n_steps = len(x.batch_sizes)
        self.n_batch = int(x.batch_sizes[0])
        self.n_rows = x.data.shape[0]
        self.sorted_indices = x.sorted_indices
        self.unsorted_indices = x.unsorted_indices
        self.lengths = input_order_lengths(x)
        self._sorted_lengths = sorted_lengths(x.batch_sizes)
        self.y_data = None
        if target is None:
            return
        if not isinstance(target, PackedSequence):
            raise TypeError("x is a PackedSequence, so target must be a PackedSequence "
                            f"packed from the same lengths; got {_describe(target)}")
        check_packed(target, "target")
        if not torch.equal(target.batch_sizes, x.batch_sizes):
            raise ValueError(
                "target's sequence lengths do not match x's: "
                f"x has {self.n_batch} sequences over {self.n_steps} steps "
                f"({self.n_rows} rows), target has {int(target.batch_sizes[0])} sequences "
                f"over {len(target.batch_sizes)} steps ({target.data.shape[0]} rows)")
        y_lengths = input_order_lengths(target)
        if not torch.equal(y_lengths, self.lengths):
            bad = int((y_lengths != self.lengths).nonzero()[0])
            raise ValueError(
                f"target's sequence lengths do not match x's: sequence {bad} (input order) "
                f"has {int(self.lengths[bad])} steps in x and {int(y_lengths[bad])} in target")
        self.y_data = target.data
        if not _same_order(x, target):
            self.y_data = target.data[self._row_map(x, target)]

    def _row_map(self, x: PackedSequence, target: PackedSequence) -> torch.Tensor:
        """For each row of ``x.data``, the row of ``target.data`` with the same
        (sequence, step): needed when the two were sorted differently (ties in length)."""
        bs = x.batch_sizes
        offsets = torch.cumsum(bs, 0) - bs
        step = torch.repeat_interleave(torch.arange(len(bs)), bs)
        pos = torch.arange(self.n_rows) - offsets[step]  # sorted position in x
        seq = pos if x.sorted_indices is None else x.sorted_indices.cpu()[pos]
        y_pos = seq if target.unsorted_indices is None else target.unsorted_indices.cpu()[seq]
        return (offsets[step] + y_pos).to(target.data.device)

    def _init_dense(self, x: Data, target: object) -> None:
        if x.dim() < 2:
            raise ValueError("dense x must have a time and a batch dimension: (T, B, ...) "
                             f"or (B, T, ...) with batch_first; got shape {tuple(x.shape)}")
        t_dim = 1 if self.batch_first else 0
        self.n_steps = x.shape[t_dim]
        self.n_batch = x.shape[1 - t_dim]
        if self.n_steps == 0 or self.n_batch == 0:
            raise ValueError(f"x is empty: shape {tuple(x.shape)} has "
                             f"{self.n_steps} time steps and {self.n_batch} sequences")
        self.n_rows = self.n_steps * self.n_batch
        self.x_data = x
        self.lengths = torch.full((self.n_batch,), self.n_steps, dtype=torch.int64)
        self.y_data = None
        if target is None:
            return
        if not isinstance(target, (torch.Tensor, ArrayStream)):
            raise TypeError("x is a dense tensor, so target must be a dense tensor with the "
                            f"same leading (time, batch) dims; got {_describe(target)}")
        if target.dim() < 2 or target.shape[:2] != x.shape[:2]:
            order = "(B, T)" if self.batch_first else "(T, B)"
            raise ValueError(f"target's leading dims {order} must equal x's "
                             f"{tuple(x.shape[:2])}, got target shape {tuple(target.shape)}")
        self.y_data = target

    # -- blocks ------------------------------------------------------------------------
    def blocks(self, block_len: int) -> List[TimeBlock]:
        if self.packed:
            assert isinstance(self.x_data, torch.Tensor)  # packed: x.data (streams are dense)
            x = PackedSequence(self.x_data, self.batch_sizes)
            return split_packed(x, block_len)
        return split_dense(self.n_steps, self.n_batch, block_len)

    def whole(self) -> TimeBlock:
        """The whole batch as a single block."""
        return self.blocks(max(self.n_steps, 1))[0]

    def part(self, data: Data, block: TimeBlock) -> torch.Tensor:
        """The block's share of ``x_data`` or ``y_data`` (a view): packed rows
        ``(R, ...)``, dense ``(T_b, B, ...)`` or ``(B, T_b, ...)``."""
        if isinstance(data, ArrayStream):  # dense only: a packed batch's data is a tensor
            return data.read(block.start, block.stop)
        if self.packed:
            return data[block.rows]
        if self.batch_first:
            return data[:, block.start:block.stop]
        return data[block.start:block.stop]

    def model_input(self, x_part: torch.Tensor, block: TimeBlock) -> Batch:
        """The block's input as the model receives it, from :meth:`part` of ``x_data``."""
        if self.packed:
            return PackedSequence(x_part, block.batch_sizes)
        return x_part

    def rows(self, part: torch.Tensor, block: TimeBlock) -> torch.Tensor:
        """A block's target :meth:`part` as rows ``(R, ...)``, in :meth:`output_rows` order."""
        if self.packed:
            return part
        return part.reshape(-1, *part.shape[2:])

    def output_rows(self, y, block: TimeBlock) -> torch.Tensor:
        """The model's block output as rows ``(R, ...)``."""
        rows = block.rows.stop - block.rows.start
        if isinstance(y, PackedSequence):
            y = y.data
        if not isinstance(y, torch.Tensor):
            raise TypeError(f"model output must be a tensor or PackedSequence, got {_describe(y)}")
        if self.packed:
            if y.dim() == 0 or y.shape[0] != rows:
                raise ValueError(f"model output has shape {tuple(y.shape)} for a packed block "
                                 f"of {rows} rows (steps {block.start}:{block.stop}); expected "
                                 f"{rows} rows")
            return y
        want = ((self.n_batch, len(block)) if self.batch_first else (len(block), self.n_batch))
        if y.dim() < 2 or tuple(y.shape[:2]) != want:
            raise ValueError(f"model output for steps {block.start}:{block.stop} should start "
                             f"with dims {want}, got shape {tuple(y.shape)}")
        return y.reshape(rows, *y.shape[2:])

    def row_weights(self, block: TimeBlock, dtype, device) -> torch.Tensor:
        """``"seq_mean"`` weight of each row of the block: 1 / (B * its sequence's length)."""
        if not self.packed:
            rows = block.rows.stop - block.rows.start
            return torch.full((rows,), 1.0 / self.n_rows, dtype=dtype, device=device)
        bs = block.batch_sizes
        step_start = torch.cumsum(bs, 0) - bs
        pos = torch.arange(int(bs.sum())) - torch.repeat_interleave(step_start, bs)
        w = 1.0 / (self.n_batch * self._sorted_lengths[pos].to(torch.float64))
        return w.to(dtype=dtype, device=device)

    def scatter(self, full: torch.Tensor, block: TimeBlock, part: torch.Tensor) -> None:
        """Write a block's gradient ``part`` into the whole-batch gradient ``full``."""
        if self.packed:
            full[block.rows] = part
        elif self.batch_first:
            full[:, block.start:block.stop] = part
        else:
            full[block.start:block.stop] = part

    # -- batch order -----------------------------------------------------------------------
    def to_sorted(self, t: torch.Tensor, batch_dim: int) -> torch.Tensor:
        """Input batch order -> internal (sorted) order."""
        if self.sorted_indices is None:
            return t
        return t.index_select(batch_dim, self.sorted_indices.to(t.device))

    def to_input(self, t: torch.Tensor, batch_dim: int) -> torch.Tensor:
        """Internal (sorted) order -> input batch order."""
        if self.unsorted_indices is None:
            return t
        return t.index_select(batch_dim, self.unsorted_indices.to(t.device))


def check_packed(p: PackedSequence, name: str) -> None:
    """Raise ``ValueError``/``TypeError`` unless ``p`` is what ``pack_sequence`` makes:
    ``batch_sizes`` a non-empty 1-D CPU int64 tensor of positive, non-increasing counts
    summing to ``data``'s rows, and ``sorted_indices``/``unsorted_indices`` both ``None``
    or inverse permutations of the batch. (``PackedSequence(data, batch_sizes)`` built
    by hand checks none of this, and the engine would fail deep inside instead.)"""
    data, bs = p.data, p.batch_sizes
    if not isinstance(data, torch.Tensor) or data.dim() < 1:
        raise TypeError(f"{name}.data must be a tensor (N, ...) of N rows, got "
                        f"{_describe(data)}")
    if not isinstance(bs, torch.Tensor) or bs.dim() != 1 or bs.dtype != torch.int64 \
            or bs.device.type != "cpu":
        raise ValueError(f"{name}.batch_sizes must be a 1-D int64 CPU tensor (as "
                         f"pack_sequence makes it), got {_describe(bs)}"
                         + (f" of dtype {bs.dtype} on {bs.device}"
                            if isinstance(bs, torch.Tensor) else ""))
    if len(bs) == 0:
        raise ValueError(f"{name} has no time steps (batch_sizes is empty)")
    if bool((bs < 1).any()) or bool((bs[1:] > bs[:-1]).any()):
        raise ValueError(f"{name}.batch_sizes must be positive and non-increasing (the "
                         f"number of sequences still running at each step), got "
                         f"{bs.tolist()[:20]}{' ...' if len(bs) > 20 else ''}")
    if int(bs.sum()) != data.shape[0]:
        raise ValueError(f"{name}.batch_sizes sum to {int(bs.sum())} rows but {name}.data "
                         f"has {data.shape[0]} rows (shape {tuple(data.shape)})")
    s_idx, u_idx = p.sorted_indices, p.unsorted_indices
    if s_idx is None and u_idx is None:
        return
    n = int(bs[0])
    ident = torch.arange(n)
    for what, idx in (("sorted_indices", s_idx), ("unsorted_indices", u_idx)):
        if not isinstance(idx, torch.Tensor) or idx.dim() != 1 or len(idx) != n \
                or idx.dtype != torch.int64 \
                or not torch.equal(idx.cpu().sort().values, ident):
            raise ValueError(f"{name}.{what} must be a permutation of the {n} sequences "
                             f"(int64, length {n}), got {_describe(idx)}"
                             + (f": {idx.tolist()[:20]}" if isinstance(idx, torch.Tensor)
                                and idx.dim() == 1 else ""))
    assert s_idx is not None and u_idx is not None  # both permutations: checked above
    if not torch.equal(u_idx.cpu()[s_idx.cpu()], ident):
        raise ValueError(f"{name}.unsorted_indices must be the inverse permutation of "
                         f"{name}.sorted_indices, got {u_idx.tolist()[:20]} for "
                         f"{s_idx.tolist()[:20]}")


def _same_order(a: PackedSequence, b: PackedSequence) -> bool:
    if a.sorted_indices is None and b.sorted_indices is None:
        return True
    if a.sorted_indices is None or b.sorted_indices is None:
        n = int(a.batch_sizes[0])
        ident = torch.arange(n)
        other = a.sorted_indices if a.sorted_indices is not None else b.sorted_indices
        assert other is not None  # exactly one of the two is None here
        return torch.equal(other.cpu(), ident)
    return torch.equal(a.sorted_indices.cpu(), b.sorted_indices.cpu())
