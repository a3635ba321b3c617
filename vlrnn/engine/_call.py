"""One call of an entry point: its arguments checked and normalised, and its result.

:class:`_Call` checks ``model``, ``loss_fn``, ``x``/``target`` (through
:class:`~vlrnn.engine._layout.Layout`), ``state`` and the batch dims once, and builds the
:class:`~vlrnn.engine._runner.BlockRunner` that runs the blocks; :class:`BlockLossOutput`
is what every entry point returns (final state back in the caller's batch order).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from . import _state as st
from ._checks import check_torch_rnn
from ._directions import AnyLayout
from ._layout import Layout
from ._options import Options
from ._rng import cuda_devices
from ._runner import BlockRunner
from ._schedules import get_schedule


@dataclass
class BlockLossOutput:
    """Result of :func:`block_loss` (and of the other entry points).

    Attributes:
        loss: scalar loss, differentiable (detached after ``*_backward``).
        state: each sequence's state at its own last step, in the model's state format
            and the caller's batch order; differentiable.
        n_blocks: number of time blocks the batch was cut into.

    >>> import torch
    >>> from torch import nn
    >>> import vlrnn
    >>> out = vlrnn.block_loss(nn.GRU(2, 3), nn.MSELoss(reduction="none"),
    ...                        torch.randn(10, 2, 2), torch.randn(10, 2, 3), block_len=4)
    >>> out.n_blocks, out.loss.dim(), out.state.shape
    (3, 0, torch.Size([1, 2, 3]))
    """

    loss: torch.Tensor
    state: Any
    n_blocks: int


class _Call:
    """Arguments of one call, checked and normalised."""

    def __init__(self, model, loss_fn, x, target, state, opts: Options):
        if not callable(model):
            raise TypeError(f"model must be an nn.Module (or callable) called as "
                            f"model(x, state) -> (y, new_state), got {type(model).__name__}")
        if loss_fn is not None and not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable as loss_fn(output_rows, target_rows) "
                            f"or None, got {type(loss_fn).__name__}")
        self.model = model
        self.loss_fn = loss_fn
        if isinstance(opts.block_len, str):
            raise ValueError("block_len='auto' must be planned before the call is built")
        self.opts = opts
        self.reduction = opts.reduction
        self.layout: AnyLayout = Layout(x, target, _batch_first(model, opts.batch_first, x),
                             _device_of(model))
        self.x = x
        self.blocks = None if opts.block_len is None else self.layout.blocks(opts.block_len)
        self.schedule = get_schedule(opts.schedule or "flat", len(self.blocks or [None]))
        state_batch_dim = opts.state_batch_dim
        if state_batch_dim is None:
            state_batch_dim = st.default_batch_dim(model) if isinstance(model, nn.Module) else 0
        self.batch_dim = state_batch_dim
        self.state = state
        self.state0: Optional[List[torch.Tensor]] = None
        self.spec0 = None
        leaves = None
        if state is not None:
            leaves, self.spec0 = st.flatten(state)
            st.check_batch(leaves, self.batch_dim, self.layout.n_batch, "initial state")
        check_torch_rnn(model, self.layout, state, leaves, self.batch_dim,
                        opts.block_len is not None)
        if leaves is not None:
            self.state0 = [self.layout.to_sorted(t, self.batch_dim) for t in leaves]

    def runner(self) -> BlockRunner:
        lay = self.layout
        assert self.blocks is not None, "a call without block_len runs no BlockRunner"
        r = BlockRunner(self.model, self.loss_fn, lay, self.blocks, self.reduction,
                        self.batch_dim, cuda_devices(lay.x_data, lay.y_data), self.schedule,
                        offload=self.opts.offload)
        r.spec0 = self.spec0
        r.boundary[0] = None if self.state0 is None else [t.detach() for t in self.state0]
        return r

    def modules_params(self) -> List[torch.Tensor]:
        params: List[torch.Tensor] = []
        for obj in (self.model, self.loss_fn):
            if isinstance(obj, nn.Module):
                params.extend(p for p in obj.parameters() if p.requires_grad)
        return params

    def output(self, loss, final_sorted: List[torch.Tensor], spec) -> BlockLossOutput:
        final = [self.layout.to_input(t, self.batch_dim) for t in final_sorted]
        return BlockLossOutput(loss, st.unflatten(final, spec), len(self.blocks or [None]))


def _device_of(model) -> torch.device:
    """Where streamed input goes: the device of the model's parameters (CPU if none)."""
    if isinstance(model, nn.Module):
        for p in model.parameters():
            return p.device
    return torch.device("cpu")


def _batch_first(model, batch_first: Optional[bool], x) -> bool:
    inner = getattr(model, "module", model)
    attr = getattr(inner, "batch_first", None)
    if batch_first is None:
        return bool(attr) if isinstance(attr, bool) else False
    if isinstance(attr, bool) and attr != bool(batch_first) and not isinstance(x, PackedSequence):
        raise ValueError(f"batch_first={batch_first} but the model was built with "
                         f"batch_first={attr}; leave batch_first=None to follow the model")
    return bool(batch_first)
