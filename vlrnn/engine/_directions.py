"""One layer, one direction of a torch RNN, and sequences reversed within their lengths.

A bidirectional (or multi-layer) ``nn.LSTM``/``nn.GRU``/``nn.RNN`` is run by
:class:`vlrnn.Blockwise` layer by layer and direction by direction. :class:`DirectionView`
is a single-layer unidirectional model over the parent's own weight tensors (so that
gradients reach them); the reverse direction is that model run forward over each
sequence reversed within its own length (:func:`reverse_sequences`), whose outputs are
reversed back.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union, cast

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from .._common import Batch
from ._blocks import TimeBlock, sorted_lengths
from ._layout import Data, Layout

# (overloads of different signatures: the state is a pair for the LSTM, one tensor else)
_KERNELS: Dict[str, Callable[..., Tuple[torch.Tensor, ...]]] = {
    "LSTM": torch.lstm, "GRU": torch.gru, "RNN_TANH": torch.rnn_tanh, "RNN_RELU": torch.rnn_relu}


class DirectionView(nn.Module):
    """Layer ``layer``, direction ``reverse`` of ``rnn`` as a one-layer, one-direction
    model ``(x, state) -> (y, new_state)`` in the calling convention of ``rnn``
    (``state``: ``(h, c)`` each ``(1, B, H)`` for an LSTM, else ``h`` ``(1, B, H)``;
    batch on dim 1; dense input ``(T, B, F)``, or ``(B, T, F)`` if ``rnn.batch_first``).

    It owns no parameters: ``parameters()`` yields the parent's tensors for this layer
    and direction (``weight_ih_l{layer}[_reverse]`` and the rest), which its forward
    passes to torch's own kernel, so gradients land in the parent's ``.grad``.
    """

    state_batch_dim = 1
    rnn: nn.RNNBase  # set with object.__setattr__: not a submodule

    def __init__(self, rnn: nn.RNNBase, layer: int, reverse: bool):
        super().__init__()
        object.__setattr__(self, "rnn", rnn)  # not a submodule: no parameters of its own
        suffix = f"_l{layer}" + ("_reverse" if reverse else "")
        pat = re.compile(r"(weight|bias)_(ih|hh|hr)" + re.escape(suffix) + "$")
        self.names = [n for n in rnn._flat_weights_names if pat.match(n)]
        self.layer = layer
        self.reverse = reverse
        self.batch_first = rnn.batch_first
        self.hidden_size = rnn.hidden_size
        self.proj_size = getattr(rnn, "proj_size", 0) or 0

    def weights(self) -> List[torch.Tensor]:
        return [getattr(self.rnn, n) for n in self.names]

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]:
        # the weights are the parent's registered parameters (named by _flat_weights_names)
        return iter(cast(List[nn.Parameter], self.weights()))

    def forward(self, x: Batch, state: Any = None) -> Tuple[Batch, object]:
        rnn = self.rnn
        lstm = rnn.mode == "LSTM"
        kernel = _KERNELS[rnn.mode]
        data = x.data if isinstance(x, PackedSequence) else x
        n_batch = int(x.batch_sizes[0]) if isinstance(x, PackedSequence) else \
            data.shape[0 if self.batch_first else 1]
        if state is None:
            h_size = self.proj_size or self.hidden_size
            h = data.new_zeros(1, n_batch, h_size)
            state = (h, data.new_zeros(1, n_batch, self.hidden_size)) if lstm else h
        hx = tuple(state) if lstm else state
        w = self.weights()
        bias = rnn.bias
        train = self.training and rnn.training
        y: Batch
        if isinstance(x, PackedSequence):
            out = kernel(data, x.batch_sizes, hx, w, bias, 1, 0.0, train, False)
            y = PackedSequence(out[0], x.batch_sizes, x.sorted_indices, x.unsorted_indices)
        else:
            out = kernel(data, hx, w, bias, 1, 0.0, train, False, self.batch_first)
            y = out[0]
        return y, ((out[1], out[2]) if lstm else out[1])

    def extra_repr(self) -> str:
        return f"{type(self.rnn).__name__} layer {self.layer}" + (
            ", reverse" if self.reverse else "")


def reversal_index(batch_sizes: torch.Tensor) -> torch.Tensor:
    """For packed rows (sorted order, ``batch_sizes`` per step), the row holding the same
    sequence at its mirrored step: row ``(t, j)`` -> row ``(L_j - 1 - t, j)`` (``L_j``
    the length of sorted sequence ``j``). Step ``L_j - 1 - t`` runs sequence ``j``
    whenever ``t`` does, so the reversed batch has the same ``batch_sizes``; the map is
    its own inverse. ``(N,)`` int64 on CPU."""
    bs = batch_sizes.cpu()
    offsets = torch.cumsum(bs, 0) - bs
    step = torch.repeat_interleave(torch.arange(len(bs)), bs)
    pos = torch.arange(int(bs.sum())) - offsets[step]  # sorted position of each row
    lengths = sorted_lengths(bs)
    return offsets[lengths[pos] - 1 - step] + pos


def reverse_sequences(data: torch.Tensor, packed: bool, batch_first: bool,
                      index: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Each sequence reversed within its own length (differentiable): packed rows by
    ``index`` (:func:`reversal_index`), dense ``(T, B, ...)``/``(B, T, ...)`` along time."""
    if packed:
        assert index is not None  # packed callers pass reversal_index
        return data.index_select(0, index.to(data.device))
    return data.flip(1 if batch_first else 0)


