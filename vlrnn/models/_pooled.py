"""``SequenceModel``: a recurrent encoder whose state also carries the running sum and
maximum of its outputs, and a head that reads one vector per sequence from that state.

Pooling over time (mean or max of every step's output) is not a sum of per-step losses,
so :func:`vlrnn.block_loss` cannot take it as a per-row loss. Carried in the state it
needs nothing new: the engine already hands each block the state the previous block left
and returns every sequence's state after its own last step (``out.state``), exactly
differentiable. A loss on ``model.readout(out.state)`` is then the exact gradient of the
whole series, in memory of one block.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

__all__ = ["POOLS", "SequenceModel", "last_hidden"]

Batch = Union[torch.Tensor, PackedSequence]
#: what ``readout`` concatenates: the last layer's final hidden state, the mean and the
#: maximum of the last layer's outputs over the sequence's steps.
POOLS = ("last", "mean", "max")


def _inner(rnn: nn.Module) -> nn.Module:
    """The module a wrapper that holds it as ``.module`` runs (``vlrnn.Blockwise``)."""
    inner = getattr(rnn, "module", rnn)
    return inner if isinstance(inner, nn.Module) else rnn


def _batch_dim(rnn: nn.Module) -> int:
    if isinstance(_inner(rnn), nn.RNNBase):
        return 1
    return int(getattr(rnn, "state_batch_dim", 0))


def last_hidden(rnn: nn.Module, state: Any) -> torch.Tensor:
    """The last layer's hidden state ``(B, H)`` from ``rnn``'s state (batch order kept).

    ``nn.LSTM``: ``(h, c)`` with ``h`` ``(layers, B, H)``; ``nn.GRU``/``nn.RNN``: ``h``
    (bidirectional, also wrapped in ``vlrnn.Blockwise``: ``(B, 2 H)``, the last layer's
    forward state after the last step and its reverse state after reading back to the
    first; :class:`~vlrnn.models.SequenceModel` runs such an rnn over whole sequences);
    :class:`~vlrnn.models.StackedRNN` (and models with ``state_batch_dim = 0`` holding a
    list per layer): the last entry, or its first tensor (``h`` of ``(h, c)``); a model
    with a ``last_hidden(state)`` method (e.g. :class:`~vlrnn.models.ConvThen`): its own.
    """
    if callable(getattr(rnn, "last_hidden", None)):  # the model says where it is
        return rnn.last_hidden(state)
    inner = _inner(rnn)
    if isinstance(inner, nn.RNNBase):
        h = state[0] if isinstance(inner, nn.LSTM) else state
        if inner.bidirectional:
            return torch.cat([h[-2], h[-1]], dim=1)
        return h[-1]
    s = state[-1] if isinstance(state, (tuple, list)) else state  # last layer
    if isinstance(s, (tuple, list)):  # (h, c)
        s = s[0]
    if not isinstance(s, torch.Tensor) or s.dim() != 2:
        raise TypeError("SequenceModel: cannot find the last layer's hidden state (B, H) in "
                        f"the rnn's state of type {type(state).__name__}")
    return s


def _last_rows(y: Batch, batch_first: bool) -> torch.Tensor:
    """``(B, H)``: each sequence's last output row of this block, batch in input order."""
    if not isinstance(y, PackedSequence):
        return y[:, -1] if batch_first else y[-1]
    sizes = y.batch_sizes.to(y.data.device)
    n = int(y.batch_sizes[0])
    starts = torch.cumsum(sizes, 0) - sizes                      # first row of each step
    j = torch.arange(n, device=y.data.device)
    t_last = (sizes.unsqueeze(0) > j.unsqueeze(1)).sum(1) - 1    # (n,) sorted order
    rows = y.data.index_select(0, starts.index_select(0, t_last) + j)
    if y.unsorted_indices is not None:
        rows = rows.index_select(0, y.unsorted_indices)
    return rows


