"""Quasi-recurrent neural network (Bradbury, Merity, Xiong and Socher, ICLR 2017).

Each layer computes its gates for a whole block of steps with one matrix multiply
(``window=1``: from ``x_t``; ``window=2``: from ``[x_{t-1}, x_t]``), then runs only an
element-wise recurrence over time, the "forget-mult"::

    z_t = tanh(W_z u_t),  f_t = sigmoid(W_f u_t),  o_t = sigmoid(W_o u_t)
    c_t = f_t * z_t + (1 - f_t) * c_{t-1}
    h_t = o_t * c_t            (fo-pooling; h_t = c_t without the output gate)

where ``u_t`` is ``x_t`` or ``[x_{t-1}, x_t]``. A layer over a block is one autograd
node (:func:`vlrnn.models._qrnn_layer.qrnn_layer`; no node at all without a graph): one
batched matmul for all gates, in-place activations, the recurrence solved by a chunked scan (:mod:`vlrnn.models._qrnn_scan`:
about ``3 sqrt(T)`` tensor ops instead of ``T``, no division), and a hand-written backward.

Packed batches run on a padded ``(T, B, ·)`` view of the block (vectorised index ops);
padding steps get ``f = 0`` (so ``c_t = c_{t-1}``), which freezes a finished sequence's
``c`` at its own last step: ``c[T-1]`` is then every sequence's final ``c``.
"""
from __future__ import annotations

import warnings
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from .._common import Batch
from .._common import positive_int as _positive_int
from .._common import probability as _probability
from ._head import WithHead
from ._inputs import dense_time_major
from ._qrnn_layer import qrnn_layer
from ._scan import METHODS, linear_scan

__all__ = ["QRNN"]

LayerState = Tuple[torch.Tensor, ...]  # (c,) for window 1, (c, x_prev) for window 2


