"""One layer of a custom cell over a block, compiled (``StackedRNN(compile=True)``).

Built on a :class:`~vlrnn.models.compiled_split.CellSplit` of the cell:

1. the hoisted part runs once on all ``N`` rows of the block (one matmul, not ``T``);
2. the per-step part runs as a TorchScript loop. Without gradients that is all. With
   gradients the loop runs inside :class:`_SplitBlock`, an autograd function whose
   per-step graph has no edges to the parameters: its backward is a chain of the
   state's vector-Jacobian products only (for Elman: tanh backward and one matmul per
   step, no weight-gradient matmul and no accumulation per step);
3. the parameter gradients are then one vector-Jacobian product of the taps (the ops
   that read a parameter) over the rows of all steps stacked: the per-step parameter
   gradients summed over time equal it because the cell is row-wise (rows
   independent, parameters shared). Same sums, so the same gradients to rounding.

Packed input follows the step loop: ``sizes`` non-increasing, the rows ``n:cur`` set
aside when their sequences end, the final state in sorted order.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .compiled_split import CellSplit

__all__ = ["SplitLayer"]


class _SplitLoop(nn.Module):
    """The per-step loop over ``rec``: ``frontier`` holds, step after step, the
    ``n_frontier`` pre values of each step (``sizes[t]`` rows at step ``t``)."""

    def __init__(self, rec: nn.Module, n_state: int, n_frontier: int):
        super().__init__()
        self.rec = rec
        self.n_state = n_state
        self.n_frontier = n_frontier

    def forward(self, frontier: List[Tensor], sizes: List[int], state: List[Tensor],
                record: bool) -> Tuple[List[Tensor], List[Tensor], List[Tensor]]:
        ns = self.n_state
        nf = self.n_frontier
        outs: List[Tensor] = []
        extra: List[Tensor] = []  # per step: the taps, then their row inputs
        ended: List[List[Tensor]] = []
        cur = sizes[0]
        for i in range(len(sizes)):
            n = sizes[i]
            if n < cur:  # rows n:cur finished at the previous step
                ended.append([s[n:cur] for s in state])
                state = [s[:n] for s in state]
                cur = n
            res = self.rec(frontier[i * nf:(i + 1) * nf], state)
            state = res[:ns]
            outs.append(state[0])
            if record:
                extra.extend(res[ns:])
        if len(ended) > 0:  # later enders are earlier rows
            ended.reverse()
            state = [torch.cat([state[k]] + [e[k] for e in ended]) for k in range(ns)]
        return outs, state, extra


class _SplitBlock(torch.autograd.Function):
    """``(frontier..., state..., params...) -> (out (N, H), final state...)`` with the
    backward of the module docstring."""

    @staticmethod
    def forward(ctx, layer: "SplitLayer", sizes: List[int], n_fr: int, n_st: int,
                *tensors: Tensor):
        split = layer.split
        fr = [t.detach().requires_grad_() for t in tensors[:n_fr]]
        st = [t.detach().requires_grad_() for t in tensors[n_fr:n_fr + n_st]]
        # unoptimized: TorchScript's autodiff would fuse ops into differentiable
        # subgraphs, and a tap inside one would not see the gradient of its own uses
        with torch.enable_grad(), torch.jit.optimized_execution(False):
            # split here (one autograd node for all steps; a slice per step would cost
            # a zero-filled (N, ...) gradient per step in the backward)
            outs, final, extra = layer.loop(_per_step(fr, sizes), sizes, st, True)
            out = torch.cat(outs)
        per = split.n_taps + split.n_args
        taps = [extra[i::per] for i in range(split.n_taps)]
        args = [[a.detach() for a in extra[split.n_taps + j::per]] for j in range(split.n_args)]
        if any(not t.requires_grad for ts in taps for t in ts):
            raise RuntimeError("compile=True: a parameter op of the cell does not depend "
                               "differentiably on the input or state; use compile=False")
        ctx.layer, ctx.graph = layer, (out, final, fr, st, taps, args)
        ctx.n_fr, ctx.n_st = n_fr, n_st
        ctx.autocast = torch.is_autocast_enabled("cpu")
        return (out.detach(),) + tuple(f.detach() for f in final)

    @staticmethod
    def backward(ctx, d_out: Tensor, *d_final: Tensor):
        if torch.is_grad_enabled():  # create_graph=True: a gradient of this gradient
            raise RuntimeError(
                "StackedRNN(compile=True) has first derivatives only; for a double "
                "backward (create_graph=True) use compile=False")
        out, final, fr, st, taps, args = ctx.graph
        del ctx.graph
        flat_taps = [t for ts in taps for t in ts]
        grads = torch.autograd.grad([out] + list(final), fr + st + flat_taps,
                                    [d_out] + list(d_final), allow_unused=True)
        g_fr = grads[:len(fr)]
        g_st = grads[len(fr):len(fr) + len(st)]
        g_taps = grads[len(fr) + len(st):]
        split = ctx.layer.split
        n_steps = len(taps[0]) if taps else 0
        cot = []
        for k in range(split.n_taps):
            pieces = g_taps[k * n_steps:(k + 1) * n_steps]
            cot.append(torch.cat([torch.zeros_like(t) if g is None else g
                                  for g, t in zip(pieces, taps[k])]))
        stacked = [torch.cat(a) for a in args]
        g_params: Sequence[Optional[Tensor]] = [None] * len(split.params)
        want = [p.requires_grad for p in split.params]
        if any(want):
            with torch.enable_grad(), torch.autocast("cpu", enabled=ctx.autocast):
                tap_out = split.param_fn(stacked)
                ps = [p for p, w in zip(split.params, want) if w]
                got = iter(torch.autograd.grad(tap_out, ps, cot, allow_unused=True))
            g_params = [next(got) if w else None for w in want]
        return (None, None, None, None) + tuple(g_fr) + tuple(g_st) + tuple(g_params)


class SplitLayer:
    """A cell's compiled layer: ``split`` and its scripted loop."""

    def __init__(self, split: CellSplit, loop: torch.jit.ScriptModule):
        self.split = split
        self.loop = loop

    def __call__(self, x_rows: Tensor, sizes: List[int], state: List[Tensor]
                 ) -> Tuple[Tensor, List[Tensor]]:
        """``x_rows`` ``(N, F)`` (packed order, or dense ``T*B`` rows step after step),
        ``sizes`` rows per step, ``state`` the cell state's tensors ``(sizes[0], H)``.
        Returns the outputs ``(N, H)`` and the final state (sorted order)."""
        split = self.split
        fr = list(split.pre(x_rows)) if split.pre is not None else [x_rows]
        grad = torch.is_grad_enabled() and (
            any(t.requires_grad for t in fr + state)
            or any(p.requires_grad for p in split.params))
        if not grad:
            outs, final, _ = self.loop(_per_step(fr, sizes), sizes, state, False)
            return torch.cat(outs), final
        res = _SplitBlock.apply(self, sizes, len(fr), len(state), *fr, *state, *split.params)
        return res[0], list(res[1:])


def _per_step(frontier: List[Tensor], sizes: List[int]) -> List[Tensor]:
    """The step pieces of every frontier tensor, step after step."""
    pieces = [f.split(sizes) for f in frontier]
    return [p[i] for i in range(len(sizes)) for p in pieces]
