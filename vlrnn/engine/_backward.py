"""The reverse block pass, inside the engine's ``autograd.Function``.

Backward (inside :class:`_BlockBPTT`): blocks last to first. Re-run the block from its
boundary (rebuilding the boundary first, from the nearest kept one, when the schedule did
not keep it) with the same random draws, then one ``torch.autograd.grad`` seeded with
the block's loss and dL/d(state leaving the block); it yields dL/d(state entering the
block), which seeds the previous block, and the block's share of every parameter's
gradient. The shares are summed and returned as the Function's input gradients, so each
``.grad`` is written once per backward, as ``loss.backward()`` would.

The forward pass and the boundary cache it walks are the
:class:`~vlrnn.engine._runner.BlockRunner`'s; like it, everything here is in the packed
batch's sorted order.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from ._blocks import TimeBlock
from ._layout import Data
from ._loss import add_loss, finish_loss
from ._rng import preserved
from ._runner import BlockRunner, _BlockGraph


@dataclass(frozen=True)
class Wanted:
    """Which input gradients a reverse pass computes: ``x``'s, the target's (``y``; a
    target that requires grad) and each initial-state tensor's."""

    x: bool
    y: bool
    state0: Sequence[bool]


@dataclass
class InputGrads:
    """What a reverse pass returns: dL/dx (``x_data``'s shape), dL/dtarget, dL/dstate0
    (one per state tensor, sorted order) and one gradient per parameter (``None`` where
    nothing reached it)."""

    x: Optional[torch.Tensor]
    y: Optional[torch.Tensor]
    state0: List[Optional[torch.Tensor]]
    params: List[Optional[torch.Tensor]]


class ReversePass:
    """The reverse block pass, the one both entry points run: blocks last to first,
    each re-run from its boundary with a graph (or a graph kept from the forward pass),
    then one ``torch.autograd.grad`` seeded with ``grad_loss`` on the block's loss and
    dL/d(state leaving the block).

    What seeds it is the block's loss: for :func:`vlrnn.block_loss` the per-step loss;
    for :func:`vlrnn.block_outputs` the vector-Jacobian product ``sum(y * dL/dy)``
    (the runner's ``loss_fn`` and ``y_data`` are set so before :meth:`run`).

    Args:
        runner: the :class:`BlockRunner` whose forward pass filled the boundary cache.
        x_data, y_data: the streamed inputs and targets (``y_data`` may be ``None``).
        params: the tensors whose gradients are returned, in order.
        kept: block -> its graph from the forward pass (with its loss set): not re-run.
        retain: keep graphs built outside the call alive between blocks.
    """

    def __init__(self, runner: BlockRunner, x_data: Data, y_data: Optional[Data],
                 params: List[torch.Tensor], kept: Dict[int, _BlockGraph], retain: bool):
        self.runner = runner
        self.x_data = x_data
        self.y_data = y_data
        self.params = params
        self.kept = kept
        self.retain = retain

    def run(self, grad_loss: Optional[torch.Tensor],
            grad_final: List[Optional[torch.Tensor]], want: Wanted,
            gx: Optional[torch.Tensor] = None) -> InputGrads:
        """Input gradients given dL/d(loss) (``None``: the loss was not used) and
        dL/d(final state), one per state tensor (sorted order, ``None`` where unused).
        ``gx``: a buffer to add dL/dx into (another pass's over the same ``x``)."""
        r = self.runner
        d = r.batch_dim
        n_state = len(r.boundary[0] or [])
        rebuilt: Dict[int, List[torch.Tensor]] = {}  # boundaries the backward re-ran
        want_state0 = list(want.state0)[:n_state]
        if want.x and gx is None:
            assert isinstance(self.x_data, torch.Tensor)  # want.x: x requires grad: no stream
            gx = torch.zeros_like(self.x_data)
        gy = None
        if want.y:
            assert isinstance(self.y_data, torch.Tensor)  # want.y: a target requiring grad
            gy = torch.zeros_like(self.y_data)
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
                graph = self._graph(k, want.x, want.y, any(want_state0), rebuilt)
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
                ins: List[torch.Tensor] = [graph.x_leaf] if want.x else []
                if want.y:
                    assert graph.y_leaf is not None  # want.y: the target was given
                    ins.append(graph.y_leaf)
                ins += state_in + self.params
                if not outs or not ins:
                    g_next = None
                    continue
                # retain_graph frees nothing until the block is done, so it costs the
                # peak of about one more block: only when a graph built outside the call
                # (a tensor a lambda loss_fn captured, e.g. W = 2 * weight) is shared
                grads = list(torch.autograd.grad(outs, ins, seeds, allow_unused=True,
                                                 retain_graph=self.retain))
                del graph, outs, seeds, ins, state_in  # free this block before the next
                if want.x:
                    g = grads.pop(0)
                    if g is not None:
                        assert gx is not None  # made above when want.x
                        r.layout.scatter(gx, blk, g)
                if want.y:
                    g = grads.pop(0)
                    if g is not None:
                        assert gy is not None  # made above when want.y
                        r.layout.scatter(gy, blk, g)
                n_in = sum(in_mask)
                g_iter = iter(grads[:n_in])
                g_in = [next(g_iter) if m else None for m in in_mask]
                for i, g in enumerate(grads[n_in:]):
                    if g is not None:
                        acc = gparams[i]
                        gparams[i] = g if acc is None else acc + g
                if k > 0:
                    g_next = g_in if any(g is not None for g in g_in) else None
                elif g_in:
                    gstate0 = [g if w else None for g, w in zip(g_in, want_state0)]
        self.kept = {}
        return InputGrads(gx if want.x else None, gy, gstate0, gparams)

    def _graph(self, k: int, want_x: bool, want_y: bool, want_state0: bool,
               rebuilt: Dict[int, List[torch.Tensor]]) -> _BlockGraph:
        """Block ``k`` with a graph: kept from the forward pass, or re-run from its
        boundary (re-running earlier blocks first when the schedule did not keep it)."""
        r = self.runner
        if k in self.kept:
            return self.kept.pop(k)  # not recomputed; freed after this block
        for j in [j for j in rebuilt if j > k]:  # the reverse pass is below them now
            del rebuilt[j]
        if r.schedule.frees_kept:  # so are these kept ones: their memory serves rebuilds
            for j in [j for j in r.boundary if j > k]:
                del r.boundary[j]
        state: Optional[List[torch.Tensor]]
        if k in rebuilt:
            state = rebuilt.pop(k)
        elif k in r.boundary:
            state = r.boundary[k]
        else:
            start = max([j for j in r.boundary if j < k] + [j for j in rebuilt if j < k])
            r.rebuild(self.x_data, start, k, rebuilt)
            state = rebuilt.pop(k)
        snap = r.rng[k]
        if snap is not None:
            snap.restore()
        return r.run_with_graph(k, self.x_data, self.y_data, state, want_x, want_y,
                                state_grad=k > 0 or want_state0)