class QRNN(nn.Module):
    r"""Multi-layer QRNN following vlrnn's ``model(x, state) -> (y, new_state)`` contract.

    Args:
        input_size: number of input features ``F``.
        hidden_size: number of features ``H`` of every layer.
        num_layers: stacked QRNN layers; layer ``l + 1`` reads layer ``l``'s ``h``.
        window: convolution width over time, 1 (gates from ``x_t``) or 2 (from
            ``[x_{t-1}, x_t]``).
        dropout: ``F.dropout`` probability on every layer's output but the last,
            training mode only (as ``nn.LSTM``'s ``dropout``).
        zoneout: training mode: each element of ``f`` is set to 0 (the cell keeps its
            previous ``c``) with this probability, an independent draw per step, sequence
            and unit. Evaluation mode: ``f`` is multiplied by ``1 - zoneout``, its
            expected value under the training-time mask (the paper's choice).
        output_gate: ``True``: fo-pooling, ``h = o * c``; ``False``: f-pooling, ``h = c``.
        batch_first: dense input and output are ``(B, T, *)``; packed input unaffected.
        scan: ``"parallel"`` (default: the one-node layer with the chunked scan; first
            derivatives only) or ``"loop"`` (autograd through every op and a Python loop
            over steps: the slow reference, which also has double backward).
        bidirectional: each layer also runs the recurrence over each sequence read
            backwards (weights ``layers_reverse``); its output is ``[forward, reverse]``,
            ``2H`` features, and ``state`` has one entry per layer and direction
            (layer-major, forward first), as ``nn.LSTM``'s. Blockwise runs the reverse
            direction block by block last-to-first (:class:`vlrnn.Blockwise`).

    Inputs: ``x``, ``state``
        - **x**: dense ``(T, B, F)`` (``(B, T, F)`` if ``batch_first``) or a
          ``PackedSequence`` with ``data`` ``(N, F)``, sorted or with ``sorted_indices``.
        - **state** (optional): tuple of ``num_layers`` entries; entry ``l`` is ``(c,)``
          for ``window=1`` or ``(c, x_prev)`` for ``window=2``, with ``c`` ``(B, H)`` and
          ``x_prev`` ``(B, F_l)`` the last input row layer ``l`` saw (``F_0 = F``,
          ``F_l = H`` above; after inter-layer dropout), which its window needs at the
          next block's first step. Batch on dim 0, in the caller's order (for a
          ``PackedSequence`` with ``sorted_indices``: input order, as ``nn.LSTM``).
          ``None``: zeros.

    Outputs: ``y``, ``new_state``
        - **y**: same form as ``x``, ``H`` features: dense ``(T, B, H)`` (``(B, T, H)``
          if ``batch_first``) or a ``PackedSequence`` with the same ``batch_sizes``,
          ``sorted_indices`` and ``unsorted_indices``.
        - **new_state**: same format and order as ``state``; each sequence's state at its
          own last step.

    Attributes:
        layers: ``nn.ModuleList`` of ``nn.Linear(window * F_l, k * H)``, ``k = 3`` gates
            ``(z, f, o)`` (``k = 2``, ``(z, f)``, without the output gate).
        state_batch_dim: ``0``.

    >>> import torch
    >>> import vlrnn
    >>> from vlrnn.models import QRNN
    >>> qrnn = QRNN(3, 16, num_layers=2)
    >>> x = torch.randn(100, 4, 3)
    >>> y, state = qrnn(x)                 # state: one (c,) per layer, batch first
    >>> (c,) = state[0]                    # layer 0's entry
    >>> y.shape, len(state), c.shape
    (torch.Size([100, 4, 16]), 2, torch.Size([4, 16]))
    >>> y2, _ = vlrnn.block_outputs(qrnn, x, block_len=32)     # the same through the engine
    >>> torch.allclose(y, y2, atol=1e-5)
    True
    """

    state_batch_dim = 0

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 window: int = 1, dropout: float = 0.0, zoneout: float = 0.0,
                 output_gate: bool = True, batch_first: bool = False,
                 scan: str = "parallel", bidirectional: bool = False):
        super().__init__()
        self.input_size = _positive_int("input_size", input_size)
        self.hidden_size = _positive_int("hidden_size", hidden_size)
        self.num_layers = _positive_int("num_layers", num_layers)
        if window not in (1, 2) or isinstance(window, bool):
            raise ValueError(f"window must be 1 or 2, got {window!r}")
        self.window = int(window)
        self.dropout = _probability("dropout", dropout)
        if self.dropout > 0 and self.num_layers == 1:
            warnings.warn("dropout only acts between layers; with num_layers=1 it has no "
                          "effect", UserWarning, stacklevel=2)
        self.zoneout = _probability("zoneout", zoneout)
        self.output_gate = bool(output_gate)
        self.batch_first = bool(batch_first)
        if scan not in METHODS:
            raise ValueError(f"scan must be one of {METHODS}, got {scan!r}")
        self.scan = scan
        self.bidirectional = bool(bidirectional)
        k = 3 if self.output_gate else 2
        self.layers = nn.ModuleList(
            nn.Linear(self.window * self._in_size(l), k * self.hidden_size)
            for l in range(self.num_layers))
        if self.bidirectional:  # the reverse direction's layers (forward ones keep their keys)
            self.layers_reverse = nn.ModuleList(
                nn.Linear(self.window * self._in_size(l), k * self.hidden_size)
                for l in range(self.num_layers))

    @property
    def output_size(self) -> int:
        """Features of ``y``: ``hidden_size`` (twice that when bidirectional)."""
        return self.hidden_size * self.num_directions

    @property
    def num_directions(self) -> int:
        return 2 if getattr(self, "bidirectional", False) else 1

    def _in_size(self, layer: int) -> int:
        return self.input_size if layer == 0 else self.hidden_size * self.num_directions

    def direction_view(self, layer: int, reverse: bool = False) -> "QRNN":
        """Layer ``layer``, one direction, as a one-layer unidirectional QRNN over this
        model's own ``nn.Linear`` (shared, so gradients reach it): what
        :class:`vlrnn.Blockwise` runs block by block, the reverse direction on each
        sequence read backwards. Its state is ``(entry,)``, entry as in ``state``
        (NOTE [direction views] in ``vlrnn.engine._blockwise``)."""
        view = QRNN(self._in_size(layer), self.hidden_size, 1, window=self.window,
                    zoneout=self.zoneout, output_gate=self.output_gate,
                    batch_first=self.batch_first, scan=self.scan)
        view.layers = nn.ModuleList([(self.layers_reverse if reverse else self.layers)[layer]])
        return view.train(self.training)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}"
        for name, default in (("window", 1), ("dropout", 0.0), ("zoneout", 0.0),
                              ("output_gate", True), ("batch_first", False),
                              ("scan", "parallel"), ("bidirectional", False)):
            if getattr(self, name) != default:
                s += f", {name}={getattr(self, name)!r}"
        return s

    def with_head(self, n_out: int, bias: bool = True) -> WithHead:
        """This QRNN followed by ``nn.Linear(hidden_size, n_out)`` on every output step."""
        return WithHead(self, nn.Linear(self.output_size, _positive_int("n_out", n_out),
                                        bias=bias))

    def initial_state(self, batch_size: int, device: Optional[torch.device] = None,
                      dtype: Optional[torch.dtype] = None) -> Tuple[LayerState, ...]:
        """The state used for ``state=None``: zeros, one tuple per layer (and direction,
        layer-major, forward first), batch on dim 0."""
        out = []
        for l in (l for l in range(self.num_layers) for _ in range(self.num_directions)):
            c = torch.zeros(batch_size, self.hidden_size, device=device, dtype=dtype)
            if self.window == 2:
                out.append((c, torch.zeros(batch_size, self._in_size(l), device=device,
                                           dtype=dtype)))
            else:
                out.append((c,))
        return tuple(out)

    # -- forward ---------------------------------------------------------------------------
    def forward(self, x: Batch, state: Optional[Sequence[LayerState]] = None
                ) -> Tuple[Batch, Tuple[LayerState, ...]]:
        """Run all layers over ``x`` from ``state``; see the class docstring for shapes."""
        packed = isinstance(x, PackedSequence)
        if packed:
            if x.data.dim() != 2:
                raise ValueError(f"PackedSequence data must be (N, F), got shape "
                                 f"{tuple(x.data.shape)}")
            inp, keep, last, rows = _packed_to_padded(x)
        else:
            inp = dense_time_major(x, self.batch_first)
            keep, last, rows = None, None, None
        T, B, n_feat = inp.shape
        if n_feat != self.input_size:
            raise ValueError(f"input feature size mismatch: expected input_size="
                             f"{self.input_size}, got {n_feat} features (input shape "
                             f"{tuple(x.data.shape if packed else x.shape)})")
        states = self.check_state(state, B, inp)
        if packed and x.sorted_indices is not None and state is not None:
            idx = x.sorted_indices
            states = [tuple(t.index_select(0, idx) for t in s) for s in states]

        if T == 0:  # dense input with no steps: nothing changes
            y = inp.new_zeros(0, B, self.output_size)
            return (y.transpose(0, 1) if self.batch_first else y), tuple(states)

        finals: List[LayerState] = []
        dirs = self.num_directions
        for l, lin in enumerate(self.layers):
            h, final = self._layer(lin, inp, states[l * dirs], keep, last)
            finals.append(final)
            if dirs == 2:  # the same recurrence on each sequence read backwards
                lengths = torch.full((B,), T, dtype=torch.long, device=inp.device) \
                    if last is None else torch.div(last, B, rounding_mode="floor") + 1
                h_rev, final = self._layer(self.layers_reverse[l],
                                           _reverse_time(inp, lengths), states[l * 2 + 1],
                                           keep, last)
                finals.append(final)
                h = torch.cat([h, _reverse_time(h_rev, lengths)], -1)
            if l < self.num_layers - 1 and self.training and self.dropout > 0:
                h = F.dropout(h, self.dropout, True)
            inp = h

        if packed:
            y = PackedSequence(inp.reshape(T * B, -1).index_select(0, rows), x.batch_sizes,
                               x.sorted_indices, x.unsorted_indices)
            if x.unsorted_indices is not None:
                idx = x.unsorted_indices
                finals = [tuple(t.index_select(0, idx) for t in s) for s in finals]
        else:
            y = inp.transpose(0, 1) if self.batch_first else inp
        return y, tuple(finals)

    def _layer(self, lin: nn.Linear, inp: torch.Tensor, state: LayerState,
               keep: Optional[torch.Tensor], last: Optional[torch.Tensor]
               ) -> Tuple[torch.Tensor, LayerState]:
        """One layer on a padded block ``inp`` ``(T, B, F_l)``: ``h`` ``(T, B, H)`` and the
        layer's state at each sequence's last step."""
        T, B, _ = inp.shape
        c0 = state[0]
        # window 2: u_t = [x_{t-1}, x_t]; x_{-1} is the last input row of the previous block
        x_prev = state[1] if self.window == 2 else None
        if self.scan == "parallel":
            # one autograd node for the window, the matmul, the activations, the scan and
            # the output gate
            mult = None  # fixed multiplier of f: zoneout and padding masks
            if self.zoneout > 0:
                if self.training:  # f = 0 keeps the previous c for this element and step
                    mult = inp.new_empty(T, B, self.hidden_size).bernoulli_(
                        1.0 - self.zoneout)
                else:
                    mult = inp.new_tensor(1.0 - self.zoneout)
            if keep is not None:  # padding steps: f = 0, c stays at the sequence's end
                mult = keep if mult is None else mult * keep
            h, c_last = qrnn_layer(inp, lin.weight, lin.bias, c0, mult, self.output_gate,
                                   x_prev)
        else:
            u = inp if x_prev is None else \
                torch.cat([torch.cat([x_prev.unsqueeze(0), inp[:-1]], 0), inp], 2)
            h, c_last = self._layer_loop(lin(u), c0, keep)
        if self.window == 1:
            return h, (c_last,)
        x_last = inp[T - 1] if last is None else inp.reshape(T * B, -1).index_select(0, last)
        return h, (c_last, x_last)

    def _layer_loop(self, gates: torch.Tensor, c0: torch.Tensor,
                    keep: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        """The reference: autograd through each op and the step-loop scan."""
        T = gates.shape[0]
        # split, not three slices: its backward writes one gradient tensor, where each
        # slice's backward would allocate and zero a full-size one
        gates = gates.split(self.hidden_size, dim=2)
        z = torch.tanh(gates[0])
        f = torch.sigmoid(gates[1])
        if self.zoneout > 0:
            if self.training:  # f = 0 keeps the previous c for this element and step
                f = f * torch.empty_like(f).bernoulli_(1.0 - self.zoneout)
            else:
                f = f * (1.0 - self.zoneout)
        if keep is not None:
            f = f * keep  # padding steps: a = 1, b = 0, so c stays at the sequence's end
        c = linear_scan(1.0 - f, f * z, c0, method=self.scan)
        h = torch.sigmoid(gates[2]) * c if self.output_gate else c
        return h, c[T - 1]

    def check_state(self, state, n_batch: int, like: torch.Tensor) -> List[LayerState]:
        """``state`` as one entry per layer and direction (zeros for ``None``), or a
        ``ValueError`` that says what was expected (NOTE [direction views])."""
        if state is None:
            return list(self.initial_state(n_batch, like.device, like.dtype))
        n_entries = self.num_layers * self.num_directions
        if not isinstance(state, (tuple, list)) or len(state) != n_entries:
            got = (f"{type(state).__name__} of length {len(state)}"
                   if isinstance(state, (tuple, list)) else type(state).__name__)
            per = "per layer and direction" if self.num_directions == 2 else "per layer"
            raise ValueError(f"state must be a tuple with one entry {per} "
                             f"({n_entries}), got {got}")
        out = []
        want = "(c, x_prev)" if self.window == 2 else "(c,)"
        for i, s in enumerate(state):
            l = i // self.num_directions
            if isinstance(s, torch.Tensor) and self.window == 1:
                s = (s,)  # accept a bare c for window 1
            if not isinstance(s, (tuple, list)) or len(s) != self.window or not all(
                    isinstance(t, torch.Tensor) for t in s):
                raise ValueError(f"state of layer {l} must be a tuple {want} of tensors for "
                                 f"window={self.window}, got {type(s).__name__}"
                                 + (f" of length {len(s)}" if isinstance(s, (tuple, list)) else ""))
            sizes = [self.hidden_size, self._in_size(l)][:self.window]
            for name, t, n in zip(("c", "x_prev"), s, sizes):
                if tuple(t.shape) != (n_batch, n):
                    raise ValueError(f"state of layer {l}: {name} has shape {tuple(t.shape)}, "
                                     f"expected ({n_batch}, {n}) (batch on dim 0)")
            out.append(tuple(s))
        return out


def _packed_to_padded(x: PackedSequence):
    """A packed batch as a zero-padded ``(T, B, F)`` tensor (sorted order), plus:
    ``keep`` ``(T, B, 1)``, 1.0 on real steps (``None`` when nothing is padded);
    ``last`` ``(B,)``, the flat index into ``(T * B)`` of each sequence's last step;
    ``rows`` ``(N,)``, the flat index of each packed row (packed rows are the real
    ``(t, b)`` cells in row-major order)."""
    sizes = x.batch_sizes  # CPU int64
    T, B = len(sizes), int(sizes[0])
    valid = torch.arange(B).unsqueeze(0) < sizes.unsqueeze(1)          # (T, B), CPU
    dev = x.data.device
    rows = valid.reshape(-1).nonzero().squeeze(1).to(dev)
    lengths = valid.sum(0)                                             # (B,) sorted order
    last = ((lengths - 1) * B + torch.arange(B)).to(dev)
    data = x.data
    padded = data.new_zeros(T * B, data.shape[1]).index_copy(0, rows, data).view(T, B, -1)
    keep = None
    if int(sizes[-1]) < B:  # some sequence ends early: its padding must not move c
        keep = valid.to(device=dev, dtype=data.dtype).unsqueeze(2)
    return padded, keep, last, rows


def _reverse_time(t: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """A padded ``(T, B, F)`` batch with each sequence reversed within its own length
    (``lengths`` ``(B,)``); padding steps stay where they are. Its own inverse."""
    T, B = t.shape[:2]
    steps = torch.arange(T, device=t.device).unsqueeze(1)              # (T, 1)
    src = torch.where(steps < lengths.unsqueeze(0), lengths.unsqueeze(0) - 1 - steps, steps)
    return t.gather(0, src.unsqueeze(2).expand(T, B, t.shape[2]))