class TimeReversed:
    """A :class:`~vlrnn.engine._layout.Layout` whose blocks read each sequence backwards.

    Block ``k`` of the reversed batch (reversed steps ``[start, stop)``) is made from the
    original data on the fly: dense ``x[T - stop : T - start]`` flipped in time, packed
    the rows :func:`reversal_index` maps them to. The reversed input is never stored
    whole; gradients are scattered back to the original rows, and :meth:`unreverse`
    puts the outputs (computed in reversed order) back in the original order. Every
    other attribute and method is the wrapped layout's (same ``batch_sizes``, blocks,
    batch order).
    """

    def __init__(self, layout: Layout):
        if layout.streamed:
            raise ValueError("reverse=True needs x in memory (a tensor or PackedSequence), "
                             "not a stream read block by block")
        self.base = layout
        self.index: Optional[torch.Tensor] = \
            reversal_index(layout.batch_sizes) if layout.packed else None
        self._t_dim = 1 if layout.batch_first else 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.base, name)

    def _span(self, block: TimeBlock) -> slice:
        n = self.base.n_steps
        return slice(n - block.stop, n - block.start)

    def part(self, data: Data, block: TimeBlock) -> torch.Tensor:
        assert isinstance(data, torch.Tensor)  # never a stream: refused in __init__
        if self.base.packed:
            assert self.index is not None  # packed: made in __init__
            rows = self.index[block.rows].to(data.device)
            return data.index_select(0, rows)
        span = self._span(block)
        part = data[:, span] if self._t_dim else data[span]
        return part.flip(self._t_dim)

    def scatter(self, full: torch.Tensor, block: TimeBlock, part: torch.Tensor) -> None:
        """Add a block's gradient ``part`` (reversed order) into ``full`` (original
        order). Added, not written: the reverse direction of a bidirectional layer
        accumulates into the buffer its forward direction filled."""
        if self.base.packed:
            assert self.index is not None  # packed: made in __init__
            full.index_add_(0, self.index[block.rows].to(full.device), part)
        elif self._t_dim:
            full[:, self._span(block)] += part.flip(1)
        else:
            full[self._span(block)] += part.flip(0)

    def unreverse(self, y: torch.Tensor) -> torch.Tensor:
        """Outputs joined in reversed order (packed rows or dense) -> original order."""
        return reverse_sequences(y, self.base.packed, self.base.batch_first, self.index)


# A layout the engine runs over: a Layout, or one read backwards (TimeReversed has every
# attribute of the Layout it wraps, its own or through __getattr__).
AnyLayout = Union[Layout, TimeReversed]
