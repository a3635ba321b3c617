"""First-order linear recurrence ``c_t = a_t * c_{t-1} + b_t`` over a time axis, in parallel.

This is the recurrence of a QRNN's forget-mult (``a = 1 - f``, ``b = f * z``) and of any
element-wise gated linear RNN. :func:`linear_scan` evaluates it for a whole block with a
number of tensor operations that grows with ``log2(T)``, not ``T``:

*Odd-even reduction* (a work-efficient parallel scan): combining neighbouring steps
``(2k, 2k+1)`` gives a recurrence of the same form over the odd steps only, with
multipliers ``a_{2k+1} a_{2k}`` and offsets ``a_{2k+1} b_{2k} + b_{2k+1}``; solve that
half-length recurrence recursively, then fill in the even steps with one more vectorised
update ``c_{2k} = a_{2k} c_{2k-1} + b_{2k}``. Total work is about ``2T`` element-wise
updates over ``log2(T)`` levels. Only products of the ``a``'s and sums appear (no
division, no ``exp(-cumsum(log a))``), so it is as stable as the step-by-step loop: with
``a`` in ``[0, 1]`` a long product underflows towards 0, which is its true value.

The backward pass is the same recurrence run backwards in time
(``dc_t = g_t + a_{t+1} dc_{t+1}``, :func:`_scan_core_rev`, the mirror image, so nothing
is flipped or copied), so :class:`_LinearScan` saves only ``a``, the output ``c`` and
``c0``, and runs one more parallel scan; the graph does not hold the ``log2(T)``
intermediate levels.
"""
from __future__ import annotations

from typing import Optional

import torch

__all__ = ["linear_scan"]

METHODS = ("parallel", "loop")


def _scan_core(a_rest: torch.Tensor, b: torch.Tensor, b0: torch.Tensor) -> torch.Tensor:
    """``c_0 = b0``, ``c_t = a_rest[t-1] * c_{t-1} + b_t`` for ``t >= 1``.

    ``a_rest`` is ``(T-1, *S)``, ``b`` is ``(T, *S)`` (its row 0 is ignored: ``b0`` takes
    its place, which lets callers fold an initial state in without copying ``b``).
    Plain torch ops, so it is differentiable too (used for double backward).
    """
    T = b.shape[0]
    if T == 1:
        return b0.unsqueeze(0)
    n = T // 2          # complete pairs (2k, 2k+1); their odd ends form the half problem
    m = (T + 1) // 2    # even steps 0, 2, ..., 2(m-1)
    a_odd = a_rest[0:2 * n - 1:2]                       # a_1, a_3, ..., a_{2n-1}
    b_pair = torch.addcmul(b[1:2 * n:2], a_odd, b[0:2 * n:2])  # row 0 uses b[0]: replaced
    b_pair0 = torch.addcmul(b[1], a_odd[0], b0)
    a_pair = a_rest[2:2 * n - 1:2] * a_rest[1:2 * n - 2:2]     # a_{2k+1} a_{2k}, k >= 1
    c_odd = _scan_core(a_pair, b_pair, b_pair0)         # c_1, c_3, ..., c_{2n-1}
    out = torch.empty_like(b)
    out[0] = b0
    if m > 1:  # c_{2k} = a_{2k} c_{2k-1} + b_{2k}, k >= 1
        out[2::2] = torch.addcmul(b[2::2], a_rest[1::2][:m - 1], c_odd[:m - 1])
    out[1::2] = c_odd
    return out


def _scan_core_rev(a_next: torch.Tensor, g: torch.Tensor, g_last: torch.Tensor) -> torch.Tensor:
    """The same recurrence backwards in time, without flipping (copying) anything:
    ``d_{T-1} = g_last``, ``d_t = a_next[t] * d_{t+1} + g_t`` for ``t < T-1``.

    ``a_next`` is ``(T-1, *S)`` (``a_next[t]`` multiplies ``d_{t+1}``), ``g`` is
    ``(T, *S)`` (its last row is ignored: ``g_last`` takes its place). The mirror image
    of :func:`_scan_core`: pairs are counted from the end, ``(t, t+1)`` for
    ``t = p, p+2, ..., T-2`` with ``p = T % 2``; their first elements form the half
    problem, their second elements (and ``t = 0`` when ``T`` is odd) are filled in after.
    """
    T = g.shape[0]
    if T == 1:  # a copy: g_last may be the incoming gradient itself, never hand it back
        return g_last.unsqueeze(0).clone()
    n = T // 2
    p = T - 2 * n      # first "half problem" step: 0 for even T, 1 for odd T
    q = 1 - p          # first step filled in afterwards
    a_first = a_next[p:T - 1:2]                                  # a_next[t], t = p, p+2, ..
    g_pair = torch.addcmul(g[p:T - 1:2], a_first, g[p + 1:T:2])  # last row uses g[T-1]: replaced
    g_pair_last = torch.addcmul(g[T - 2], a_next[T - 2], g_last)
    a_pair = a_next[p:T - 3:2] * a_next[p + 1:T - 2:2]          # a_next[t] a_next[t+1]
    d_first = _scan_core_rev(a_pair, g_pair, g_pair_last)        # d_p, d_{p+2}, .., d_{T-2}
    out = torch.empty_like(g)
    out[T - 1] = g_last
    m = (T + 1 - q) // 2  # steps q, q+2, .., T-1
    if m > 1:  # d_t = a_next[t] d_{t+1} + g_t for t = q, q+2, .., T-3
        out[q:T - 1:2] = torch.addcmul(g[q:T - 1:2], a_next[q:T - 1:2], d_first[q:q + m - 1])
    out[p:T - 1:2] = d_first
    return out


