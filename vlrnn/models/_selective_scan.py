"""Mamba's selective scan on a block, as one autograd node (CPU-friendly, chunked in time).

For inputs ``x``, step sizes ``dt`` ``(T, B, D)``, ``A`` ``(D, N)`` (negative) and
input-dependent ``B_t``, ``C_t`` ``(T, B, N)``, the state ``h`` ``(B, D, N)`` runs::

    h_t = exp(dt_t A) * h_{t-1} + (dt_t x_t) B_t        (outer product over d, n)
    y_t = h_t C_t                                       (sum over n)

The state is ``N`` times larger than the input, so the ``(T, B, D, N)`` tensors of a
whole block would dominate memory: the node keeps only ``y`` and the state entering
every ``ts``-th step, and its backward walks these sub-blocks last to first, recomputing
each one's states from its entry state before running the adjoint recurrence backwards
in time. Two ways to run a sub-block:

- ``"steps"`` (states of ``STEP_BYTES`` or more, the usual case): one step at a time,
  four fused ops forwards and about a dozen backwards on the ``(B, N, D)`` state, which
  stays in cache (``N`` outer, so the inner loops run over the ``D`` channels); outer
  products and reductions over ``N`` or ``D`` are batched matmuls.
- ``"blocks"`` (small states, where per-op overhead dominates): ``exp(dt A)`` and the
  inputs of the whole sub-block in vectorised passes, the recurrence by the chunked scan
  of :mod:`vlrnn.models._qrnn_scan`.

Only products of ``exp(dt A)`` in ``(0, 1]`` and sums appear (no division, no logs): as
stable as the step loop over any length.
"""
from __future__ import annotations

import torch

from ._qrnn_scan import chunked_scan

__all__ = ["selective_scan"]

SUB_ELEMENTS = 2 ** 21
# states of at least this many bytes run one step at a time (see selective_scan)
STEP_BYTES = 32 * 1024


