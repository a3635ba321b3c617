"""A stack of recurrent cells that follows vlrnn's ``model(x, state) -> (y, state)`` contract.

:class:`StackedRNN` runs any cell (``nn.LSTMCell``, ``nn.GRUCell``, ``nn.RNNCell`` or a
user's cell) over a dense or packed batch, one layer after the other, and returns the
state of every layer in a form the block engine can carry between calls: a tuple with
one entry per layer, the batch on dim 0 of every tensor (``state_batch_dim = 0``).

Packed input follows ``nn.LSTM``'s conventions: ``x.data`` is stored in sorted order
(longest sequence first); the state given and returned is in the caller's (input)
batch order when ``x.sorted_indices`` is set, in sorted order otherwise; each
sequence's returned state is its state after its own last step.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from .._common import positive_int as _positive_int
from ._fused import fused_kernel, run_fused_layer
from ._head import WithHead
from ._inputs import dense_time_major
from ._split_cell import is_split_cell
from ._step_loop import CellState, _leaves, _same_kind, step_loop

__all__ = ["StackedRNN"]

CellSpec = Union[str, Callable[[int, int], nn.Module]]

_CELLS = {
    "lstm": nn.LSTMCell,
    "gru": nn.GRUCell,
    "rnn": lambda n_in, n_hid: nn.RNNCell(n_in, n_hid, nonlinearity="tanh"),
}


def _cell_factory(cell: CellSpec) -> Callable[[int, int], nn.Module]:
    if isinstance(cell, str):
        try:
            return _CELLS[cell.lower()]
        except KeyError:
            raise ValueError(f"unknown cell {cell!r}; valid names are "
                             f"{', '.join(repr(k) for k in _CELLS)}, or pass an nn.Module "
                             "cell class or a factory called as factory(in_size, hidden_size)"
                             ) from None
    if callable(cell):
        return cell
    raise ValueError(f"cell must be one of {', '.join(repr(k) for k in _CELLS)}, an nn.Module "
                     f"cell class or a factory callable, got {type(cell).__name__}")


def _check_cell_state(s: Any, layer: int, n_batch: int, what: str) -> None:
    leaves = [s] if isinstance(s, torch.Tensor) else s
    if not isinstance(leaves, (tuple, list)) or not leaves or not all(
            isinstance(t, torch.Tensor) for t in leaves):
        raise TypeError(f"{what} of layer {layer} must be a tensor (B, H) or a tuple/list of "
                        f"such tensors, got {type(s).__name__}")
    for t in leaves:
        if t.dim() < 1 or t.shape[0] != n_batch:
            raise ValueError(f"{what} of layer {layer} has a tensor of shape {tuple(t.shape)}; "
                             f"expected batch size {n_batch} on dim 0 (state_batch_dim = 0)")


def _layer_sizes(hidden_size: Any, num_layers: Optional[int]) -> List[int]:
    """Per-layer output sizes from ``hidden_size`` (int or list) and ``num_layers``."""
    if isinstance(hidden_size, (list, tuple)):
        if not hidden_size:
            raise ValueError("hidden_size must be a positive int or a non-empty list of them, "
                             "got an empty list")
        sizes = [_positive_int(f"hidden_size[{i}]", h) for i, h in enumerate(hidden_size)]
        if num_layers is not None and _positive_int("num_layers", num_layers) != len(sizes):
            raise ValueError(f"num_layers={num_layers} does not match hidden_size={sizes}, "
                             f"which has {len(sizes)} layer sizes; leave num_layers out")
        return sizes
    h = _positive_int("hidden_size", hidden_size)
    return [h] * (1 if num_layers is None else _positive_int("num_layers", num_layers))


class StackedRNN(nn.Module):
    r"""Multi-layer recurrent network built from a recurrent cell, one cell per layer.

    Called as ``model(x, state) -> (y, new_state)``, like ``nn.LSTM``, so that an engine
    can run it block by block over time and carry ``new_state`` into the next call.
    Layer 0 reads the input ``x_0``, layer ``l > 0`` reads ``x_l``, what layer ``l - 1``
    passes up; ``y`` is what the last layer passes up. Layer ``l`` with cell outputs
    ``o_l`` passes up, in this order::

        u_l = LayerNorm_l(o_l)       if layer_norm   (else o_l)
        u_l = u_l + x_l              if residual and layer l's input and output sizes match
        x_{l+1} = dropout(u_l)       training mode, every layer but the last

    Layer norm acts on what a layer passes up, not inside the recurrence (the carried
    state is the cell's own); the residual adds the input the layer actually read
    (after the previous layer's dropout). All of this is one op per layer over the whole
    block, and the dropout masks come from the global RNG, which the block engine
    replays on recompute.

    Args:
        input_size: number of input features ``F``.
        hidden_size: number of features of every layer's output (an int), or a list with
            one size per layer. The attribute ``hidden_size`` is the last layer's size
            (the features of ``y``); ``hidden_sizes`` holds all of them.
        num_layers: number of stacked cells; default ``len(hidden_size)`` for a list
            (a different value is a ``ValueError``), else 1.
        cell: ``"lstm"`` (``nn.LSTMCell``), ``"gru"`` (``nn.GRUCell``), ``"rnn"``
            (``nn.RNNCell``, tanh), or an ``nn.Module`` cell class / factory called as
            ``cell(in_size, hidden_size)`` per layer (``in_size`` is ``input_size`` for
            layer 0, the previous layer's size above). A cell is called
            ``cell(x_t, h) -> new_h`` with ``x_t`` ``(b, in_size)`` and ``h`` a tensor
            ``(b, H_l)`` or a tuple of them; its output is ``new_h[0]`` when ``new_h`` is a
            tuple/list, else ``new_h``.
        dropout: probability of zeroing each output element of every layer but the
            last, in training mode only (as ``nn.LSTM``'s ``dropout``).
        batch_first: dense input and output are ``(B, T, *)`` instead of ``(T, B, *)``.
            Packed input is unaffected.
        residual: add each layer's input to its output, for every layer whose input and
            output sizes are equal (layer 0 included when ``input_size`` equals its
            size); layers with different sizes get none. ``ValueError`` if no layer
            qualifies (the option would do nothing).
        layer_norm: ``nn.LayerNorm`` (learnt scale and shift) on every layer's output.
        fused: run each layer whose cell is exactly ``nn.LSTMCell``, ``nn.GRUCell`` or
            ``nn.RNNCell`` as one call of torch's fused kernel (``torch.lstm`` etc.) on the
            cell's own parameters, as fast as ``nn.LSTM``; same numbers as the step loop.
            ``False`` runs every layer as a Python loop of cell calls (the reference).
            Other cells always run the step loop; one that follows the split-cell
            protocol (:class:`~vlrnn.models.SplitCell`: ``input_part(x)`` and
            ``step(u, h)``) runs ``input_part`` once over each block's rows and only
            ``step`` per step.

    Inputs: ``x``, ``state``
        - **x**: dense ``(T, B, F)`` (``(B, T, F)`` if ``batch_first``) or a
          ``PackedSequence`` whose ``data`` is ``(N, F)``.
        - **state** (optional): tuple of ``num_layers`` entries, entry ``l`` the state of
          layer ``l``: a tensor ``(B, H)`` or a tuple of them (``(h, c)`` for LSTM). The
          batch is dim 0, in the caller's (input) order; for a ``PackedSequence`` without
          ``sorted_indices`` that is the packed (sorted) order. ``None`` starts every layer
          from the cell's ``initial_state(batch_size, device, dtype)`` if it has one, else
          ``(zeros, zeros)`` for ``nn.LSTMCell``, else zeros ``(B, H)``.

    Outputs: ``y``, ``new_state``
        - **y**: same form as ``x``, ``H`` the last layer's size: dense ``(T, B, H)``
          (``(B, T, H)`` if ``batch_first``), or a ``PackedSequence`` with ``data`` ``(N, H)`` and the same
          ``batch_sizes``, ``sorted_indices`` and ``unsorted_indices`` as ``x``.
        - **new_state**: same format and batch order as ``state``; each sequence's state
          after its own last step (shorter packed sequences stop earlier).

    Attributes:
        cells: ``nn.ModuleList`` of the ``num_layers`` cells.
        norms: ``nn.ModuleList`` of ``nn.LayerNorm``, one per layer (only with
            ``layer_norm``).
        hidden_sizes: tuple of every layer's output size.
        state_batch_dim: ``0``, where the batch is in every state tensor.

    >>> import torch
    >>> from vlrnn.models import StackedRNN
    >>> rnn = StackedRNN(3, [16, 8], cell="gru", residual=False, layer_norm=True)
    >>> y, state = rnn(torch.randn(25, 2, 3))
    >>> y.shape, [h.shape for h in state]
    (torch.Size([25, 2, 8]), [torch.Size([2, 16]), torch.Size([2, 8])])
    """

    state_batch_dim = 0

    def __init__(self, input_size: int, hidden_size: Union[int, Sequence[int]],
                 num_layers: Optional[int] = None, cell: CellSpec = "lstm",
                 dropout: float = 0.0, batch_first: bool = False, residual: bool = False,
                 layer_norm: bool = False, fused: bool = True):
        super().__init__()
        self.fused = bool(fused)
        self.input_size = _positive_int("input_size", input_size)
        sizes = _layer_sizes(hidden_size, num_layers)
        self.hidden_sizes: Tuple[int, ...] = tuple(sizes)
        self.hidden_size = sizes[-1]  # features of y
        self.num_layers = len(sizes)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) \
                or not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be a probability in [0, 1), got {dropout!r}")
        self.dropout = float(dropout)
        if self.dropout > 0 and self.num_layers == 1:
            warnings.warn("dropout only acts between layers; with num_layers=1 it has no "
                          "effect", UserWarning, stacklevel=2)
        self.batch_first = bool(batch_first)
        in_sizes = [self.input_size] + sizes[:-1]
        self.residual = bool(residual)
        # layers whose output gets their input added (sizes must match)
        self._residual_layers = frozenset(
            l for l in range(self.num_layers) if residual and in_sizes[l] == sizes[l])
        if self.residual and not self._residual_layers:
            chain = " -> ".join(map(str, [self.input_size] + sizes))
            raise ValueError(f"residual=True needs a layer whose input and output sizes are "
                             f"equal, but the layers map {chain}")
        self.layer_norm = bool(layer_norm)
        if self.layer_norm:
            self.norms = nn.ModuleList(nn.LayerNorm(h) for h in sizes)
        factory = _cell_factory(cell)
        cells = []
        for layer in range(self.num_layers):
            c = factory(in_sizes[layer], sizes[layer])
            if not isinstance(c, nn.Module):
                raise TypeError(f"cell factory must return an nn.Module, got "
                                f"{type(c).__name__} for layer {layer}")
            cells.append(c)
        self.cells = nn.ModuleList(cells)

    def extra_repr(self) -> str:
        hidden = (self.hidden_size if len(set(self.hidden_sizes)) == 1
                  else list(self.hidden_sizes))
        s = f"{self.input_size}, {hidden}, num_layers={self.num_layers}"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.batch_first:
            s += ", batch_first=True"
        if self.residual:
            s += ", residual=True"
        if self.layer_norm:
            s += ", layer_norm=True"
        if not self.fused:
            s += ", fused=False"
        return s

    @property
    def output_size(self) -> int:
        """Features of ``y``: the last layer's size."""
        return self.hidden_size

    def with_head(self, n_out: int, bias: bool = True) -> WithHead:
        """This model followed by ``nn.Linear(hidden_size, n_out)`` on every output step
        (a :class:`~vlrnn.models.WithHead`; same ``(x, state) -> (y, state)`` contract,
        ``y`` with ``n_out`` features)."""
        return WithHead(self, nn.Linear(self.hidden_size, _positive_int("n_out", n_out),
                                        bias=bias))

    def initial_state(self, batch_size: int, device: Optional[torch.device] = None,
                      dtype: Optional[torch.dtype] = None) -> Tuple[CellState, ...]:
        """The state used when ``state=None``: one entry per layer, batch on dim 0."""
        return tuple(self._cell_initial(c, h, batch_size, device, dtype)
                     for c, h in zip(self.cells, self.hidden_sizes))

    @staticmethod
    def _cell_initial(cell: nn.Module, size: int, n: int, device, dtype) -> CellState:
        if hasattr(cell, "initial_state"):
            return cell.initial_state(n, device, dtype)
        z = torch.zeros(n, size, device=device, dtype=dtype)
        if isinstance(cell, nn.LSTMCell):
            return (z, torch.zeros_like(z))
        return z

    def forward(self, x: Union[torch.Tensor, PackedSequence],
                state: Optional[Sequence[CellState]] = None
                ) -> Tuple[Union[torch.Tensor, PackedSequence], Tuple[CellState, ...]]:
        """Run all layers over ``x`` from ``state``; see the class docstring for shapes."""
        packed = isinstance(x, PackedSequence)
        if packed:
            data = x.data
            if data.dim() != 2:
                raise ValueError(f"PackedSequence data must be (N, F), got shape {tuple(data.shape)}")
            # batch_sizes is a CPU tensor; one conversion, then plain ints in the loop
            sizes: List[int] = x.batch_sizes.tolist()
            n_batch = sizes[0]
            n_feat = data.shape[1]
        else:
            data = dense_time_major(x, self.batch_first)
            n_batch = data.shape[1]
            n_feat = data.shape[2]
        if n_feat != self.input_size:
            raise ValueError(f"input feature size mismatch: expected input_size="
                             f"{self.input_size}, got {n_feat} features (input shape "
                             f"{tuple(data.shape)})")

        if state is None:
            states = list(self.initial_state(n_batch, data.device, data.dtype))
        else:
            if not isinstance(state, (tuple, list)) or len(state) != self.num_layers:
                got = (f"{type(state).__name__} of length {len(state)}"
                       if isinstance(state, (tuple, list)) else type(state).__name__)
                raise ValueError(f"state must be a tuple with one entry per layer "
                                 f"({self.num_layers}), got {got}")
            for layer, s in enumerate(state):
                _check_cell_state(s, layer, n_batch, "state")
            states = list(state)
            if packed and x.sorted_indices is not None:
                # the caller's state is in input order; the packed rows are sorted
                idx = x.sorted_indices
                states = [_same_kind(s, [t.index_select(0, idx) for t in _leaves(s)])
                          for s in states]

        if not packed:
            sizes = [n_batch] * data.shape[0]
        batch_sizes = x.batch_sizes if packed else None
        n_steps = len(sizes)

        finals = []
        last = self.num_layers - 1
        layer_in = data  # this layer's input as one tensor: packed (N, F), dense (T, B, F)
        for layer, cell in enumerate(self.cells):
            out, final = self._run_layer(layer, cell, layer_in, batch_sizes, sizes,
                                         states[layer], n_steps)
            finals.append(final)
            drop = layer < last and self.training and self.dropout > 0
            if n_steps:
                # per-row ops over the whole block (one dropout call per layer, like nn.LSTM)
                if self.layer_norm:
                    out = self.norms[layer](out)
                if layer in self._residual_layers:
                    out = out + layer_in
                if drop:
                    out = F.dropout(out, self.dropout, True)
            layer_in = out

        if packed:
            y = PackedSequence(layer_in, x.batch_sizes, x.sorted_indices, x.unsorted_indices)
            if x.unsorted_indices is not None:
                idx = x.unsorted_indices
                finals = [_same_kind(s, [t.index_select(0, idx) for t in _leaves(s)])
                          for s in finals]
        else:
            y = layer_in if n_steps else data.new_zeros((0, n_batch, self.hidden_size))
            if self.batch_first:
                y = y.transpose(0, 1)
        return y, tuple(finals)

    def _run_layer(self, layer: int, cell: nn.Module, layer_in: torch.Tensor,
                   batch_sizes: Optional[torch.Tensor], sizes: List[int], h: CellState,
                   n_steps: int) -> Tuple[torch.Tensor, CellState]:
        """Layer ``layer`` over the block: its output as one tensor (packed ``(N, H)`` or
        dense ``(T, B, H)``) and its final state (sorted order, each row at its
        sequence's last step). Built-in cells run as one fused kernel call; other cells
        run the step loop."""
        kernel = fused_kernel(cell) if self.fused and n_steps else None
        if kernel is not None:
            _check_builtin_state(h, kernel is torch.lstm, layer)
            out, final = run_fused_layer(cell, kernel, layer_in,
                                         sizes if batch_sizes is not None else None, h)
            return out, _same_kind(h, _leaves(final))
        packed = batch_sizes is not None
        if is_split_cell(cell):  # the input-only part once over the block's rows
            rows = layer_in if packed else layer_in.reshape(-1, layer_in.shape[-1])
            u = cell.input_part(rows)
            steps = u.split(sizes) if packed else u.view(n_steps, -1, u.shape[-1]).unbind(0)
            outs, final = step_loop(cell.step, steps, sizes, h)
        else:
            steps = layer_in.split(sizes) if packed else layer_in.unbind(0)
            outs, final = step_loop(cell, steps, sizes, h)
        if not outs:  # zero time steps: state unchanged
            return layer_in.new_zeros((0,) + layer_in.shape[1:-1] + (self.hidden_sizes[layer],)), final
        return (torch.cat(outs) if packed else torch.stack(outs)), final


def _check_builtin_state(h: CellState, lstm: bool, layer: int) -> None:
    """The fused kernels need an LSTM cell's state as ``(h, c)`` and a GRU/RNN cell's as one
    tensor, as the cells themselves do."""
    if lstm and (isinstance(h, torch.Tensor) or len(h) != 2):
        raise ValueError(f"state of layer {layer} (an nn.LSTMCell) must be a tuple (h, c) of "
                         f"(B, H) tensors, got "
                         f"{'a tensor' if isinstance(h, torch.Tensor) else f'{len(h)} tensors'}")
    if not lstm and not isinstance(h, torch.Tensor):
        raise ValueError(f"state of layer {layer} (an nn.GRUCell/nn.RNNCell) must be one (B, H) "
                         f"tensor, got a {type(h).__name__} of {len(h)}")