def _pool_rows(data: torch.Tensor, seq: torch.Tensor, n: int
               ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence sum (with a trailing count column) and max of ``data`` rows.

    ``data``: ``(R, H)`` rows; ``seq``: ``(R,)`` sequence of each row in ``0..n-1``.
    Returns ``(n, H + 1)`` sums (last column: number of rows) and ``(n, H)`` maxima.
    """
    ones = torch.ones(data.shape[0], 1, dtype=data.dtype, device=data.device)
    ext = torch.cat([data, ones], dim=1)
    total = ext.new_zeros(n, ext.shape[1]).index_add(0, seq, ext)
    idx = seq.unsqueeze(1).expand_as(data)
    peak = data.new_zeros(n, data.shape[1]).scatter_reduce(0, idx, data, "amax",
                                                          include_self=False)
    return total, peak


class SequenceModel(nn.Module):
    """An rnn run over whole series plus a head reading one vector per series.

    ``model(x, state) -> (y, new_state)`` follows vlrnn's model contract: ``y`` is the
    rnn's output, ``new_state`` is ``rnn_state`` for ``pool=("last",)`` and
    ``(rnn_state, running_sum, running_max)`` otherwise. ``running_sum`` holds the sum
    of the last layer's outputs over the steps seen so far with the number of those
    steps in its last column (``(B, H + 1)``); ``running_max`` their maximum
    (``(B, H)``). Both carry the batch on the rnn's ``state_batch_dim`` (shape
    ``(1, B, ...)`` for ``nn.RNNBase``), so the engine moves them with the rnn state.

    ``readout(state) -> (B, n_out)``: the head applied to the concatenation of the
    pools named in ``pool`` (a subset of :data:`POOLS`, in that order), computed from a
    final state as :func:`vlrnn.block_loss` returns it in ``out.state``.

    A bidirectional rnn (``rnn.bidirectional``: e.g. ``vlrnn.Blockwise`` of a
    bidirectional ``nn.LSTM``, whose memory stays flat in the length) reads each whole
    sequence in one call (:attr:`reads_whole_sequence`): run the model as one block
    (``block_len`` at least the longest sequence; vlrnn's training loop does). A second
    call that continues a sequence is refused: the reverse direction would start over.

    Args:
        rnn: ``nn.LSTM``/``nn.GRU``/``nn.RNN`` (time-major; bidirectional: see above) or
            a model with the same contract whose output's last dim is ``hidden_size``.
        hidden_size: width ``H`` of the rnn's output.
        n_out: outputs of the head (classes or targets).
        pool: which summaries the head reads, e.g. ``("last",)`` or
            ``("last", "mean", "max")``.
        dropout: probability of zeroing each pooled feature before the head, in
            training mode only (``nn.Dropout``; 0: none).

    >>> import torch
    >>> from torch import nn
    >>> from torch.nn.utils.rnn import pack_sequence
    >>> from vlrnn.models import SequenceModel
    >>> model = SequenceModel(nn.GRU(2, 8), hidden_size=8, n_out=3, pool=("last", "mean"))
    >>> x = pack_sequence([torch.randn(9, 2), torch.randn(4, 2)])
    >>> _, state = model(x, None)
    >>> model.readout(state).shape                     # one row of logits per series
    torch.Size([2, 3])
    """

    def __init__(self, rnn: nn.Module, hidden_size: int, n_out: int,
                 pool: Sequence[str] = ("last",), dropout: float = 0.0):
        super().__init__()
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) \
                or not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be a probability in [0, 1), got {dropout!r}")
        pool = tuple(pool)
        bad = [p for p in pool if p not in POOLS]
        if not pool or bad or len(set(pool)) != len(pool):
            raise ValueError(f"pool must name one or more of {POOLS} (each once), got "
                             f"{pool!r}")
        self.rnn = rnn
        self.pool = tuple(p for p in POOLS if p in pool)
        self.hidden_size = int(hidden_size)
        self.head = nn.Linear(self.hidden_size * len(self.pool), int(n_out))
        self.dropout = nn.Dropout(float(dropout))

    @property
    def state_batch_dim(self) -> int:
        return _batch_dim(self.rnn)

    @property
    def batch_first(self) -> bool:
        return bool(getattr(self.rnn, "batch_first", False))

    @property
    def reads_whole_sequence(self) -> bool:
        """Whether the rnn is bidirectional: each call must hold whole sequences."""
        return bool(getattr(self.rnn, "bidirectional", False))

    @property
    def carries_last(self) -> bool:
        """Whether the state carries each sequence's last output row: for a ``"last"``
        pool over a model whose state does not hold its output (``state_holds_output =
        False``, e.g. :class:`~vlrnn.models.LRU`, :class:`~vlrnn.models.Mamba`)."""
        return "last" in self.pool and not getattr(self.rnn, "state_holds_output", True)

    @property
    def carries_pools(self) -> bool:
        return self.pool != ("last",) or self.carries_last

    def forward(self, x: Batch, state: Optional[Any] = None) -> Tuple[Batch, Any]:
        if state is not None and self.reads_whole_sequence:
            raise ValueError("SequenceModel with a bidirectional rnn reads whole sequences: "
                             "got a state to continue from (run it as one block: block_len "
                             "at least the longest sequence)")
        if not self.carries_pools:
            return self.rnn(x, state)
        rnn_state, total, peak = (None, None, None) if state is None else state[:3]
        y, new_rnn = self.rnn(x, rnn_state)
        bd = self.state_batch_dim
        if isinstance(y, PackedSequence):
            sizes = y.batch_sizes.tolist()
            n = sizes[0]
            seq = torch.cat([torch.arange(b) for b in sizes]).to(y.data.device)
            if y.sorted_indices is not None:  # state rows are in input order
                seq = y.sorted_indices[seq]
            add, blk_max = _pool_rows(y.data, seq, n)
        else:
            steps = y.transpose(0, 1) if self.batch_first else y  # (T, B, H)
            T, n = steps.shape[0], steps.shape[1]
            count = steps.new_full((n, 1), float(T))
            add = torch.cat([steps.sum(0), count], dim=1)
            blk_max = steps.amax(0)
        if bd == 1:
            add, blk_max = add.unsqueeze(0), blk_max.unsqueeze(0)
        extra: Tuple[torch.Tensor, ...] = ()
        if self.carries_last:  # every sequence in x has its latest output row in this block
            row = _last_rows(y, self.batch_first)
            extra = (row.unsqueeze(0) if bd == 1 else row,)
        if total is None:
            return y, (new_rnn, add, blk_max, *extra)
        seen = total[..., -1:] > 0  # a sequence's first block has nothing to compare with
        return y, (new_rnn, total + add, torch.where(seen, torch.maximum(peak, blk_max),
                                                     blk_max), *extra)

    def features(self, state: Any) -> torch.Tensor:
        """``(B, H * len(pool))``: the pools of each sequence from its final state."""
        rnn_state = state[0] if self.carries_pools else state
        parts: List[torch.Tensor] = []
        if "last" in self.pool:
            if self.carries_last:
                last = state[3]
                parts.append(last[0] if self.state_batch_dim == 1 else last)
            else:
                parts.append(last_hidden(self.rnn, rnn_state))
        if self.carries_pools:
            total, peak = state[1], state[2]
            if self.state_batch_dim == 1:
                total, peak = total[0], peak[0]
            if "mean" in self.pool:
                parts.append(total[:, :-1] / total[:, -1:].clamp_min(1.0))
            if "max" in self.pool:
                parts.append(peak)
        return torch.cat(parts, dim=1)

    def readout(self, state: Any) -> torch.Tensor:
        """``(B, n_out)``: the head on :meth:`features` of a final state (after
        ``dropout`` in training mode)."""
        feats = self.features(state)
        return self.head(self.dropout(feats) if self.dropout.p else feats)
