"""``StackedRNN(compile=True)``: a custom cell's layer compiled, picked per cell.

A Python loop over ``T`` cell calls pays Python's cost per step and per op, and its
backward pays the autograd engine's per step (about ten kernels per step for an Elman
cell, weight gradients and their accumulation included). The compiled layer removes
both where the cell allows (see :mod:`.split`, :mod:`.vjp`,
:mod:`.block`):

1. **split** (torch.fx): the part of the step that reads only ``x_t`` (``ih(x_t)``)
   runs once on the whole block; the per-step rest runs in a TorchScript loop; the
   parameter gradients are one batched product over all steps' rows;
2. **symbolic backward**: when every op on the state path has a derivative rule here,
   the per-step backward is a scripted reverse loop too (no autograd graph per step);
   otherwise autograd runs the per-step chain, still without the weight gradients;
3. a cell fx cannot trace is split the trivial way (the whole cell per step, parameter
   gradients still batched); one that also draws random numbers runs the plain
   scripted step loop (per-step autograd), as before.

It needs a *row-wise* cell (rows of a batch computed independently, parameters shared:
a batched call over all steps' rows must equal the per-step calls); ``RuntimeError``
for cells that mix rows (batch norm, a mean over the batch). Random ops (dropout)
inside the cell stay per step, drawing in the step loop's order. A cell's state must
be one tensor or a pair; the whole-cell paths need a scriptable ``forward``. Under
autocast, and for zero steps, the Python step loop runs. First derivatives only.
``torch.compile`` was measured too: compiling took minutes on a small CPU and each
compiled step call cost more than the eager step, so it is not used here.

The loops keep the step loop's conventions: rows in packed (sorted) order, ``sizes``
non-increasing, rows ``n:cur`` set aside when their sequences end, the final state in
sorted order.
"""
from __future__ import annotations

import warnings
from typing import Dict, List, Tuple

import torch
from torch import Tensor, nn

from .block import SplitLayer, _ReverseLoop, _SplitLoop
from .codegen import forward_loop, reverse_loop
from .fuse import fuse_linear
from .split import (CannotSplit, check_no_batch_modules, check_row_wise,
                             is_random_cell, split_cell, whole_cell_split)
from .vjp import build_vjp, check_vjp

__all__ = ["compiled_layer"]


class _TensorStateLoop(nn.Module):
    def __init__(self, cell: nn.Module):
        super().__init__()
        self.cell = cell

    def forward(self, steps: List[Tensor], sizes: List[int], h: Tensor
                ) -> Tuple[List[Tensor], Tensor]:
        outs: List[Tensor] = []
        ended: List[Tensor] = []
        cur = sizes[0]
        for i in range(len(steps)):
            n = sizes[i]
            if n < cur:  # rows n:cur finished at the previous step
                ended.append(h[n:cur])
                h = h[:n]
                cur = n
            h = self.cell(steps[i], h)
            outs.append(h)
        if len(ended) > 0:  # later enders are earlier rows
            ended.reverse()
            h = torch.cat([h] + ended)
        return outs, h


class _PairStateLoop(nn.Module):
    def __init__(self, cell: nn.Module):
        super().__init__()
        self.cell = cell

    def forward(self, steps: List[Tensor], sizes: List[int], h: Tuple[Tensor, Tensor]
                ) -> Tuple[List[Tensor], Tuple[Tensor, Tensor]]:
        outs: List[Tensor] = []
        ended0: List[Tensor] = []
        ended1: List[Tensor] = []
        cur = sizes[0]
        for i in range(len(steps)):
            n = sizes[i]
            if n < cur:
                ended0.append(h[0][n:cur])
                ended1.append(h[1][n:cur])
                h = (h[0][:n], h[1][:n])
                cur = n
            h = self.cell(steps[i], h)
            outs.append(h[0])
        if len(ended0) > 0:
            ended0.reverse()
            ended1.reverse()
            h = (torch.cat([h[0]] + ended0), torch.cat([h[1]] + ended1))
        return outs, h


class _WholeLoop:
    """The scripted whole-cell loop with :class:`~vlrnn.models.compiled.block.SplitLayer`'s
    call convention (rows in, rows out)."""

    def __init__(self, loop, pair: bool):
        self.loop, self.pair = loop, pair

    def __call__(self, x_rows: Tensor, sizes: List[int], state: List[Tensor]):
        steps = list(x_rows.split(sizes))
        outs, final = self.loop(steps, sizes, tuple(state) if self.pair else state[0])
        return torch.cat(outs), (list(final) if self.pair else [final])


def _key(cell: nn.Module, pair: bool, x: Tensor):
    # rebuild when the parameters were replaced (e.g. .to(dtype)), not only changed, and
    # when a submodule's training flag changed (the scripted copies keep their own)
    return (id(cell), pair, x.dtype, x.device,
            tuple((p.data_ptr(), p.dtype, p.device) for p in cell.parameters()),
            tuple(m.training for m in cell.modules()))


def _script_whole_loop(cell: nn.Module, pair: bool) -> _WholeLoop:
    wrapper = (_PairStateLoop if pair else _TensorStateLoop)(cell)
    return _WholeLoop(_script(cell, wrapper), pair)


