"""A diagonal complex linear time-invariant recurrence ``x_t = lam * x_{t-1} + b_t`` over
dim 0 (the LRU's), as one autograd node with a hand-written backward.

The loop runs one fused complex multiply-add per step (``torch.addcmul`` on a contiguous
``(B, N)`` slice, written into the output): with ``lam`` the same at every step there is
nothing to precompute, and ``T`` such ops cost less than the copies a chunked or
matmul formulation needs for its layouts. The backward is the adjoint recurrence
backwards in time with ``conj(lam)`` (torch's convention for complex gradients of a real
loss: ``dL/dx_{t-1} = conj(lam) dL/dx_t``), then ``dL/dlam = sum_t dL/dx_t conj(x_{t-1})``
in one pass. Only products with ``|lam| <= 1`` and sums appear: as stable as it gets
over any length (no powers of ``lam``, no division).
"""
from __future__ import annotations

import torch

__all__ = ["lti_scan"]


def _forward_loop(lam: torch.Tensor, b: torch.Tensor, x0: torch.Tensor, out: torch.Tensor
                  ) -> torch.Tensor:
    prev = x0
    # unbind: all the per-step views in one call (T selects cost as much as the math)
    for b_t, o_t in zip(b.unbind(0), out.unbind(0)):
        prev = torch.addcmul(b_t, lam, prev, out=o_t)
    return out


class _LTIScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, lam, b, x0):
        x = _forward_loop(lam, b, x0, torch.empty_like(b, memory_format=torch.contiguous_format))
        ctx.save_for_backward(lam, x, x0)
        return x

    @staticmethod
    def backward(ctx, g):
        if torch.is_grad_enabled():
            raise RuntimeError("lti_scan has first derivatives only")
        lam, x, x0 = ctx.saved_tensors
        T = x.shape[0]
        lam_c = lam.conj().resolve_conj()
        d = torch.empty_like(x)
        d[T - 1] = g[T - 1]
        nxt = d[T - 1]
        g_t, d_t = g.unbind(0), d.unbind(0)
        for t in range(T - 2, -1, -1):
            nxt = torch.addcmul(g_t[t], lam_c, nxt, out=d_t[t])
        dlam = dx0 = None
        need_lam, _, need_x0 = ctx.needs_input_grad
        if need_lam:
            dlam = (d[1:] * x[:-1].conj()).sum((0, 1)) + (d[0] * x0.conj()).sum(0)
        if need_x0:
            dx0 = lam_c * d[0]
        return dlam, d, dx0


def lti_scan(lam: torch.Tensor, b: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """Solve ``x_t = lam * x_{t-1} + b_t`` (``t = 0 .. T-1``, ``x_{-1} = x0``).

    Args:
        lam: ``(N,)`` complex multipliers (``|lam| <= 1`` for a stable recurrence).
        b: ``(T, B, N)`` complex inputs.
        x0: ``(B, N)`` complex state before step 0.

    Returns:
        ``x`` ``(T, B, N)`` complex; differentiable w.r.t. ``lam``, ``b`` and ``x0``
        (first derivatives).
    """
    if b.shape[0] == 0:
        return b.new_zeros(b.shape)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (lam, b, x0)):
        return _LTIScan.apply(lam, b, x0)
    return _forward_loop(lam, b, x0, torch.empty_like(b, memory_format=torch.contiguous_format))