def _sub_len(T: int, B: int, D: int, N: int, chunk: int | None, steps: bool = False) -> int:
    if chunk is not None:
        return max(1, min(T, chunk))
    # one step at a time, the backward's recomputed states should stay in cache (~1 MB)
    budget = SUB_ELEMENTS // 8 if steps else SUB_ELEMENTS
    return max(1, min(T, budget // max(1, B * D * N)))


def _states(x, dt, A, Bm, h_start):
    """``exp(dt A)`` and every ``h`` of a sub-block ``(ts, B, D, N)``, and ``dt x``."""
    dA = torch.mul(dt.unsqueeze(-1), A).exp_()
    dtx = dt * x
    h = torch.mul(dtx.unsqueeze(-1), Bm.unsqueeze(-2))
    chunked_scan(dA, h, h_start, out=h)
    return dA, h, dtx


def _ends(t_last: torch.Tensor | None, t0: int, t1: int):
    """Sequences whose last step is in ``[t0, t1)``: (their batch rows, their steps - t0)."""
    if t_last is None:
        return None
    rows = ((t_last >= t0) & (t_last < t1)).nonzero().squeeze(1)
    return rows, t_last.index_select(0, rows) - t0


# -- large states: one step at a time, the state staying in cache ------------------------------
def _end_rows(t_last: torch.Tensor | None) -> dict:
    """``{step: batch rows of the sequences whose last step it is}``."""
    if t_last is None:
        return {}
    out: dict = {}
    for b, t in enumerate(t_last.tolist()):
        out.setdefault(t, []).append(b)
    return {t: torch.tensor(rows, device=t_last.device) for t, rows in out.items()}


def _forward_steps(x, dt, A, Bm, Cm, h0, t_last, ts: int, keep: bool):
    """``y``, the last state and (``keep``) the state entering every ``ts``-th step; four
    fused ops per step on the state, held as ``(B, N, D)`` (the inner loops run over the
    ``D`` channels, not the short ``N``; states in and out are ``(B, D, N)``).

    Every per-step view is made by one ``unbind`` per tensor before the loop (an
    ``unsqueeze`` per step and tensor was a tenth of the scan's time), and the outer
    product ``(dt x)_t B_t`` is a broadcast ``addcmul_`` (``baddbmm_`` with an inner
    dimension of 1 copied the state first)."""
    dtx = dt * x
    At = A.t().contiguous()                                     # (N, D)
    y = torch.empty_like(x, memory_format=torch.contiguous_format)
    h = h0.transpose(1, 2).contiguous()
    dA = torch.empty_like(h)
    ends = _end_rows(t_last)
    h_last = h.clone() if t_last is not None else None
    starts = []
    steps = zip(dt.unsqueeze(2).unbind(0), dtx.unsqueeze(2).unbind(0),
                Bm.unsqueeze(-1).unbind(0), Cm.unsqueeze(2).unbind(0), y.unsqueeze(2).unbind(0))
    for t, (dt_t, dtx_t, b_t, c_t, y_t) in enumerate(steps):
        if keep and t % ts == 0:
            starts.append(h.clone())
        torch.mul(dt_t, At, out=dA).exp_()
        h.mul_(dA).addcmul_(b_t, dtx_t)
        torch.bmm(c_t, h, out=y_t)
        if h_last is not None and t in ends:
            h_last.index_copy_(0, ends[t], h.index_select(0, ends[t]))
    last = h if h_last is None else h_last
    return y, last.transpose(1, 2).contiguous(), starts


def _backward_steps(x, dt, A, Bm, Cm, t_last, starts, ts: int, dy, dh_last):
    """The gradients of :func:`_forward_steps`: each sub-block's states recomputed from
    its entry state (keeping ``h_{t-1} exp(dt_t A)``, the factor of ``d(dt A)``), then the
    adjoint one step at a time from the last. The reductions over ``D`` (``dL/dC``,
    ``dL/dB``) are a product and a sum over the contiguous dim: twice as fast as a
    batched matrix-vector product."""
    T = x.shape[0]
    dtx = dt * x
    At = A.t().contiguous()
    dy = dy.contiguous()
    d_dtx, ddt_a = torch.empty_like(dtx), torch.empty_like(dtx)
    dB, dC = torch.empty_like(Bm), torch.empty_like(Cm)
    acc = torch.zeros_like(starts[0])               # sum over steps of d(dt A) dt, per row
    ends = _end_rows(t_last)
    dh_last = dh_last.transpose(1, 2).contiguous()
    g = dh_last.clone() if t_last is None else torch.zeros_like(dh_last)
    hs = starts[0].new_empty((ts + 1,) + starts[0].shape)
    dAs = starts[0].new_empty((ts,) + starts[0].shape)
    Ps = starts[0].new_empty((ts,) + starts[0].shape)    # h_{t-1} exp(dt_t A)
    tmp = torch.empty_like(g)
    dt_s, dtx_s = dt.unsqueeze(2).unbind(0), dtx.unsqueeze(2).unbind(0)   # (B, 1, D)
    b_s, c_s = Bm.unsqueeze(-1).unbind(0), Cm.unsqueeze(-1).unbind(0)     # (B, N, 1)
    b_row = Bm.unsqueeze(2).unbind(0)                                     # (B, 1, N)
    dy_s = dy.unsqueeze(2).unbind(0)                                      # (B, 1, D)
    ddt_s, dc_s, db_s = ddt_a.unbind(0), dC.unbind(0), dB.unbind(0)
    d_dtx_s = d_dtx.unsqueeze(2).unbind(0)
    for i in range(len(starts) - 1, -1, -1):
        t0 = i * ts
        n = min(T, t0 + ts) - t0
        hs[0].copy_(starts[i])
        for j in range(n):  # hs[j + 1] = h at step t0 + j, dAs[j] = exp(dt A) there
            t = t0 + j
            torch.mul(dt_s[t], At, out=dAs[j]).exp_()
            torch.mul(hs[j], dAs[j], out=Ps[j])
            torch.addcmul(Ps[j], b_s[t], dtx_s[t], out=hs[j + 1])
        for j in range(n - 1, -1, -1):
            t = t0 + j
            g.addcmul_(c_s[t], dy_s[t])                                  # dL/dh_t
            if t in ends:
                g.index_add_(0, ends[t], dh_last.index_select(0, ends[t]))
            torch.sum(torch.mul(hs[j + 1], dy_s[t], out=tmp), -1, out=dc_s[t])
            torch.bmm(b_row[t], g, out=d_dtx_s[t])
            torch.sum(torch.mul(g, dtx_s[t], out=tmp), -1, out=db_s[t])
            torch.mul(g, Ps[j], out=tmp)                                # d(dt A)
            acc.addcmul_(tmp, dt_s[t])
            torch.sum(tmp.mul_(At), 1, out=ddt_s[t])
            g.mul_(dAs[j])                                              # to step t - 1
    dx = d_dtx * dt
    ddt = ddt_a.addcmul_(d_dtx, x)
    return dx, ddt, acc.sum(0).t(), dB, dC, g.transpose(1, 2).contiguous()


class _SelectiveScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dt, A, Bm, Cm, h0, t_last, chunk, steps):
        T, B, D = x.shape
        N = A.shape[1]
        ts = _sub_len(T, B, D, N, chunk, steps)
        ctx.ts, ctx.steps = ts, steps
        if steps:
            y, h_last, starts = _forward_steps(x, dt, A, Bm, Cm, h0, t_last, ts, True)
            ctx.save_for_backward(x, dt, A, Bm, Cm, t_last, *starts)
            return y, h_last
        y = x.new_empty(T, B, D)
        h_last = h0.clone() if t_last is not None else None
        starts: list[torch.Tensor] = []
        h_prev = h0
        for t0 in range(0, T, ts):
            t1 = min(T, t0 + ts)
            starts.append(h_prev)
            _, h, _ = _states(x[t0:t1], dt[t0:t1], A, Bm[t0:t1], h_prev)
            n = t1 - t0
            torch.bmm(h.view(n * B, D, N), Cm[t0:t1].reshape(n * B, N, 1),
                      out=y[t0:t1].view(n * B, D, 1))
            ends = _ends(t_last, t0, t1)
            if ends is not None and ends[0].numel():
                h_last[ends[0]] = h[ends[1], ends[0]]
            h_prev = h[n - 1].clone()
        if h_last is None:
            h_last = h_prev
        ctx.ts = ts
        ctx.save_for_backward(x, dt, A, Bm, Cm, t_last, *starts)
        return y, h_last

    @staticmethod
    def backward(ctx, dy, dh_last):
        if torch.is_grad_enabled():
            raise RuntimeError("the selective scan has first derivatives only")
        x, dt, A, Bm, Cm, t_last, *starts = ctx.saved_tensors
        T, B, D = x.shape
        N = A.shape[1]
        ts = ctx.ts
        if dy is None:
            dy = torch.zeros_like(x)
        if dh_last is None:
            dh_last = torch.zeros_like(starts[0])
        if ctx.steps:
            return (*_backward_steps(x, dt, A, Bm, Cm, t_last, starts, ts, dy, dh_last),
                    None, None, None)
        dx, ddt = torch.empty_like(x), torch.empty_like(dt)
        dB, dC = torch.empty_like(Bm), torch.empty_like(Cm)
        dAp = torch.zeros_like(A)
        # carry: dL/dh at the last step of the sub-block being processed, from later ones
        carry = dh_last if t_last is None else torch.zeros_like(dh_last)
        for i in range(len(starts) - 1, -1, -1):
            t0 = i * ts
            t1 = min(T, t0 + ts)
            n = t1 - t0
            sl = slice(t0, t1)
            dA, h, dtx = _states(x[sl], dt[sl], A, Bm[sl], starts[i])
            torch.bmm(h.view(n * B, D, N).transpose(1, 2), dy[sl].reshape(n * B, D, 1),
                      out=dC[sl].view(n * B, N, 1))
            # dL/dh_t from y_t (and from the final state at each sequence's last step)
            g = torch.mul(dy[sl].unsqueeze(-1), Cm[sl].unsqueeze(-2))
            ends = _ends(t_last, t0, t1)
            if ends is not None and ends[0].numel():
                g[ends[1], ends[0]] += dh_last.index_select(0, ends[0])
            chunked_scan(dA, g, carry, reverse=True, out=g)
            # d(dt A) = dL/dh_t h_{t-1} exp(dt A)
            ddA = torch.empty_like(g)
            torch.mul(g[1:], h[:-1], out=ddA[1:])
            torch.mul(g[0], starts[i], out=ddA[0])
            del h
            ddA.mul_(dA)
            carry = dA[0] * g[0]
            dAp.add_(torch.mul(ddA, dt[sl].unsqueeze(-1)).sum((0, 1)))
            ddt_a = ddA.mul_(A).sum(-1)                           # (n, B, D)
            # (dt x) B_t: gradients by batched matmuls over n and d
            d_dtx = torch.bmm(g.view(n * B, D, N), Bm[sl].reshape(n * B, N, 1)).view(n, B, D)
            torch.bmm(g.view(n * B, D, N).transpose(1, 2), dtx.reshape(n * B, D, 1),
                      out=dB[sl].view(n * B, N, 1))
            torch.mul(d_dtx, dt[sl], out=dx[sl])
            torch.addcmul(ddt_a, d_dtx, x[sl], out=ddt[sl])
        return dx, ddt, dAp, dB, dC, carry, None, None, None


def selective_scan(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, Bm: torch.Tensor,
                   Cm: torch.Tensor, h0: torch.Tensor, last: torch.Tensor | None = None,
                   chunk: int | None = None, method: str | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mamba's selective state-space recurrence over a block.

    Args:
        x, dt: ``(T, B, D)`` inputs and (positive) step sizes.
        A: ``(D, N)`` state matrix (diagonal per channel; negative for decay).
        Bm, Cm: ``(T, B, N)`` input and output projections of each step.
        h0: ``(B, D, N)`` state before step 0.
        last: ``None`` or ``(B,)`` flat indices into ``T * B`` of each sequence's last
            step (NOTE [scan model state]); the returned state is read there.
        chunk: steps per sub-block (default: about ``2**18`` state elements for
            ``"steps"``, ``2**21`` for ``"blocks"``).
        method: ``"steps"`` (four fused ops per step on the ``(B, D, N)`` state, which
            stays in cache; the default for states of ``STEP_BYTES`` or more), or
            ``"blocks"`` (each sub-block's ``(ts, B, D, N)`` tensors in a few vectorised
            passes; the default for small states, where per-op overhead dominates).

    Returns:
        ``y`` ``(T, B, D)`` (without the ``D x`` skip) and each sequence's last state
        ``(B, D, N)``; differentiable w.r.t. ``x``, ``dt``, ``A``, ``Bm``, ``Cm``, ``h0``.
    """
    if method not in (None, "steps", "blocks"):
        raise ValueError(f"method must be 'steps', 'blocks' or None, got {method!r}")
    t_last = None if last is None else torch.div(last, x.shape[1], rounding_mode="floor")
    steps = method == "steps" or (method is None and h0.numel() * h0.element_size()
                                  >= STEP_BYTES)
    if steps and not (torch.is_grad_enabled() and any(
            t.requires_grad for t in (x, dt, A, Bm, Cm, h0))):
        y, h_last, _ = _forward_steps(x, dt, A, Bm, Cm, h0, t_last, 1, False)
        return y, h_last
    return _SelectiveScan.apply(x, dt, A, Bm, Cm, h0, t_last, chunk, steps)
