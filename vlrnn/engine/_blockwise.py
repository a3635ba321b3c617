"""``Blockwise``: a drop-in module that runs a recurrent model block by block.

``rnn = vlrnn.Blockwise(nn.LSTM(8, 64, num_layers=2, bidirectional=True))`` is called
exactly as the wrapped module and returns the same outputs; any loss on them gets the
exact gradient, computed by the reverse block pass of :func:`vlrnn.block_outputs`
(memory: each layer's output sequence plus boundary states plus one block).

How a module is run:

- ``nn.LSTM``/``nn.GRU``/``nn.RNN`` with ``bidirectional=True`` (or ``proj_size``):
  layer by layer, direction by direction, each a :class:`~vlrnn.engine._directions.DirectionView`
  over the module's own weights. The forward direction runs its blocks first to last;
  the reverse direction is the same algorithm on each sequence reversed within its own
  length, so its blocks run last to first in the original time. A layer keeps only its
  output sequence ``(T, B, 2H)`` for the next one; inter-layer ``dropout`` is applied to
  it as ``nn.LSTM`` does (training mode only, not after the last layer).
- A bidirectional model of the library's own (``QRNN(bidirectional=True)``), or any
  model that follows the same protocol: NOTE [direction views].
- Everything else (unidirectional torch RNNs, ``StackedRNN``, ``QRNN``, any
  ``(x, state) -> (y, state)`` model): :func:`vlrnn.block_outputs` on the whole module.

NOTE [direction views]: a model with ``bidirectional = True`` that has
``direction_view(layer, reverse) -> nn.Module`` (layer ``layer``, one direction, as a
one-layer unidirectional model over the same parameters, state ``(entry,)``) and
``check_state(state, n_batch, like)`` (a clear error for a wrong state; ``state`` one
entry per layer and direction, batch on dim 0), plus ``num_layers`` and ``dropout``
(between layers), is run layer by layer and direction by direction like a
bidirectional torch RNN. A model whose state has another layout also offers
``split_directions(state, n_batch)`` (the views' initial states, one per layer and
direction, layer major, forward first) and ``join_directions(finals)`` (its own state
from the views' final states, same order); ``MinGRU``, ``MinLSTM``, ``LRU`` and
``Mamba`` do. The engine asks the model through these names; it imports no model.

Parameters and ``state_dict``: ``Blockwise`` shares the wrapped module's parameter,
buffer and submodule dictionaries (it registers nothing of its own), so
``Blockwise(m).state_dict()`` has exactly ``m.state_dict()``'s keys, a checkpoint of
either loads into the other, and a model holding ``self.rnn = Blockwise(nn.LSTM(...))``
has the same keys as with ``self.rnn = nn.LSTM(...)``. ``.to()``, ``.train()``/``.eval()``
act on the wrapped module itself.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, List, Optional, Protocol, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from .._common import Batch, check_rnn_state
from ._blocks import check_block_len
from ._bptt import block_outputs, full_outputs, joined_outputs
from ._directions import DirectionView
from ._schedules import get_schedule

if TYPE_CHECKING:  # typing.TypeGuard is Python 3.10+; vlrnn supports 3.9
    from typing import TypeGuard


class Blockwise(nn.Module):
    """``module`` run block by block, with the same call, outputs and parameters.

    Args:
        module: ``nn.LSTM``/``nn.GRU``/``nn.RNN`` (any ``num_layers``, ``batch_first``,
            ``dropout``, ``bidirectional``, ``proj_size``), ``StackedRNN``, ``QRNN`` or
            any model called as ``module(x, state) -> (y, new_state)``.
        block_len: time steps per block.
        schedule: which block boundaries the forward pass keeps
            (:data:`vlrnn.SCHEDULES`); ``None``: ``"flat"``.

    Call: ``blockwise(x, state=None) -> (y, new_state)`` exactly as ``module(x, state)``:
    ``x`` a ``PackedSequence`` (sorted or not) or dense ``(T, B, F)`` (``(B, T, F)`` when
    the module is batch-first); ``state`` and ``new_state`` in the module's format and
    the caller's batch order (torch RNNs: ``(num_layers * num_directions, B, H)``, layer
    major, forward direction first).

    Attributes:
        module: the wrapped module.
        plain: ``True`` runs the same decomposition with plain autograd (whole graph
            kept, the model called block by block with the same random draws): the
            reference the tests compare the block pass against, dropout included.

    >>> import torch
    >>> from torch import nn
    >>> import vlrnn
    >>> lstm = nn.LSTM(3, 5, num_layers=2, batch_first=True)
    >>> rnn = vlrnn.Blockwise(lstm, block_len=16)
    >>> x = torch.randn(2, 50, 3)
    >>> y, (h, c) = rnn(x)                   # called exactly as the wrapped module
    >>> y.shape, h.shape
    (torch.Size([2, 50, 5]), torch.Size([2, 2, 5]))
    >>> y.pow(2).mean().backward()           # exact gradient, one block kept at a time
    >>> lstm.weight_hh_l0.grad is not None
    True
    """

    def __init__(self, module: nn.Module, block_len: int = 256, schedule: Optional[str] = None):
        super().__init__()
        if not isinstance(module, nn.Module):
            raise TypeError(f"Blockwise wraps an nn.Module called as module(x, state) -> "
                            f"(y, new_state), got {type(module).__name__}")
        if isinstance(module, Blockwise):
            raise TypeError("module is already a Blockwise")
        self.block_len = check_block_len(block_len)
        if schedule is not None:
            get_schedule(schedule, 1)  # unknown names are refused now, not at the first call
        self.schedule = schedule
        self.plain = False
        object.__setattr__(self, "module", module)
        # the wrapped module's own dicts: same parameters, keys, buffers, children
        self._parameters = module._parameters
        self._buffers = module._buffers
        self._modules = module._modules
        self._non_persistent_buffers_set = module._non_persistent_buffers_set
        self.training = module.training
        views = _direction_views(module) if _decomposed(module) else []
        object.__setattr__(self, "views", views)

    # -- the wrapped module's own state ---------------------------------------------------
    def _apply(self, fn, recurse: bool = True):
        self.module._apply(fn, recurse)  # nn.RNNBase also refreshes its flat weights
        return self

    def train(self, mode: bool = True):
        self.module.train(mode)
        self.training = mode
        for row in self.views:
            for v in row:
                v.train(mode)
        return self

    def __getattr__(self, name: str):
        # registered parameters/buffers/children first (nn.Module), then the wrapped
        # module's own attributes (hidden_size, batch_first, flatten_parameters, ...)
        try:
            return super().__getattr__(name)
        except AttributeError:
            module = self.__dict__.get("module")
            if module is None:
                raise
            return getattr(module, name)

    def __repr__(self) -> str:
        extra = f", schedule={self.schedule!r}" if self.schedule else ""
        return f"Blockwise({self.module!r}, block_len={self.block_len}{extra})"

    # -- call -------------------------------------------------------------------------------
    def forward(self, x: Batch, state: Any = None) -> Tuple[Batch, Any]:
        m = self.module
        unbatched = False
        if isinstance(m, nn.RNNBase) and not isinstance(x, PackedSequence) and x.dim() == 2:
            unbatched = True  # (T, F), as nn.LSTM accepts: a batch of one
            x = x.unsqueeze(0 if m.batch_first else 1)
            state = None if state is None else _map_state(state, lambda t: t.unsqueeze(1))
        y: Batch
        if self.views:
            y, new_state = self._layers(x, state)
        else:
            y, new_state = self._run(m, x, state)
        if unbatched:
            assert isinstance(y, torch.Tensor)  # x is dense here, and so is y
            y = y.squeeze(0 if m.batch_first else 1)
            new_state = _map_state(new_state, lambda t: t.squeeze(1))
        return y, new_state

    def _run(self, model: nn.Module, x: Batch, state: Any, reverse: bool = False):
        if self.plain:  # the reference: plain autograd has no schedule
            return full_outputs(model, x, block_len=self.block_len, state=state,
                                reverse=reverse)
        return block_outputs(model, x, block_len=self.block_len, state=state,
                             schedule=self.schedule, reverse=reverse)

    def _view_layers(self, x: Batch, state: Any) -> Tuple[Batch, Any]:
        """A model with direction views (NOTE [direction views]): each layer's directions
        as one-layer models sharing its weights; ``state`` one entry per layer and
        direction, batch on dim 0."""
        m = self.module
        split = getattr(m, "split_directions", None)
        join = getattr(m, "join_directions", None)
        entries = None
        if state is not None:
            n_batch = int(x.batch_sizes[0]) if isinstance(x, PackedSequence) else \
                x.shape[0 if m.batch_first else 1]
            ref = x.data if isinstance(x, PackedSequence) else x
            m.check_state(state, n_batch, ref)  # a clear error before any block runs
            entries = split(state, n_batch) if callable(split) else [(s,) for s in state]
        data = x.data if isinstance(x, PackedSequence) else x
        dirs = len(self.views[0])
        finals = []
        for l, row in enumerate(self.views):
            runs = [(view, None if entries is None else entries[l * dirs + d], d == 1)
                    for d, view in enumerate(row)]
            data, fins = self._join(runs, _like(data, x))
            finals.extend(fins)
            if l + 1 < m.num_layers and m.dropout > 0 and self.training:
                data = F.dropout(data, m.dropout, True)
        if callable(join):
            return _like(data, x), join(finals)
        return _like(data, x), tuple(f[0] for f in finals)

    def _join(self, runs, x: Batch):
        """One layer's directions over ``x``: (outputs joined on the last dim, finals)."""
        if not self.plain:
            return joined_outputs(runs, x, block_len=self.block_len, schedule=self.schedule)
        ys, finals = [], []
        for model, state, reverse in runs:
            y, fin = self._run(model, x, state, reverse)
            ys.append(y.data if isinstance(y, PackedSequence) else y)
            finals.append(fin)
        return (ys[0] if len(ys) == 1 else torch.cat(ys, -1)), finals

    def _layers(self, x: Batch, state: Any) -> Tuple[Batch, Any]:
        """A torch RNN (or a model with direction views), layer by layer and direction
        by direction."""
        m = self.module
        if _has_direction_views(m):
            return self._view_layers(x, state)
        lstm = isinstance(m, nn.LSTM)
        if state is not None:
            _check_rnn_state(m, state, x)
        h0, c0 = (state if lstm else (state, None)) if state is not None else (None, None)
        data = x.data if isinstance(x, PackedSequence) else x
        dirs = len(self.views[0])
        finals_h: List[torch.Tensor] = []
        finals_c: List[torch.Tensor] = []
        for l, row in enumerate(self.views):
            runs = []
            for d, view in enumerate(row):
                i = l * dirs + d
                st: Union[None, torch.Tensor, Tuple[torch.Tensor, torch.Tensor]] = None
                if h0 is not None:
                    if lstm:
                        assert c0 is not None  # an LSTM's state is a pair: _check_rnn_state
                        st = (h0[i:i + 1], c0[i:i + 1])
                    else:
                        st = h0[i:i + 1]
                # the reverse direction reads each sequence backwards, block by block
                # from the last; its outputs come back in x's time order
                runs.append((view, st, d == 1))
            data, finals = self._join(runs, _like(data, x))
            for fin in finals:
                finals_h.append(fin[0] if lstm else fin)
                if lstm:
                    finals_c.append(fin[1])
            if l + 1 < m.num_layers and m.dropout > 0 and self.training:
                data = F.dropout(data, m.dropout, True)
        h_n = torch.cat(finals_h, 0)
        new_state = (h_n, torch.cat(finals_c, 0)) if lstm else h_n
        return _like(data, x), new_state


