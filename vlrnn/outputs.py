"""Differentiable outputs: the model's ``y`` and final state, gradient block by block.

``block_loss`` needs the loss as a sum of per-step terms. ``block_outputs`` lifts that:
its forward pass (no graph) keeps the model's outputs ``y`` (rows x features) and the
boundary states; ``y`` and the final state are the outputs of :class:`_BlockOutputs`,
so any function of them may be the loss. Its backward receives dL/dy for all rows and
runs the reverse block pass of :class:`~vlrnn.engine._Engine` unchanged, with each
block's "loss" the vector-Jacobian product ``sum(y_block * dL/dy_block)``: its gradient
with respect to ``y_block`` is exactly ``dL/dy_block``, and everything else (schedules'
rebuilds, dropout replay, state seeds between blocks, packed/dense, parameter, ``x`` and
initial-state gradients as input gradients) is the engine's.

Memory: ``y`` plus the boundary states plus one block's activations.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch.nn.utils.rnn import PackedSequence

from .engine import BlockRunner, _Engine, graph_leaves, next_node_number


def _vjp_rows(out_rows: torch.Tensor, grad_rows: torch.Tensor) -> torch.Tensor:
    """Per-row ``y * dL/dy`` (trailing dims are summed by the engine's loss value)."""
    return out_rows * grad_rows.to(out_rows.dtype)


class OutputsEngine(_Engine):
    """An :class:`_Engine` whose forward keeps the model's outputs, not a loss, and
    whose backward is seeded with dL/dy through :func:`_vjp_rows`.

    No block graph is kept from the forward pass (dL/dy is known only in backward): the
    reverse pass re-runs every block, the last one included.
    """

    def __init__(self, runner: BlockRunner, x_data, params: List[torch.Tensor],
                 y0: torch.Tensor, state1: Optional[List[torch.Tensor]], retain: bool):
        # (not _Engine.__init__: there is no target, no loss and no kept graph)
        self.runner = runner
        self.state1 = state1  # the state entering block 1
        self.retain = retain
        self.x_data = x_data
        self.y_data = None  # set to dL/dy in backward
        self.params = params
        self.x_grad = isinstance(x_data, torch.Tensor) and x_data.requires_grad
        self.y_grad = False
        self.kept = {}
        self.loss_sum = None
        self.outputs: List[torch.Tensor] = [y0]

    def forward_outputs(self) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """Blocks 1.. without a graph (block 0 ran before); returns the outputs, joined
        in ``x_data``'s layout, and the final state (sorted order, detached)."""
        r = self.runner
        r.run_no_grad(self.x_data, None, 1, len(r.blocks), self.state1, None,
                      outputs=self.outputs)
        self.state1 = None
        lay = r.layout
        outs, self.outputs = self.outputs, []
        y = torch.cat(outs, dim=1 if lay.batch_first else 0) if len(outs) > 1 else outs[0]
        return y, [t.clone() for t in r.final_state()]

    def backward_outputs(self, grad_y: Optional[torch.Tensor],
                         grad_final: List[Optional[torch.Tensor]], needs):
        """Input gradients given dL/dy (``None``: y was not used) and dL/d(final
        state); ``needs`` is :class:`_BlockOutputs`'s ``needs_input_grad``."""
        r = self.runner
        self.y_data = grad_y
        r.loss_fn = None if grad_y is None else _vjp_rows
        r.reduction = "sum"
        seed = None if grad_y is None else torch.ones((), dtype=grad_y.dtype,
                                                      device=grad_y.device)
        # _Engine.backward reads needs as (engine, x, y, n_state, *state0, ...)
        engine_needs = (False, needs[1], False, False, *needs[3:])
        try:
            gx, _, gstate, gparams = self.backward(seed, grad_final, engine_needs)
        finally:
            self.y_data = None
            r.loss_fn = None
        return gx, gstate, gparams


class _BlockOutputs(torch.autograd.Function):
    """Outputs and final state of a whole batch; gradient by the reverse block pass.

    Inputs: ``(engine, x_data, n_state, *state0, *params)``; outputs
    ``(y_data, *final_state)`` (``y_data`` in ``x_data``'s layout: packed rows, or dense
    with ``x``'s time and batch dims; final state in sorted order).
    """

    @staticmethod
    def forward(ctx, engine, x_data, n_state, *tensors):
        ctx.set_materialize_grads(False)
        ctx.engine = engine
        y, final = engine.forward_outputs()
        return (y, *final)

    @staticmethod
    def backward(ctx, grad_y, *grad_final):
        engine = ctx.engine
        gx, gstate, gparams = engine.backward_outputs(grad_y, list(grad_final),
                                                      ctx.needs_input_grad)
        ctx.engine = None
        return (None, gx, None, *gstate, *gparams)


def differentiable_outputs(runner: BlockRunner, x_data, state0: List[torch.Tensor],
                           module_params: List[torch.Tensor]):
    """``(y_data, final_sorted)`` of the blocks ``runner`` holds, differentiable with
    respect to ``x_data``, ``state0`` and every tensor the model's graph reaches.

    Block 0 runs with a graph first to name the tensors that need a gradient (the
    model's parameters and anything it captured), which become the Function's explicit
    inputs; that graph is then dropped (the reverse pass re-runs every block). Returns
    ``None`` when nothing needs a gradient (the caller streams instead).
    """
    x_grad = isinstance(x_data, torch.Tensor) and x_data.requires_grad
    state_grad = any(t.requires_grad for t in state0)
    mark = next_node_number()
    snap = runner.snapshot()
    outs: List[torch.Tensor] = []
    blk0 = runner.blocks[0]
    x_leaf = runner.layout.part(x_data, blk0).detach().requires_grad_(x_grad)
    s_leaves = None if runner.boundary[0] is None else [
        t.detach().requires_grad_(state_grad and t.is_floating_point())
        for t in runner.boundary[0]]
    with torch.enable_grad():
        _, out = runner.run(0, x_leaf, None, s_leaves, with_loss=False, outputs=outs)
    runner.keep_rng(0, snap)
    exclude = {id(x_leaf), *(id(t) for t in s_leaves or [])}
    found, shared = graph_leaves([outs[0], *out], exclude, since=mark)
    params = _unique(module_params + found)
    if not (params or x_grad or state_grad):
        return None
    y0 = outs[0].detach()
    state1 = runner.advance(0, out)
    del out, outs, x_leaf, s_leaves
    engine = OutputsEngine(runner, x_data, params, y0, state1, retain=shared)
    res = _BlockOutputs.apply(engine, x_data, len(state0), *state0, *params)
    return res[0], list(res[1:])


def streamed_outputs(runner: BlockRunner, x_data) -> Tuple[torch.Tensor, List[torch.Tensor]]:
    """``(y_data, final_sorted)`` without a graph, one block at a time."""
    outs: List[torch.Tensor] = []
    with torch.no_grad():
        runner.run_no_grad(x_data, None, 0, len(runner.blocks), runner.boundary[0], None,
                           outputs=outs)
    lay = runner.layout
    y = torch.cat(outs, dim=1 if lay.batch_first else 0) if len(outs) > 1 else outs[0]
    return y, runner.final_state()


def as_output(y_data: torch.Tensor, x) -> object:
    """``y_data`` in ``x``'s form: a ``PackedSequence`` with ``x``'s ``batch_sizes``
    and indices, or the dense tensor itself."""
    if isinstance(x, PackedSequence):
        return PackedSequence(y_data, x.batch_sizes, x.sorted_indices, x.unsorted_indices)
    return y_data


def _unique(tensors: List[torch.Tensor]) -> List[torch.Tensor]:
    seen, out = set(), []
    for t in tensors:
        if id(t) not in seen:
            seen.add(id(t))
            out.append(t)
    return out
