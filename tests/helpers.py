"""Shared helpers for the gradient-equality tests."""
from __future__ import annotations

from typing import Callable, Dict, List, Sequence

import torch
from torch.nn.utils.rnn import pack_sequence

RTOL = 1e-7


def end_distributed_worker() -> None:
    """How a test's distributed worker ends: a barrier once every rank has put its results,
    then a plain exit. ``destroy_process_group`` with gloo aborts the process about one run
    in four on these machines ("terminate called without an active exception"), and the
    process group goes with the process anyway. A rank that failed meets the others
    here too (gloo's monitored barrier, bounded in time), so nobody waits forever."""
    from datetime import timedelta

    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        try:
            dist.monitored_barrier(timeout=timedelta(seconds=60))
        except RuntimeError:  # a rank died: its error is what the parent reports
            pass


def ragged_batch(lengths: Sequence[int], n_in: int, n_out: int, *, sorted_: bool = False,
                 gen: torch.Generator = None):
    """Packed ``(x, y)`` with the given lengths (input order)."""
    xs = [torch.randn(n, n_in, generator=gen) for n in lengths]
    ys = [torch.randn(n, n_out, generator=gen) for n in lengths]
    if sorted_:
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        xs, ys = [xs[i] for i in order], [ys[i] for i in order]
    return (pack_sequence(xs, enforce_sorted=sorted_), pack_sequence(ys, enforce_sorted=sorted_))


def grads_of(tensors: Sequence[torch.Tensor]) -> List[torch.Tensor]:
    return [None if t.grad is None else t.grad.detach().clone() for t in tensors]


def zero(tensors: Sequence[torch.Tensor]) -> None:
    for t in tensors:
        t.grad = None


def run_both(tensors: Sequence[torch.Tensor], reference: Callable[[], torch.Tensor],
             engine: Callable[[], torch.Tensor]):
    """Run ``reference`` and ``engine`` (each does its own backward and returns what to
    compare); return (ref grads, engine grads, ref out, engine out)."""
    zero(tensors)
    ref_out = reference()
    ref = grads_of(tensors)
    zero(tensors)
    eng_out = engine()
    eng = grads_of(tensors)
    zero(tensors)
    return ref, eng, ref_out, eng_out


def assert_close_grads(ref: Sequence, got: Sequence, names: Sequence[str] = None,
                       rtol: float = RTOL) -> None:
    """Each gradient equal to the reference to ``rtol`` relative to its largest entry."""
    assert len(ref) == len(got)
    for i, (a, b) in enumerate(zip(ref, got)):
        name = names[i] if names else f"tensor {i}"
        if a is None or b is None:
            assert a is None and b is None, f"{name}: reference grad {a is not None}, engine {b is not None}"
            continue
        assert a.shape == b.shape, f"{name}: shape {tuple(a.shape)} vs {tuple(b.shape)}"
        scale = a.abs().max().clamp_min(1e-30)
        err = ((a - b).abs().max() / scale).item()
        assert err <= rtol, f"{name}: relative error {err:.3e} > {rtol}"


def flat_state(state) -> List[torch.Tensor]:
    if isinstance(state, torch.Tensor):
        return [state]
    out = []
    for s in state:
        out.extend(flat_state(s))
    return out


def state_like(model_kind: str, num_layers: int, batch: int, hidden: int) -> Dict:
    """Random initial state for nn.LSTM/GRU/RNN ``(L, B, H)``, requiring grad."""
    h = torch.randn(num_layers, batch, hidden, requires_grad=True)
    if model_kind == "lstm":
        return (h, torch.randn(num_layers, batch, hidden, requires_grad=True))
    return h


def seeded_total(fn, model, loss_fn, x, y, *, seed: int, **kw) -> torch.Tensor:
    """``fn`` (``vlrnn.full_loss`` or ``vlrnn.block_loss``) after ``manual_seed(seed)``,
    plus a loss on the final state; runs the backward and returns the detached total."""
    torch.manual_seed(seed)  # the same dropout draws for both
    out = fn(model, loss_fn, x, y, **kw)
    total = out.loss + sum((s ** 2).sum() * 0.1 for s in flat_state(out.state))
    total.backward()
    return total.detach()
