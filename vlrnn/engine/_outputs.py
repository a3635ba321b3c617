"""Differentiable outputs: the model's ``y`` and final state, gradient block by block.

``block_loss`` needs the loss as a sum of per-step terms. ``block_outputs`` lifts that:
its forward pass (no graph) keeps the model's outputs ``y`` (rows x features) and the
boundary states; ``y`` and the final state are the outputs of :class:`_BlockOutputs`,
so any function of them may be the loss. Its backward receives dL/dy for all rows and
runs the reverse block pass, :class:`~vlrnn.engine._backward.ReversePass`, with each
block's "loss" the vector-Jacobian product ``sum(y_block * dL/dy_block)``: its gradient
with respect to ``y_block`` is exactly ``dL/dy_block``, and everything else (schedules'
rebuilds, dropout replay, state seeds between blocks, packed/dense, parameter, ``x`` and
initial-state gradients as input gradients) is the engine's.

Memory: ``y`` plus the boundary states plus one block's activations.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch.nn.utils.rnn import PackedSequence

from .._common import Batch
from ._backward import InputGrads, ReversePass, Wanted
from ._directions import AnyLayout, TimeReversed
from ._graph import graph_leaves, next_node_number, unique_tensors
from ._layout import Data
from ._loss import block_loss_value
from ._runner import BlockRunner, _BlockGraph


def _vjp_rows(out_rows: torch.Tensor, grad_rows: Optional[torch.Tensor]) -> torch.Tensor:
    """Per-row ``y * dL/dy`` (trailing dims are summed by the engine's loss value)."""
    assert grad_rows is not None  # the runner's y_data is dL/dy whenever this is its loss_fn
    return out_rows * grad_rows.to(out_rows.dtype)


def run_kept(runner: BlockRunner, k: int, x_data: Data, state: Optional[List[torch.Tensor]],
             x_grad: bool, state_grad: bool) -> Tuple[_BlockGraph, torch.Tensor]:
    """Block ``k`` from ``state`` with a graph on fresh leaves, its random draws
    recorded: (the block's graph, its outputs in that graph)."""
    snap = runner.snapshot()
    outs: List[torch.Tensor] = []
    x_leaf = runner.layout.part(x_data, runner.blocks[k]).detach().requires_grad_(x_grad)
    leaves = None if state is None else [
        t.detach().requires_grad_(state_grad and t.is_floating_point())
        for t in runner.unstash(state)]
    with torch.enable_grad():
        _, out = runner.run(k, x_leaf, None, leaves, with_loss=False, outputs=outs)
    runner.keep_rng(k, snap)
    return _BlockGraph(x_leaf, None, leaves or [], None, out), outs[0]


class OutputsEngine:
    """One ``block_outputs`` run over ``x``: a forward pass that keeps the model's outputs
    (not a loss), then the :class:`~vlrnn.engine._backward.ReversePass` seeded with dL/dy
    through :func:`_vjp_rows`.

    The forward pass keeps the graphs of the first block (it ran with a graph to name
    the tensors that need a gradient) and of the last; the reverse pass re-runs the
    blocks between them. Kept graphs get their block's loss, ``sum(y * dL/dy)``, once
    dL/dy is known.

    Args:
        runner: the block runner (block 0 already run by :func:`prepare_engine`).
        x_data: the streamed input.
        params: the tensors whose gradients are returned.
        first, y0: block 0's graph and its outputs in that graph.
        state1: the state entering block 1.
        state0: the initial-state leaves (the Function's explicit inputs).
        retain: keep graphs built outside the call alive between blocks.
    """

    def __init__(self, runner: BlockRunner, x_data: Data, params: List[torch.Tensor],
                 first: _BlockGraph, y0: torch.Tensor, state1: Optional[List[torch.Tensor]],
                 state0: List[torch.Tensor], retain: bool):
        self.runner = runner
        self.x_data = x_data
        self.params = params
        self.state0: Optional[List[torch.Tensor]] = state0
        self.n_state = len(state0)
        self.state1 = state1  # the state entering block 1
        self.x_grad = isinstance(x_data, torch.Tensor) and x_data.requires_grad
        self.retain = retain
        # k -> (graph, outputs in it): blocks run with a graph in the forward pass
        self.graphs: Dict[int, Tuple[_BlockGraph, torch.Tensor]] = {0: (first, y0)}
        self.outputs: List[torch.Tensor] = [y0.detach()]
        self.n_final = 0

    def forward_outputs(self) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """Blocks 1.. (block 0 ran before), the last with a graph; returns the outputs,
        joined in ``x_data``'s layout, and the final state (sorted order, detached)."""
        r = self.runner
        n = len(r.blocks)
        _, state = r.run_no_grad(self.x_data, None, 1, max(1, n - 1), self.state1, None,
                                 outputs=self.outputs)
        self.state1 = None
        if n > 1:
            graph, y = run_kept(r, n - 1, self.x_data, state, self.x_grad, True)
            r.advance(n - 1, graph.state_out)
            self.outputs.append(y.detach())
            self.graphs[n - 1] = (graph, y)
        outs, self.outputs = self.outputs, []
        final = [t.clone() for t in r.final_state()]
        self.n_final = len(final)
        return join_outputs(r.layout, outs), final

    def backward_outputs(self, grad_y: Optional[torch.Tensor],
                         grad_final: List[Optional[torch.Tensor]], want_x: bool,
                         want_state0: Sequence[bool], gx: Optional[torch.Tensor] = None
                         ) -> InputGrads:
        """Input gradients given dL/dy (``None``: y was not used) and dL/d(final state).
        ``gx``: a buffer to add dL/dx into (another engine's over the same ``x``)."""
        r = self.runner
        r.loss_fn = None if grad_y is None else _vjp_rows
        r.reduction = "sum"
        seed = None if grad_y is None else torch.ones((), dtype=grad_y.dtype,
                                                      device=grad_y.device)
        kept = {k: self._with_vjp(k, graph, y, grad_y) for k, (graph, y) in self.graphs.items()}
        self.graphs = {}
        reverse = ReversePass(r, self.x_data, grad_y, self.params, kept, self.retain)
        try:
            return reverse.run(seed, grad_final, Wanted(x=want_x, y=False, state0=want_state0),
                               gx=gx)
        finally:
            r.loss_fn = None

    def _with_vjp(self, k: int, graph: _BlockGraph, y: torch.Tensor,
                  grad_y: Optional[torch.Tensor]) -> _BlockGraph:
        """A kept block's graph with its loss ``sum(y * dL/dy)`` set."""
        if grad_y is not None:
            lay, blk = self.runner.layout, self.runner.blocks[k]
            with torch.enable_grad():
                graph.loss = block_loss_value(_vjp_rows, lay.output_rows(y, blk),
                                              lay.rows(lay.part(grad_y, blk), blk),
                                              lay, blk, "sum")
        return graph


class _BlockOutputs(torch.autograd.Function):
    """Outputs and final states of one or more engines over the same ``x`` (the two
    directions of a bidirectional layer), the outputs joined along the last dim;
    gradient by each engine's reverse block pass, dL/dx summed in one buffer.

    Inputs: ``(engines, x_data, sizes, *tensors)``: for each engine in turn its initial
    state leaves and its parameters (``sizes``: (n_state, n_params) per engine).
    Outputs: ``(y_data, *final_states)`` (``y_data`` in ``x_data``'s layout; each
    engine's final state in sorted order, one after the other).
    """

    @staticmethod
    def forward(ctx, engines, x_data, sizes, *tensors):
        ctx.set_materialize_grads(False)
        ctx.engines, ctx.sizes = engines, sizes
        ys, finals, widths = [], [], []
        for e in engines:
            y, final = e.forward_outputs()
            ys.append(y)
            widths.append(y.shape[-1])
            finals.extend(final)
        ctx.widths = widths
        y = ys[0] if len(ys) == 1 else torch.cat(ys, -1)
        return (y, *finals)

    @staticmethod
    def backward(ctx, grad_y, *grad_final):
        engines, sizes = ctx.engines, ctx.sizes
        want_x = ctx.needs_input_grad[1]
        needs = ctx.needs_input_grad[3:]
        out_grads: List[Optional[torch.Tensor]] = []
        gx = None
        g_i = t_i = off = 0
        for e, (n_state, n_params), width in zip(engines, sizes, ctx.widths):
            gy = None if grad_y is None else grad_y.narrow(-1, off, width)
            off += width
            n_fin = e.n_final
            # a time-reversed layout adds its dL/dx into the buffer; any other writes
            # its own (then summed here)
            into = gx if isinstance(e.runner.layout, TimeReversed) else None
            g = e.backward_outputs(gy, list(grad_final[g_i:g_i + n_fin]), want_x,
                                   needs[t_i:t_i + n_state], into)
            gx = g.x if (gx is None or into is not None) else gx + g.x
            g_i += n_fin
            t_i += n_state + n_params
            out_grads.extend(g.state0)
            out_grads.extend(g.params)
        return (None, gx, None, *out_grads)


def prepare_engine(runner: BlockRunner, x_data: Data, state0: List[torch.Tensor],
                   module_params: List[torch.Tensor]) -> Optional[OutputsEngine]:
    """Run block 0 with a graph and return the engine for the rest, or ``None`` when
    nothing needs a gradient (the caller streams instead).

    Block 0's graph names the tensors that need a gradient (the model's parameters and
    anything it captured), which become the Function's explicit inputs; it is kept for
    the reverse pass, which reaches block 0 last.
    """
    x_grad = isinstance(x_data, torch.Tensor) and x_data.requires_grad
    state_grad = any(t.requires_grad for t in state0)
    mark = next_node_number()
    first, y0 = run_kept(runner, 0, x_data, runner.boundary[0], x_grad, state_grad)
    out = first.state_out
    found, shared = graph_leaves([y0, *out], first.leaf_ids(), since=mark)
    params = unique_tensors(module_params + found)
    if not (params or x_grad or state_grad):
        return None
    state1 = runner.advance(0, out)
    return OutputsEngine(runner, x_data, params, first, y0, state1, state0, retain=shared)


def apply_engines(engines: List[OutputsEngine],
                  x_data: Data) -> Tuple[torch.Tensor, List[List[torch.Tensor]]]:
    """``(y_data, [final_sorted per engine])`` through one :class:`_BlockOutputs`."""
    sizes: List[Tuple[int, int]] = []
    tensors: List[torch.Tensor] = []
    for e in engines:
        sizes.append((e.n_state, len(e.params)))
        assert e.state0 is not None  # cleared here, below: each engine is applied once
        tensors.extend(e.state0)
        tensors.extend(e.params)
        e.state0 = None
    res = _BlockOutputs.apply(engines, x_data, sizes, *tensors)
    finals: List[List[torch.Tensor]] = []
    i = 1
    for e in engines:
        finals.append(list(res[i:i + e.n_final]))
        i += e.n_final
    return res[0], finals


def streamed_outputs(runner: BlockRunner,
                     x_data: Data) -> Tuple[torch.Tensor, List[torch.Tensor]]:
    """``(y_data, final_sorted)`` without a graph, one block at a time."""
    outs: List[torch.Tensor] = []
    with torch.no_grad():
        runner.run_no_grad(x_data, None, 0, len(runner.blocks), runner.boundary[0], None,
                           outputs=outs)
    return join_outputs(runner.layout, outs), runner.final_state()


def join_outputs(layout: AnyLayout, outs: List[torch.Tensor]) -> torch.Tensor:
    """The blocks' outputs as one tensor in ``x_data``'s layout and time order."""
    y = torch.cat(outs, dim=1 if layout.batch_first else 0) if len(outs) > 1 else outs[0]
    return layout.unreverse(y) if isinstance(layout, TimeReversed) else y


def as_output(y_data: torch.Tensor, x: object) -> Batch:
    """``y_data`` in ``x``'s form: a ``PackedSequence`` with ``x``'s ``batch_sizes``
    and indices, or the dense tensor itself."""
    if isinstance(x, PackedSequence):
        return PackedSequence(y_data, x.batch_sizes, x.sorted_indices, x.unsorted_indices)
    return y_data