class _BlockBPTT(torch.autograd.Function):
    """Loss and final state of a whole batch; gradient by the reverse block pass.

    Inputs: ``(engine, x_data, y_data, n_state, *state0, *params)``; outputs
    ``(loss, *final_state)``. ``engine`` (a :class:`LossEngine`) has already run block 0.
    """

    @staticmethod
    def forward(ctx, engine, x_data, y_data, n_state, *tensors):
        ctx.set_materialize_grads(False)
        ctx.engine, ctx.n_state = engine, n_state
        loss, final = engine.forward_rest()
        return (loss, *final)

    @staticmethod
    def backward(ctx, grad_loss, *grad_final):
        needs = ctx.needs_input_grad
        want = Wanted(x=needs[1], y=needs[2], state0=needs[4:4 + ctx.n_state])
        g = ctx.engine.backward(grad_loss, list(grad_final), want)
        return (None, g.x, g.y, None, *g.state0, *g.params)


class LossEngine:
    """One ``block_loss`` call: the forward pass over blocks 1.. (block 0 ran first, to
    name the tensors that need a gradient), the loss summed on the way, the graphs of
    the last ``keep_last`` blocks kept; then the :class:`ReversePass`."""

    def __init__(self, runner: BlockRunner, x_data: Data, y_data: Optional[Data],
                 params: List[torch.Tensor], first: _BlockGraph,
                 state1: Optional[List[torch.Tensor]], retain: bool, keep_last: int = 1):
        self.runner = runner
        self.state1 = state1  # the state entering block 1, where forward_rest starts
        self.x_data = x_data
        self.y_data = y_data
        self.x_grad = x_data.requires_grad
        self.y_grad = y_data is not None and y_data.requires_grad
        n = len(runner.blocks)
        # graphs kept from the forward pass (the last ``keep_last`` blocks): not recomputed
        self.first_kept = max(0, n - max(1, keep_last))
        kept: Dict[int, _BlockGraph] = {0: first} if self.first_kept == 0 else {}
        self.reverse = ReversePass(runner, x_data, y_data, params, kept, retain)
        self.loss_sum = add_loss(None, first.loss)

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
            self.reverse.kept[k] = graph
        return finish_loss(self.loss_sum, self.x_data).clone(), [t.clone() for t in r.final_state()]

    def backward(self, grad_loss: Optional[torch.Tensor],
                 grad_final: List[Optional[torch.Tensor]], want: Wanted) -> InputGrads:
        return self.reverse.run(grad_loss, grad_final, want)


def _seed_state(g_next: Optional[List[Optional[torch.Tensor]]],
                grad_final: List[Optional[torch.Tensor]], blk: TimeBlock,
                d: int) -> Optional[List[Optional[torch.Tensor]]]:
    """dL/d(state leaving ``blk``): rows ``[0, n_out)`` from the next block, rows
    ``[n_out, n_in)`` from the final-state gradient (those sequences end here)."""
    n_end = blk.n_in - blk.n_out
    fins = [None if (g is None or n_end == 0) else g.narrow(d, blk.n_out, n_end)
            for g in grad_final]
    if g_next is None and all(f is None for f in fins):
        return None
    nxts: List[Optional[torch.Tensor]] = g_next if g_next is not None else [None] * len(fins)
    out: List[Optional[torch.Tensor]] = []
    for nxt, fin in zip(nxts, fins):
        if fin is None and (nxt is None or n_end == 0):
            out.append(nxt)
        elif nxt is None and blk.n_out == 0:
            out.append(fin)
        else:  # both parts exist or one must be padded with zeros
            if nxt is None:
                assert fin is not None  # both None is the first case above
                nxt = fin.new_zeros(_with_dim(fin.shape, d, blk.n_out))
            if fin is None:
                fin = nxt.new_zeros(_with_dim(nxt.shape, d, n_end))
            out.append(torch.cat([nxt, fin], d))
    return out


def _with_dim(shape, d: int, size: int) -> List[int]:
    shape = list(shape)
    shape[d] = size
    return shape
