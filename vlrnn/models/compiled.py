"""The step loop over a custom cell, compiled with TorchScript (``StackedRNN(compile=True)``).

A Python loop over ``T`` cell calls pays Python's cost per step and per op; scripting
the whole per-layer loop (the cell's ``forward`` included) runs it in TorchScript's
interpreter instead, about twice as fast for small cells on a CPU, with the same ops,
so the same numbers and gradients. ``torch.compile`` was measured too: compiling took
minutes on a small CPU and each compiled step call cost more than the eager step, so it
is not used here.

The scripted loop keeps the step loop's conventions: ``steps[t]`` ``(sizes[t], F)`` in
packed (sorted) order, ``sizes`` non-increasing, rows ``n:cur`` set aside when their
sequences end, the final state in sorted order. A cell's state must be one tensor or a
pair of tensors (TorchScript needs the type); its ``forward`` must be scriptable
(type-annotated where the state is a tuple, source available).
"""
from __future__ import annotations

import warnings
from typing import Dict, List, Tuple

import torch
from torch import Tensor, nn

__all__ = ["compiled_loop"]


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


def _key(cell: nn.Module, pair: bool):
    # re-script when the parameters were replaced (e.g. .to(dtype)), not only changed
    return (id(cell), pair, tuple((p.data_ptr(), p.dtype, p.device) for p in cell.parameters()))


def compiled_loop(cell: nn.Module, state, cache: Dict):
    """The scripted step loop for ``cell`` and this kind of ``state`` (a tensor or a
    pair), from ``cache`` or scripted now. ``RuntimeError`` with the reason when
    TorchScript cannot compile the cell."""
    if isinstance(state, Tensor):
        pair = False
    elif isinstance(state, (tuple, list)) and len(state) == 2:
        pair = True
    else:
        raise ValueError(f"compile=True supports cells whose state is one tensor or a pair "
                         f"of tensors; {type(cell).__name__}'s state is a "
                         f"{type(state).__name__} of {len(state)}; use compile=False")
    key = _key(cell, pair)
    loop = cache.get(key)
    if loop is None:
        wrapper = (_PairStateLoop if pair else _TensorStateLoop)(cell)
        try:
            with warnings.catch_warnings():
                # torch >= 2.10 marks TorchScript deprecated in favour of torch.compile,
                # which is slower than eager here (see the module docstring)
                warnings.simplefilter("ignore", DeprecationWarning)
                loop = torch.jit.script(wrapper)
        except Exception as err:  # TorchScript raises many kinds; all mean "cannot script"
            raise RuntimeError(
                f"compile=True: TorchScript could not compile the step loop of cell "
                f"{type(cell).__name__} (its forward must be scriptable: source file "
                f"available, the state argument annotated as Tensor or Tuple[Tensor, "
                f"Tensor], TorchScript-supported ops only). Use compile=False to run the "
                f"Python step loop. TorchScript said: {str(err).strip().splitlines()[0]}"
            ) from err
        cache.clear()  # one entry per cell and state kind is enough: drop stale ones
        cache[key] = loop
    return loop