def _script(cell: nn.Module, module: nn.Module):
    try:
        with warnings.catch_warnings():
            # torch >= 2.10 marks TorchScript deprecated in favour of torch.compile,
            # which is slower than eager here (see the module docstring)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)
            return torch.jit.script(module)
    except Exception as err:  # TorchScript raises many kinds; all mean "cannot script"
        raise RuntimeError(
            f"compile=True: TorchScript could not compile the step loop of cell "
            f"{type(cell).__name__} (its forward must be scriptable: source file "
            f"available, the state argument annotated as Tensor or Tuple[Tensor, "
            f"Tensor], TorchScript-supported ops only). Use compile=False to run the "
            f"Python step loop. TorchScript said: {str(err).strip().splitlines()[0]}"
        ) from err


def _build(cell: nn.Module, pair: bool, state: List[Tensor], x: Tensor):
    """The compiled layer for ``cell``: split with fx when it can be, else the whole cell
    per step (see the module docstring)."""
    g = torch.Generator(device="cpu").manual_seed(0)
    rows = 7  # example rows, a count unlikely to equal a feature size
    ex_x = torch.randn((rows,) + tuple(x.shape[1:]), generator=g).to(x)
    ex_st = [torch.randn((rows,) + tuple(s.shape[1:]), generator=g).to(s) for s in state]

    def call(c, xt, st):
        out = c(xt, tuple(st) if pair else st[0])
        return list(out) if pair else [out]
    name = type(cell).__name__
    try:
        check_no_batch_modules(cell)
        random = is_random_cell(cell, ex_x, ex_st, call)
        if not random:  # (a random cell's rows draw differently on any batch)
            check_row_wise(cell, ex_x, ex_st, call)
    except CannotSplit as why:
        raise RuntimeError(f"compile=True needs a row-wise cell (each row of the batch "
                           f"computed on its own); cell {name} is not: {why}. Use "
                           f"compile=False") from None
    try:
        split = split_cell(cell, ex_x, ex_st, pair, call)
    except (CannotSplit, RuntimeError) as why:
        reason = str(why)
    else:
        try:
            return _symbolic_layer(cell, split, ex_x, ex_st)
        except (CannotSplit, RuntimeError):
            pass  # an op without a derivative rule: autograd runs the per-step chain
        try:
            return SplitLayer(split, _script(cell, _SplitLoop(split.rec, split.n_state,
                                                              split.n_frontier)))
        except RuntimeError as why:
            reason = str(why)
    if random:  # a batched call over all steps would draw other numbers than the steps
        warnings.warn(f"compile=True: cell {name} draws random numbers and could not be "
                      f"split ({reason}); running its plain scripted step loop (slower)",
                      UserWarning, stacklevel=4)
        return _script_whole_loop(cell, pair)
    split = whole_cell_split(cell, pair)
    return SplitLayer(split, _script(cell, _SplitLoop(split.rec, split.n_state, split.n_frontier)))


def _inlined(loop):
    """The step function inlined into the loop's graph: the plain interpreter the loops
    run in (see block.py) would otherwise pay a call per step."""
    inline = getattr(torch._C, "_jit_pass_inline", None)
    if inline is not None:  # a private pass: without it the loops are only slower
        inline(loop.graph)
    return loop


def _symbolic_layer(cell: nn.Module, split, ex_x: Tensor, ex_st: List[Tensor]) -> SplitLayer:
    """The split layer with a symbolic per-step backward, checked against autograd on the
    example rows; ``CannotSplit`` / ``RuntimeError`` when it cannot be built or differs."""
    vjp = build_vjp(fuse_linear(split.rec, split.n_state), split.n_state, split.n_frontier,
                    split.n_taps)
    check_vjp(vjp, split, ex_x, ex_st)
    try:  # the step pasted into loops written for it; else the generic loops
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)
            loop = forward_loop(vjp.fwd, split.n_state, split.n_frontier)
            reverse = reverse_loop(vjp.bwd, split.n_state, vjp.n_saved, sum(vjp.fr_mask))
    except Exception:  # noqa: BLE001 (any failure: the generic loops do the same)
        loop = _inlined(_script(cell, _SplitLoop(vjp.fwd, split.n_state, split.n_frontier)))
        reverse = _inlined(_script(cell, _ReverseLoop(vjp.bwd, split.n_state, vjp.n_saved,
                                                      sum(vjp.fr_mask))))
    return SplitLayer(split, loop, reverse, vjp.n_saved, vjp.fr_mask)


def compiled_layer(cell: nn.Module, state, x: Tensor, cache: Dict):
    """The compiled layer of ``cell`` for this kind of ``state`` (a tensor or a pair) and
    inputs like ``x`` (rows on dim 0 or time-major), from ``cache`` or built now: called
    as ``layer(x_rows (N, F), sizes, state tensors) -> (out (N, H), final tensors)``.
    ``RuntimeError`` with the reason when the cell cannot be compiled."""
    if isinstance(state, Tensor):
        pair = False
    elif isinstance(state, (tuple, list)) and len(state) == 2:
        pair = True
    else:
        raise ValueError(f"compile=True supports cells whose state is one tensor or a pair "
                         f"of tensors; {type(cell).__name__}'s state is a "
                         f"{type(state).__name__} of {len(state)}; use compile=False")
    x = x.reshape(-1, x.shape[-1])
    key = _key(cell, pair, x)
    layer = cache.get(key)
    if layer is None:
        layer = _build(cell, pair, [state] if not pair else list(state), x)
        cache.clear()  # one entry per cell and state kind is enough: drop stale ones
        cache[key] = layer
    return layer
