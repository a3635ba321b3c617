"""One layer of a custom cell over a block, compiled (``StackedRNN(compile=True)``).

Built on a :class:`~vlrnn.models.compiled.split.CellSplit` of the cell:

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

from .split import CellSplit

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


class _ReverseLoop(nn.Module):
    """The per-step backward over ``bwd`` (a :class:`~.vjp.StepVJP`'s), last
    step first: ``saved`` as the forward loop recorded it, ``g_out[t]`` the gradient of
    step ``t``'s output (``sizes[t]`` rows), ``g_final`` of the final state (sorted
    rows). Returns per step (last step first) the frontier and tap gradients, and the
    gradient of the initial state."""

    def __init__(self, bwd: nn.Module, n_state: int, n_saved: int, n_gfr: int):
        super().__init__()
        self.bwd = bwd
        self.n_state = n_state
        self.n_saved = n_saved
        self.n_gfr = n_gfr

    def forward(self, saved: List[Tensor], sizes: List[int], g_out: List[Tensor],
                g_final: List[Tensor]) -> Tuple[List[Tensor], List[Tensor], List[Tensor]]:
        ns = self.n_state
        nv = self.n_saved
        nf = self.n_gfr
        n_steps = len(sizes)
        # g: the gradient of the state after step i, output gradient included
        g = [t[:sizes[n_steps - 1]] for t in g_final]
        g[0] = g[0] + g_out[n_steps - 1]
        g_fr: List[Tensor] = []
        g_taps: List[Tensor] = []
        for j in range(n_steps):
            i = n_steps - 1 - j
            n = sizes[i]
            rows = g[0].size(0)
            if rows < n:  # rows rows:n ended at step i: their final state's gradient
                g = [torch.cat([g[0], g_final[0][rows:n] + g_out[i][rows:n]])] + [
                    torch.cat([g[k], g_final[k][rows:n]]) for k in range(1, ns)]
            # bwd adds the previous step's output gradient (its first n rows; the
            # others enter with the final state's above, one step earlier)
            go = g_out[i - 1][:n] if i > 0 else torch.zeros_like(g[0])
            res = self.bwd(saved[i * nv:(i + 1) * nv], g, go)
            g_fr.extend(res[:nf])
            g = res[nf:nf + ns]
            g_taps.extend(res[nf + ns:])
        return g_fr, g, g_taps


class _SplitBlock(torch.autograd.Function):
    """``(frontier..., state..., params...) -> (out (N, H), final state...)`` with the
    backward of the module docstring."""

    @staticmethod
    def forward(ctx, layer: "SplitLayer", sizes: List[int], n_fr: int, n_st: int,
                *tensors: Tensor):
        if layer.reverse is not None:
            return _symbolic_forward(ctx, layer, sizes, n_fr, n_st, tensors)
        split = layer.split
        fr = [t.detach().requires_grad_() for t in tensors[:n_fr]]
        st = [t.detach().requires_grad_() for t in tensors[n_fr:n_fr + n_st]]
        # unoptimized: TorchScript's autodiff would fuse ops into differentiable
        # subgraphs, and a tap inside one would not see the gradient of its own uses
        with torch.enable_grad(), _plain_interpreter():
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
        split = ctx.layer.split
        if ctx.layer.reverse is not None:
            g_fr, g_st, cot, args = _symbolic_backward(ctx, d_out, d_final)
        else:
            out, final, fr, st, taps, args = ctx.graph
            del ctx.graph
            flat_taps = [t for ts in taps for t in ts]
            grads = torch.autograd.grad([out] + list(final), fr + st + flat_taps,
                                        [d_out] + list(d_final), allow_unused=True)
            g_fr = grads[:len(fr)]
            g_st = grads[len(fr):len(fr) + len(st)]
            g_taps = grads[len(fr) + len(st):]
            n_steps = len(taps[0]) if taps else 0
            cot = []
            for k in range(split.n_taps):
                pieces = g_taps[k * n_steps:(k + 1) * n_steps]
                cot.append(torch.cat([torch.zeros_like(t) if g is None else g
                                      for g, t in zip(pieces, taps[k])]))
        stacked = [torch.cat(a) for a in args]
        g_params: Sequence[Optional[Tensor]] = [None] * len(split.params)
        want = [p.requires_grad for p in split.params]
        if any(want) and split.linear_taps is not None and not ctx.autocast:
            g_params = _linear_param_grads(split, cot, stacked, want)
        elif any(want):
            with torch.enable_grad(), torch.autocast("cpu", enabled=ctx.autocast):
                tap_out = split.param_fn(stacked)
                ps = [p for p, w in zip(split.params, want) if w]
                got = iter(torch.autograd.grad(tap_out, ps, cot, allow_unused=True))
            g_params = [next(got) if w else None for w in want]
        return (None, None, None, None) + tuple(g_fr) + tuple(g_st) + tuple(g_params)


def _linear_param_grads(split: CellSplit, cot: List[Tensor], stacked: List[Tensor],
                        want: List[bool]) -> List[Optional[Tensor]]:
    """Parameter gradients when every tap is an ``nn.Linear`` call: ``dW = G^T X`` and
    ``db = sum(G)`` over all rows (what autograd would compute, without the forward)."""
    by_id = {}
    for (mod, j), g in zip(split.linear_taps, cot):
        pairs = [(mod.weight, lambda g=g, j=j: g.t().mm(stacked[j]))]
        if mod.bias is not None:
            pairs.append((mod.bias, lambda g=g: g.sum(0)))
        for p, grad in pairs:
            if p.requires_grad:
                got = grad()
                by_id[id(p)] = got if id(p) not in by_id else by_id[id(p)] + got
    return [by_id.get(id(p)) if w else None for p, w in zip(split.params, want)]


def _symbolic_forward(ctx, layer: "SplitLayer", sizes: List[int], n_fr: int, n_st: int,
                      tensors: Sequence[Tensor]):
    """Forward of :class:`_SplitBlock` with a symbolic backward: no autograd graph, the
    loop records what the reverse loop reads."""
    fr = list(tensors[:n_fr])
    st = list(tensors[n_fr:n_fr + n_st])
    with _plain_interpreter():
        outs, final, extra = layer.loop(_per_step(fr, sizes), sizes, st, True)
    split = layer.split
    per = split.n_args + layer.n_saved  # fwd records the tap inputs and saved values
    ctx.layer, ctx.sizes = layer, sizes
    ctx.args = [extra[j::per] for j in range(split.n_args)]
    start = split.n_args
    ctx.saved = [extra[i * per + start + k] for i in range(len(sizes))
                 for k in range(layer.n_saved)]
    ctx.fr_like = [(f.shape, f.dtype, f.device) for f in fr]
    ctx.autocast = torch.is_autocast_enabled("cpu")
    return (torch.cat(outs),) + tuple(final)


def _symbolic_backward(ctx, d_out: Tensor, d_final: Sequence[Tensor]):
    """Gradients of the frontier and initial state, the taps' cotangents (stacked over
    the steps) and their row inputs, from the scripted reverse loop."""
    layer, sizes = ctx.layer, ctx.sizes
    split = layer.split
    n_steps = len(sizes)
    with _plain_interpreter():
        g_fr_steps, g_st, g_tap_steps = layer.reverse(
            ctx.saved, sizes, list(d_out.split(sizes)), [g.contiguous() for g in d_final])
    del ctx.saved
    nf = sum(layer.fr_mask)
    g_fr: List[Optional[Tensor]] = []
    used = 0
    for k, (shape, dtype, device) in enumerate(ctx.fr_like):
        if layer.fr_mask[k]:  # steps come last first: put them back in order
            g_fr.append(torch.cat([g_fr_steps[j * nf + used] for j in range(n_steps - 1, -1, -1)]))
            used += 1
        else:
            g_fr.append(torch.zeros(shape, dtype=dtype, device=device))
    nt = split.n_taps
    cot = []
    for k in range(nt):
        # a tap's gradient is often a frontier's (Elman: both are tanh's backward)
        same = [i for i in range(nf) if g_tap_steps[k] is g_fr_steps[i]]
        if same:
            cot.append(g_fr[[j for j, m in enumerate(layer.fr_mask) if m][same[0]]])
        else:
            cot.append(torch.cat([g_tap_steps[j * nt + k]
                                  for j in range(n_steps - 1, -1, -1)]))
    return g_fr, g_st, cot, ctx.args


class SplitLayer:
    """A cell's compiled layer: ``split``, its scripted loop, and, when the per-step part
    has a symbolic backward, the scripted reverse loop (``reverse``; ``None``: autograd
    differentiates the per-step chain)."""

    def __init__(self, split: CellSplit, loop: torch.jit.ScriptModule,
                 reverse: Optional[torch.jit.ScriptModule] = None, n_saved: int = 0,
                 fr_mask: Optional[List[bool]] = None):
        self.split = split
        self.loop = loop
        self.reverse = reverse
        self.n_saved = n_saved
        self.fr_mask = fr_mask

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
            with _plain_interpreter():
                outs, final, _ = self.loop(_per_step(fr, sizes), sizes, state, False)
            return torch.cat(outs), final
        res = _SplitBlock.apply(self, sizes, len(fr), len(state), *fr, *state, *split.params)
        return res[0], list(res[1:])


def _plain_interpreter():
    """TorchScript without its graph optimizations: they would split ``addmm`` into
    ``mm`` + ``add`` (for fusers this torch build lacks on the CPU) and profile shapes
    that change with every packed block; the plain interpreter runs the ops as written."""
    return torch.jit.optimized_execution(False)


def _per_step(frontier: List[Tensor], sizes: List[int]) -> List[Tensor]:
    """The step pieces of every frontier tensor, step after step."""
    pieces = [f.split(sizes) for f in frontier]
    return [p[i] for i in range(len(sizes)) for p in pieces]
