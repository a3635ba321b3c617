"""The reverse block pass, inside the engine's ``autograd.Function``.

Backward (inside :class:`_BlockBPTT`): blocks last to first. Re-run the block from its
boundary (rebuilding the boundary first, from the nearest kept one, when the schedule did
not keep it) with the same random draws, then one ``torch.autograd.grad`` seeded with
the block's loss and dL/d(state leaving the block); it yields dL/d(state entering the
block), which seeds the previous block, and the block's share of every parameter's
gradient. The shares are summed and returned as the Function's input gradients, so each
``.grad`` is written once per backward, as ``loss.backward()`` would.

The forward pass and the boundary cache it walks are the
:class:`~vlrnn.engine.runner.BlockRunner`'s; like it, everything here is in the packed
batch's sorted order.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch

from .blocks import TimeBlock
from .loss import add_loss, finish_loss
from .rng import preserved
from .runner import BlockRunner, _BlockGraph


class _BlockBPTT(torch.autograd.Function):
    """Loss and final state of a whole batch; gradient by the reverse block pass.

    Inputs: ``(engine, x_data, y_data, n_state, *state0, *params)``; outputs
    ``(loss, *final_state)``. ``engine`` (a :class:`_Engine`) has already run block 0.
    """

    @staticmethod
    def forward(ctx, engine, x_data, y_data, n_state, *tensors):
        ctx.set_materialize_grads(False)
        ctx.engine = engine
        loss, final = engine.forward_rest()
        return (loss, *final)

    @staticmethod
    def backward(ctx, grad_loss, *grad_final):
        engine = ctx.engine
        gx, gy, gstate, gparams = engine.backward(grad_loss, list(grad_final), ctx.needs_input_grad)
        return (None, gx, gy, None, *gstate, *gparams)


class _Engine:
    """What the backward of one ``block_loss`` call needs besides the runner: the
    streamed inputs, the parameters, and the graphs kept of the last blocks."""

    def __init__(self, runner: BlockRunner, x_data, y_data, params: List[torch.Tensor],
                 first: _BlockGraph, state1: Optional[List[torch.Tensor]], retain: bool,
                 keep_last: int = 1):
        self.runner = runner
        self.state1 = state1  # the state entering block 1, where forward_rest starts
        self.retain = retain
        self.x_data = x_data
        self.y_data = y_data
        self.params = params
        self.x_grad = x_data.requires_grad
        self.y_grad = y_data is not None and y_data.requires_grad
        n = len(runner.blocks)
        # graphs kept from the forward pass (the last ``keep_last`` blocks): not recomputed
        self.first_kept = max(0, n - max(1, keep_last))
        self.kept: Dict[int, _BlockGraph] = {0: first} if self.first_kept == 0 else {}
        self.loss_sum = add_loss(None, first.loss)

    # -- forward ---------------------------------------------------------------------------
    def forward_rest(self) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """Blocks 1.. (block 0 ran before the Function was applied); the last one keeps
        its graph. Returns the detached loss and final state (sorted order)."""
        r = self.runner
        n = len(r.blocks)
        first_kept = max(1, self.first_kept)
        self.loss_sum, state = r.run_no_grad(self.x_data, self.y_data, 1, first_kept,
                                             self.state1, self.loss_sum)
        self.state1 = None
        for k in range(first_kept, n):  # the backward starts with these: keep their graphs
            snap = r.snapshot()
            graph = r.run_with_graph(k, self.x_data, self.y_data, state, self.x_grad,
                                     self.y_grad, state_grad=True)
            r.keep_rng(k, snap)
            self.loss_sum = add_loss(self.loss_sum, graph.loss)
            state = r.advance(k, graph.state_out)
            self.kept[k] = graph
        return finish_loss(self.loss_sum, self.x_data).clone(), [t.clone() for t in r.final_state()]

    # -- backward --------------------------------------------------------------------------
    def backward(self, grad_loss, grad_final: List[Optional[torch.Tensor]], needs):
        r = self.runner
        d = r.batch_dim
        n_state = len(r.boundary[0] or [])
        rebuilt: Dict[int, List[torch.Tensor]] = {}  # boundaries the backward re-ran
        want_x, want_y = needs[1], needs[2]
        want_state0 = list(needs[4:4 + n_state])
        gx = self.x_grad_buffer() if want_x else None
        gy = torch.zeros_like(self.y_data) if want_y else None
        gparams: List[Optional[torch.Tensor]] = [None] * len(self.params)
        g_next: Optional[List[Optional[torch.Tensor]]] = None  # dL/d(state entering k+1)
        gstate0: List[Optional[torch.Tensor]] = [None] * n_state
        with preserved(r.devices):
            for k in range(len(r.blocks) - 1, -1, -1):
                blk = r.blocks[k]
                g_out = _seed_state(g_next, grad_final, blk, d)
                if grad_loss is None and g_out is None:
                    g_next = None  # nothing reaches this block or any earlier one
                    continue
                graph = self._graph(k, want_x, want_y, any(want_state0), rebuilt)
                outs, seeds = [], []
                if graph.loss is not None and grad_loss is not None and graph.loss.requires_grad:
                    outs.append(graph.loss)
                    seeds.append(grad_loss)
                for t, g in zip(graph.state_out, g_out or []):
                    if g is not None and t.requires_grad:
                        outs.append(t)
                        seeds.append(g)
                in_mask = [t.requires_grad for t in graph.state_in]
                state_in = [t for t in graph.state_in if t.requires_grad]
                ins = ([graph.x_leaf] if want_x else []) + ([graph.y_leaf] if want_y else []) \
                    + state_in + self.params
                if not outs or not ins:
                    g_next = None
                    continue
                # retain_graph frees nothing until the block is done, so it costs the
                # peak of about one more block: only when a graph built outside the call
                # (a tensor a lambda loss_fn captured, e.g. W = 2 * weight) is shared
                grads = list(torch.autograd.grad(outs, ins, seeds, allow_unused=True,
                                                 retain_graph=self.retain))
                del graph, outs, seeds, ins, state_in  # free this block before the next
                if want_x:
                    g = grads.pop(0)
                    if g is not None:
                        r.layout.scatter(gx, blk, g)
                if want_y:
                    g = grads.pop(0)
                    if g is not None:
                        r.layout.scatter(gy, blk, g)
                n_in = sum(in_mask)
                g_iter = iter(grads[:n_in])
                g_in = [next(g_iter) if m else None for m in in_mask]
                for i, g in enumerate(grads[n_in:]):
                    if g is not None:
                        gparams[i] = g if gparams[i] is None else gparams[i] + g
                if k > 0:
                    g_next = g_in if any(g is not None for g in g_in) else None
                elif g_in:
                    gstate0 = [g if w else None for g, w in zip(g_in, want_state0)]
        self.kept = {}
        return gx, gy, gstate0, gparams

    def x_grad_buffer(self) -> torch.Tensor:
        """Where the reverse pass writes dL/dx, block by block (zeros, ``x_data``'s shape)."""
        return torch.zeros_like(self.x_data)

    def _graph(self, k: int, want_x: bool, want_y: bool, want_state0: bool,
               rebuilt: Dict[int, List[torch.Tensor]]) -> _BlockGraph:
        """Block ``k`` with a graph: the kept last block, or re-run from its boundary
        (re-running earlier blocks first when the schedule did not keep it)."""
        r = self.runner
        if k in self.kept:
            return self.kept.pop(k)  # not recomputed; freed after this block
        for j in [j for j in rebuilt if j > k]:  # the reverse pass is below them now
            del rebuilt[j]
        if r.schedule.frees_kept:  # so are these kept ones: their memory serves rebuilds
            for j in [j for j in r.boundary if j > k]:
                del r.boundary[j]
        if k in rebuilt:
            state = rebuilt.pop(k)
        elif k in r.boundary:
            state = r.boundary[k]
        else:
            start = max([j for j in r.boundary if j < k] + [j for j in rebuilt if j < k])
            r.rebuild(self.x_data, start, k, rebuilt)
            state = rebuilt.pop(k)
        if r.rng[k] is not None:
            r.rng[k].restore()
        return r.run_with_graph(k, self.x_data, self.y_data, state, want_x, want_y,
                                state_grad=k > 0 or want_state0)


def _seed_state(g_next, grad_final, blk: TimeBlock, d: int):
    """dL/d(state leaving ``blk``): rows ``[0, n_out)`` from the next block, rows
    ``[n_out, n_in)`` from the final-state gradient (those sequences end here)."""
    n_end = blk.n_in - blk.n_out
    fins = [None if (g is None or n_end == 0) else g.narrow(d, blk.n_out, n_end)
            for g in grad_final]
    if g_next is None and all(f is None for f in fins):
        return None
    nxts = g_next if g_next is not None else [None] * len(fins)
    out = []
    for nxt, fin in zip(nxts, fins):
        if fin is None and (nxt is None or n_end == 0):
            out.append(nxt)
        elif nxt is None and blk.n_out == 0:
            out.append(fin)
        else:  # both parts exist or one must be padded with zeros
            if nxt is None:
                nxt = fin.new_zeros(_with_dim(fin.shape, d, blk.n_out))
            if fin is None:
                fin = nxt.new_zeros(_with_dim(nxt.shape, d, n_end))
            out.append(torch.cat([nxt, fin], d))
    return out


def _with_dim(shape, d: int, size: int) -> List[int]:
    shape = list(shape)
    shape[d] = size
    return shape