def _scan_from(a: torch.Tensor, b: torch.Tensor, c0: torch.Tensor) -> torch.Tensor:
    """``c_t = a_t c_{t-1} + b_t`` from ``c_{-1} = c0``; all of ``a`` is used."""
    return _scan_core(a[1:], b, torch.addcmul(b[0], a[0], c0))


class _LinearScan(torch.autograd.Function):
    """Parallel scan with a hand-written backward: the reverse-time scan of the
    adjoint, so only ``a``, ``c`` and ``c0`` are kept between forward and backward."""

    @staticmethod
    def forward(ctx, a, b, c0):
        c = _scan_from(a, b, c0)
        ctx.save_for_backward(a, c, c0)
        return c

    @staticmethod
    def backward(ctx, g):
        a, c, c0 = ctx.saved_tensors
        # dc_t = g_t + a_{t+1} dc_{t+1}, dc_{T-1} = g_{T-1}: the scan backwards in time
        dc = _scan_core_rev(a[1:], g, g[-1])
        need_a, need_b, need_c0 = ctx.needs_input_grad
        da = db = dc0 = None
        if need_a:
            da = torch.empty_like(dc)
            da[0] = dc[0] * c0
            da[1:] = dc[1:] * c[:-1]
        if need_b:
            db = dc
        if need_c0:
            dc0 = a[0] * dc[0]
        return da, db, dc0


def _scan_loop(a: torch.Tensor, b: torch.Tensor, c0: torch.Tensor) -> torch.Tensor:
    """The step-by-step reference (a Python loop over time; autograd through it)."""
    outs = []
    c = c0
    # unbind, not a[t]: one backward node for all steps instead of a full-size zero
    # gradient per step
    for a_t, b_t in zip(a.unbind(0), b.unbind(0)):
        c = torch.addcmul(b_t, a_t, c)
        outs.append(c)
    return torch.stack(outs)


def linear_scan(a: torch.Tensor, b: torch.Tensor, c0: Optional[torch.Tensor] = None, *,
                method: str = "parallel") -> torch.Tensor:
    """Solve ``c_t = a_t * c_{t-1} + b_t`` for ``t = 0 .. T-1`` with ``c_{-1} = c0``.

    Args:
        a: ``(T, *S)`` multipliers (for a QRNN ``1 - f``, in ``[0, 1]``).
        b: ``(T, *S)`` offsets, same shape as ``a``.
        c0: ``(*S)`` state before step 0; ``None`` means zeros.
        method: ``"parallel"`` (odd-even reduction, ``O(log T)`` tensor ops, hand-written
            backward) or ``"loop"`` (a Python loop over steps; the slow reference).

    Returns:
        ``c`` of shape ``(T, *S)``; differentiable w.r.t. ``a``, ``b`` and ``c0``.

    >>> import torch
    >>> from vlrnn.models import linear_scan
    >>> a, b = torch.rand(100, 4), torch.randn(100, 4)
    >>> c = linear_scan(a, b)
    >>> ref = linear_scan(a, b, method="loop")            # the step loop
    >>> c.shape, torch.allclose(c, ref, atol=1e-5)
    (torch.Size([100, 4]), True)
    """
    if a.shape != b.shape:
        raise ValueError(f"linear_scan: a and b must have the same shape (T, ...), got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    if a.dim() < 1:
        raise ValueError("linear_scan: a and b need a time dimension (dim 0)")
    if c0 is None:
        c0 = b.new_zeros(b.shape[1:])
    elif c0.shape != b.shape[1:]:
        raise ValueError(f"linear_scan: c0 must have shape {tuple(b.shape[1:])} (b without "
                         f"its time dim), got {tuple(c0.shape)}")
    if b.shape[0] == 0:
        return b.new_zeros(b.shape)
    if method == "parallel":
        return _LinearScan.apply(a, b, c0)
    if method == "loop":
        return _scan_loop(a, b, c0)
    raise ValueError(f"linear_scan: unknown method {method!r}; expected one of {METHODS}")
