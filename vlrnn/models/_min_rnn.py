"""``MinGRU`` and ``MinLSTM``: the minimal RNNs of Feng, Tung, Ahmed, Bengio and Hajimirsadeghi,
"Were RNNs All We Needed?" (2024), stacked, under vlrnn's ``(x, state) -> (y, state)``
contract.

Their gates read only ``x_t``, so a layer over a block is one matmul and a linear
recurrence (:func:`vlrnn.models._min_rnn_layer.min_rnn_layer`)::

    minGRU:   z_t = sigmoid(W_z x_t),  h~_t = W_h x_t
              h_t = (1 - z_t) h_{t-1} + z_t h~_t
    minLSTM:  f_t = sigmoid(W_f x_t),  i_t = sigmoid(W_i x_t),  h~_t = W_h x_t
              f'_t, i'_t = f_t / (f_t + i_t), i_t / (f_t + i_t)
              h_t = f'_t h_{t-1} + i'_t h~_t

(the papers' cells; ``W x`` includes a bias). The recurrence is solved by a chunked scan
that forms no long products and takes no logs, so it is as stable in float32 over
``1e5`` steps as the step loop.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from ._min_rnn_layer import KINDS, min_rnn_layer
from ._qrnn import _reverse_time
from ._scan_base import ScanModel, positive_int, probability

__all__ = ["MinGRU", "MinLSTM"]


class _MinRNN(ScanModel):
    _kind = "gru"

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 dropout: float = 0.0, batch_first: bool = False, bias: bool = True,
                 residual: bool = False, layer_norm: bool = False,
                 bidirectional: bool = False):
        super().__init__()
        self.input_size = positive_int("input_size", input_size)
        self.hidden_size = positive_int("hidden_size", hidden_size)
        self.num_layers = positive_int("num_layers", num_layers)
        self.dropout = probability("dropout", dropout)
        if self.dropout > 0 and self.num_layers == 1:
            warnings.warn("dropout only acts between layers; with num_layers=1 it has no "
                          "effect", UserWarning, stacklevel=3)
        self.batch_first = bool(batch_first)
        self.bidirectional = bool(bidirectional)
        if self.bidirectional and (residual or layer_norm):
            raise ValueError("bidirectional=True takes neither residual nor layer_norm")
        self.bias = bool(bias)
        k = KINDS[self._kind]
        self.layers = nn.ModuleList(
            nn.Linear(self._in_size(l), k * self.hidden_size, bias=bias)
            for l in range(self.num_layers))
        if self.bidirectional:  # the reverse direction's layers (forward ones keep their keys)
            self.layers_reverse = nn.ModuleList(
                nn.Linear(self._in_size(l), k * self.hidden_size, bias=bias)
                for l in range(self.num_layers))
        # StackedRNN's options, with its meaning: what a layer passes up is
        # LayerNorm(h) (+ the layer's input where the sizes match), then dropout
        self.residual, self.layer_norm = bool(residual), bool(layer_norm)
        self._residual_layers = frozenset(
            l for l in range(self.num_layers) if self.residual
            and (self.input_size if l == 0 else self.hidden_size) == self.hidden_size)
        if self.residual and not self._residual_layers:
            raise ValueError("residual=True needs a layer whose input and output sizes are "
                             f"equal; input_size={self.input_size}, hidden_size="
                             f"{self.hidden_size} and num_layers=1 have none")
        if self.layer_norm:
            self.norms = nn.ModuleList(nn.LayerNorm(self.hidden_size)
                                       for _ in range(self.num_layers))

    @property
    def output_size(self) -> int:
        """Features of ``y``: ``hidden_size`` (twice that when bidirectional)."""
        return self.hidden_size * (2 if self.bidirectional else 1)

    def _in_size(self, layer: int) -> int:
        return self.input_size if layer == 0 else self.output_size

    # -- the direction protocol of vlrnn.Blockwise (NOTE [direction views]) ---------------
    def direction_view(self, layer: int, reverse: bool = False) -> _MinRNN:
        """Layer ``layer``, one direction, as a one-layer unidirectional model over this
        model's own ``nn.Linear`` (shared, so gradients reach it)."""
        view = type(self)(self._in_size(layer), self.hidden_size, 1,
                          batch_first=self.batch_first, bias=self.bias)
        view.layers = nn.ModuleList([(self.layers_reverse if reverse else self.layers)[layer]])
        return view.train(self.training)

    def check_state(self, state: torch.Tensor, n_batch: int, like=None) -> None:
        """A clear error unless ``state`` is ``(num_layers * num_directions, B, H)``."""
        self._check_state(state, n_batch)

    def split_directions(self, state: torch.Tensor, n_batch: int) -> list[torch.Tensor]:
        """``state`` (checked) as each view's ``(1, B, H)``, layer major, forward first."""
        h = self._check_state(state, n_batch)[0]
        return [h[i:i + 1] for i in range(self.state_layers)]

    def join_directions(self, finals: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(finals, 0)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}"
        if self.dropout:
            s += f", dropout={self.dropout}"
        for name in ("batch_first", "residual", "layer_norm", "bidirectional"):
            if getattr(self, name):
                s += f", {name}=True"
        return s

    @property
    def state_holds_output(self) -> bool:  # type: ignore[override]
        """Whether ``y``'s last step is the last layer's ``h`` (no norm or residual on it)."""
        return not (self.layer_norm or self.bidirectional) and \
            self.num_layers - 1 not in self._residual_layers

    def last_hidden(self, state: torch.Tensor) -> torch.Tensor:
        """The last layer's ``h`` ``(B, H)`` from a state ``(num_layers, B, H)``: the
        output at each sequence's last step."""
        if not self.state_holds_output:
            raise ValueError("with layer_norm or a residual on the last layer, the output is "
                             "not in the state")
        return state[-1]

    def state_shapes(self) -> list[tuple[str, tuple[int, ...]]]:
        return [("h", (self.hidden_size,))]

    def _run(self, inp: torch.Tensor, states: list[torch.Tensor],
             last: torch.Tensor | None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h0 = states[0]
        dirs = 2 if self.bidirectional else 1
        T, B = inp.shape[:2]
        lengths = None
        if dirs == 2:  # each sequence's own length, from its last step's flat index
            lengths = torch.full((B,), T, dtype=torch.long, device=inp.device) \
                if last is None else torch.div(last, B, rounding_mode="floor") + 1
        finals = []
        for l, lin in enumerate(self.layers):
            assert isinstance(lin, nn.Linear)
            h, h_last = min_rnn_layer(inp, lin.weight, lin.bias, h0[l * dirs], last,
                                      self._kind)
            finals.append(h_last)
            if lengths is not None:  # the same recurrence on each sequence read backwards
                rev = self.layers_reverse[l]
                assert isinstance(rev, nn.Linear)
                h_rev, h_last = min_rnn_layer(_reverse_time(inp, lengths), rev.weight,
                                              rev.bias, h0[l * 2 + 1], last, self._kind)
                finals.append(h_last)
                h = torch.cat([h, _reverse_time(h_rev, lengths)], -1)
            if self.layer_norm:
                h = self.norms[l](h)
            if l in self._residual_layers:
                h = h + inp
            if l < self.num_layers - 1 and self.training and self.dropout > 0:
                h = F.dropout(h, self.dropout, True)
            inp = h
        return inp, [torch.stack(finals)]


_DOC = """{summary}

    Args:
        input_size: number of input features ``F``.
        hidden_size: number of features ``H`` of every layer.
        num_layers: stacked layers; layer ``l + 1`` reads layer ``l``'s ``h``.
        dropout: ``F.dropout`` on every layer's output but the last, training mode only
            (as ``nn.GRU``'s; replayed exactly by the block engine).
        batch_first: dense input and output are ``(B, T, *)``; packed input unaffected.
        bias: whether the gate matmul has a bias.
        residual: add each layer's input to what it passes up, for every layer whose input
            and output sizes match (as :class:`~vlrnn.models.StackedRNN`).
        layer_norm: ``nn.LayerNorm`` on every layer's ``h`` before it is passed up (not
            inside the recurrence: the state stays the cell's ``h``).
        bidirectional: each layer also runs on each sequence read backwards (weights
            ``layers_reverse``); ``y`` has ``2 H`` features ``[forward, reverse]`` and the
            state ``2 num_layers`` entries, layer major, forward first (as ``nn.GRU``).
            The block engine cannot run the reverse direction block by block: wrap the
            model in :class:`vlrnn.Blockwise`, which runs it last-to-first.

    Inputs: ``x``, ``state``
        - **x**: dense ``(T, B, F)`` (``(B, T, F)`` if ``batch_first``) or a
          ``PackedSequence`` with ``data`` ``(N, F)``, sorted or not.
        - **state** (optional): ``h_0`` ``(num_layers * num_directions, B, H)``, batch in
          the caller's order (input order for a ``PackedSequence``, as ``nn.GRU``);
          ``None``: zeros.

    Outputs: ``y``, ``h_n``
        - **y**: same form as ``x`` with ``H`` features (``2 H`` bidirectional; a
          ``PackedSequence`` keeps
          ``batch_sizes``, ``sorted_indices`` and ``unsorted_indices``).
        - **h_n**: ``(num_layers * num_directions, B, H)``, each sequence's state at its
          own last step (the reverse direction's: after reading back to its first);
          passed back in, a unidirectional model continues the sequences exactly.

    Attributes:
        layers: ``nn.ModuleList`` of ``nn.Linear(F_l, {k} H)``, row blocks {rows}.
        state_batch_dim: ``1``.

    Example:
        >>> import torch, vlrnn
        >>> from vlrnn.models import {name}
        >>> rnn = {name}(3, 8, num_layers=2)
        >>> y, h = rnn(torch.randn(50, 4, 3))
        >>> y.shape, h.shape
        (torch.Size([50, 4, 8]), torch.Size([2, 4, 8]))
        >>> out = vlrnn.block_loss(rnn, None, torch.randn(50, 4, 3), None, block_len=16)
        >>> out.state.shape
        torch.Size([2, 4, 8])
    """


class MinGRU(_MinRNN):
    _kind = "gru"


class MinLSTM(_MinRNN):
    _kind = "lstm"


MinGRU.__doc__ = _DOC.format(
    summary="Multi-layer minGRU: ``h_t = (1 - z_t) h_{t-1} + z_t W_h x_t``, ``z_t = "
            "sigmoid(W_z x_t)``.", k=2, rows="``[z; h~]``", name="MinGRU")
MinLSTM.__doc__ = _DOC.format(
    summary="Multi-layer minLSTM with normalised gates: ``h_t = f'_t h_{t-1} + i'_t W_h x_t``,"
            " ``f' = f / (f + i)``, ``i' = i / (f + i)``.", k=3, rows="``[f; i; h~]``",
    name="MinLSTM")