class _ViewModel(Protocol):
    """NOTE [direction views]: what the engine asks of a model that has them."""

    bidirectional: bool
    num_layers: int
    dropout: float

    def direction_view(self, layer: int, reverse: bool) -> nn.Module: ...

    def check_state(self, state: Any, n_batch: int, like: torch.Tensor) -> None: ...


def _direction_views(module: nn.Module) -> List[List[nn.Module]]:
    """The one-layer, one-direction models a :func:`_decomposed` module runs as: per
    layer, its forward direction then (bidirectional) its reverse one."""
    if _has_direction_views(module):
        dirs = 2 if module.bidirectional else 1
        return [[module.direction_view(l, d == 1) for d in range(dirs)]
                for l in range(module.num_layers)]
    assert isinstance(module, nn.RNNBase)  # decomposed without direction views
    dirs = 2 if module.bidirectional else 1
    return [[DirectionView(module, l, d == 1) for d in range(dirs)]
            for l in range(module.num_layers)]


def _decomposed(module: nn.Module) -> bool:
    """Whether ``module`` is run layer by layer: bidirectional torch RNNs and models with
    direction views (block_outputs cannot run them whole), and torch LSTMs with
    ``proj_size``."""
    if _has_direction_views(module):
        return bool(getattr(module, "bidirectional", False))
    return isinstance(module, nn.RNNBase) and (
        module.bidirectional or (getattr(module, "proj_size", 0) or 0) > 0)


def _has_direction_views(module: nn.Module) -> TypeGuard[_ViewModel]:
    """NOTE [direction views]: the model runs its directions as views of its own."""
    return callable(getattr(module, "direction_view", None)) and \
        callable(getattr(module, "check_state", None))


def _like(data: torch.Tensor, x: Batch) -> Batch:
    if isinstance(x, PackedSequence):
        return PackedSequence(data, x.batch_sizes, x.sorted_indices, x.unsorted_indices)
    return data


def _map_state(state, fn):
    if isinstance(state, torch.Tensor):
        return fn(state)
    return type(state)(_map_state(s, fn) for s in state)


def _check_rnn_state(m: nn.RNNBase, state, x: Batch) -> None:
    """The initial state a torch RNN expects, or a clear error (one rule: ``_common``)."""
    n_batch = int(x.batch_sizes[0]) if isinstance(x, PackedSequence) else \
        x.shape[0 if m.batch_first else 1]
    check_rnn_state(m, state, n_batch)
