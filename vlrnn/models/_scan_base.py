"""What the scan models (:class:`~vlrnn.models.MinGRU`, :class:`~vlrnn.models.MinLSTM`,
:class:`~vlrnn.models.LRU`, :class:`~vlrnn.models.Mamba`) share: the calling contract.

A subclass computes its layers on a padded, time-major block; this base turns the input
(dense, batch-first or a ``PackedSequence``, sorted or not) into that block and the
block's results back into the caller's layout and batch order, and checks the state.

NOTE [scan model state]: a scan model's state is one tensor or a tuple of tensors, each
``(num_layers, B, *rest)`` (batch on dim 1: ``state_batch_dim = 1``, as ``nn.GRU``'s
``h_n``), in the caller's batch order. For packed input a sequence's new state is its
state after its own last step: the subclass reads it at ``last`` (the flat
``(T * B)`` index of each sequence's last step of the padded block), never at ``T - 1``,
so padding steps after a sequence's end are computed but never read (their outputs are
dropped and receive no gradient).

NOTE [scan direction stacks]: ``LRU(bidirectional=True)`` and ``Mamba(bidirectional=True)``
are stacks of one-layer unidirectional models of their own class, ``directions[l][d]``
(``d = 0`` forward, ``1`` reverse: it reads each sequence backwards within its own
length); layer ``l + 1`` reads ``[forward, reverse]`` outputs of layer ``l`` (``2 H``
features), with ``dropout`` between layers as ``nn.LSTM``'s (inside every block too).
The state is each view's, joined on dim 0, layer major, forward first. These views are
what :class:`vlrnn.Blockwise` runs block by block (NOTE [direction views]): the forward
direction first to last, the reverse one last to first.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from .._common import positive_int, probability
from ._head import WithHead
from ._inputs import dense_time_major
from ._qrnn import _packed_to_padded, _reverse_time

__all__ = ["ScanModel", "at_last", "positive_int", "probability"]



def at_last(t: torch.Tensor, last: torch.Tensor | None) -> torch.Tensor:
    """Each sequence's row at its own last step: ``t`` ``(T, B, *S)`` -> ``(B, *S)``
    (``t[T - 1]`` when ``last`` is ``None``: dense input, every sequence ``T`` long)."""
    if last is None:
        return t[t.shape[0] - 1]
    return t.reshape((-1,) + t.shape[2:]).index_select(0, last)


class ScanModel(nn.Module):
    """Base of the scan models. Subclasses set ``input_size``, ``num_layers``,
    ``batch_first``, ``output_size`` and implement :meth:`state_shapes` and
    :meth:`_run`."""

    state_batch_dim = 1
    input_size: int
    num_layers: int
    batch_first: bool
    bidirectional: bool = False
    dropout: float = 0.0
    #: whether the last layer's output at a sequence's last step can be read from its
    #: state (:class:`~vlrnn.models.SequenceModel` carries it itself when not)
    state_holds_output = False

    @property
    def output_size(self) -> int:
        """Features of ``y``."""
        raise NotImplementedError

    @property
    def state_layers(self) -> int:
        """Entries on the state's dim 0: ``num_layers`` (times 2 when bidirectional)."""
        return self.num_layers * (2 if getattr(self, "bidirectional", False) else 1)

    def state_shapes(self) -> list[tuple[str, tuple[int, ...]]]:
        """``(name, rest)`` of each state tensor ``(num_layers, B, *rest)``."""
        raise NotImplementedError

    def _run(self, inp: torch.Tensor, states: list[torch.Tensor],
             last: torch.Tensor | None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """All layers over a padded block ``inp`` ``(T, B, F)`` (sorted order) from
        ``states`` (one ``(num_layers, B, *rest)`` tensor per :meth:`state_shapes` entry):
        ``y`` ``(T, B, output_size)`` and the new states, read at ``last``."""
        raise NotImplementedError

    def with_head(self, n_out: int, bias: bool = True) -> WithHead:
        """This model followed by ``nn.Linear(output_size, n_out)`` on every step."""
        return WithHead(self, nn.Linear(self.output_size, positive_int("n_out", n_out),
                                        bias=bias))

    def initial_state(self, batch_size: int, device: torch.device | None = None,
                      dtype: torch.dtype | None = None) -> Any:
        """The state used for ``state=None``: zeros (see ``state`` in the class docs)."""
        out = [torch.zeros((self.state_layers, batch_size, *rest), device=device, dtype=dtype)
               for _, rest in self.state_shapes()]
        return out[0] if len(out) == 1 else tuple(out)

    def _check_state(self, state: Any, n_batch: int) -> list[torch.Tensor]:
        shapes = self.state_shapes()
        names = ", ".join(n for n, _ in shapes)
        leaves = [state] if isinstance(state, torch.Tensor) and len(shapes) == 1 else state
        if not isinstance(leaves, (tuple, list)) or len(leaves) != len(shapes) or not all(
                isinstance(t, torch.Tensor) for t in leaves):
            form = "one tensor" if len(shapes) == 1 else f"a tuple ({names}) of tensors"
            raise ValueError(f"state of {type(self).__name__} must be {form}, got "
                             f"{type(state).__name__}")
        for (name, rest), t in zip(shapes, leaves):
            want = (self.state_layers, n_batch, *rest)
            if tuple(t.shape) != want:
                raise ValueError(f"state of {type(self).__name__}: {name} has shape "
                                 f"{tuple(t.shape)}, expected {want} (layers, batch, ...)")
        return list(leaves)

    # -- bidirectional stacks (NOTE [scan direction stacks], [direction views]) -------------
    def direction_view(self, layer: int, reverse: bool = False) -> ScanModel:
        """Layer ``layer``, one direction, as the one-layer unidirectional model it is
        (a submodule: its parameters are this model's)."""
        if not self.bidirectional:
            raise ValueError(f"{type(self).__name__}.direction_view: the model is not "
                             "bidirectional (it has one direction; run it whole)")
        view = self.directions[layer][1 if reverse else 0]
        assert isinstance(view, ScanModel)
        return view

    def check_state(self, state: Any, n_batch: int, like=None) -> None:
        """A clear error unless ``state`` has this model's format (see the class docs)."""
        self._check_state(state, n_batch)

    def split_directions(self, state: Any, n_batch: int) -> list[Any]:
        """``state`` (checked) as each view's, layer major, forward first."""
        leaves = self._check_state(state, n_batch)
        out = [tuple(t[i:i + 1] for t in leaves) for i in range(self.state_layers)]
        return [o[0] if len(o) == 1 else o for o in out]

    def join_directions(self, finals: list[Any]) -> Any:
        """This model's state from the views' final states (layer major, forward first)."""
        if isinstance(finals[0], torch.Tensor):
            return torch.cat(finals, 0)
        return tuple(torch.cat(parts, 0) for parts in zip(*finals))

    def _run_directions(self, inp: torch.Tensor, states: list[torch.Tensor],
                        last: torch.Tensor | None
                        ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """:meth:`_run` of a bidirectional stack: each layer's views, the reverse one on
        each sequence reversed within its own length (from ``last``)."""
        T, B = inp.shape[:2]
        lengths = torch.full((B,), T, dtype=torch.long, device=inp.device) \
            if last is None else torch.div(last, B, rounding_mode="floor") + 1
        finals: list[list[torch.Tensor]] = []
        for l, pair in enumerate(self.directions):
            outs = []
            for d, view in enumerate(pair):
                i = 2 * l + d
                src = inp if d == 0 else _reverse_time(inp, lengths)
                y, fin = view._run(src, [t[i:i + 1] for t in states], last)
                outs.append(y if d == 0 else _reverse_time(y, lengths))
                finals.append(list(fin))
            inp = torch.cat(outs, -1)
            if l < self.num_layers - 1 and self.training and self.dropout > 0:
                inp = F.dropout(inp, self.dropout, True)
        return inp, [torch.cat([f[k] for f in finals], 0) for k in range(len(states))]

    def forward(self, x: torch.Tensor | PackedSequence, state: Any = None
                ) -> tuple[torch.Tensor | PackedSequence, Any]:
        """Run all layers over ``x`` from ``state``; see the class docstring for shapes."""
        px = x if isinstance(x, PackedSequence) else None
        last: torch.Tensor | None = None
        if px is not None:
            if px.data.dim() != 2:
                raise ValueError(f"PackedSequence data must be (N, F), got shape "
                                 f"{tuple(px.data.shape)}")
            inp, _, last, rows = _packed_to_padded(px)
            shape = tuple(px.data.shape)
        else:
            inp = dense_time_major(x, self.batch_first)
            shape = tuple(inp.shape)
        T, B, n_feat = inp.shape
        if n_feat != self.input_size:
            raise ValueError(f"input feature size mismatch: expected input_size="
                             f"{self.input_size}, got {n_feat} features (input shape "
                             f"{shape})")
        if state is None:
            states = [torch.zeros((self.state_layers, B, *rest), device=inp.device,
                                  dtype=inp.dtype) for _, rest in self.state_shapes()]
        else:
            states = self._check_state(state, B)
            if px is not None and px.sorted_indices is not None:
                states = [t.index_select(1, px.sorted_indices) for t in states]
        finals: Sequence[torch.Tensor]
        if T == 0:
            y = inp.new_zeros(0, B, self.output_size)
            finals = states
        else:
            y, finals = self._run(inp, states, last)
        out: torch.Tensor | PackedSequence
        if px is not None:
            out = PackedSequence(y.reshape(T * B, -1).index_select(0, rows), px.batch_sizes,
                                 px.sorted_indices, px.unsorted_indices)
            if px.unsorted_indices is not None:
                finals = [t.index_select(1, px.unsorted_indices) for t in finals]
        else:
            out = y.transpose(0, 1) if self.batch_first else y
        return out, (finals[0] if len(finals) == 1 else tuple(finals))
