"""A QRNN layer as one autograd node: windowed input -> gates -> ``h``.

For a whole block, :func:`qrnn_layer` computes the gates ``G = W u_t + b`` and::

    z = tanh(G_z),  f = sigmoid(G_f) * m,  o = sigmoid(G_o)
    c_t = f_t z_t + (1 - f_t) c_{t-1}        (c_{-1} = c0)
    h_t = o_t c_t                            (h = c without the output gate)

where ``m`` is an optional fixed multiplier on ``f`` (the zoneout mask and/or the padding
mask of a packed block). Written with autograd's own ops this is a dozen nodes, each a
full pass over ``(T, B, H)`` tensors forwards and backwards, on column slices of one
``(T, B, 3H)`` matmul output (element-wise CPU ops on such strided slices run several
times slower than on contiguous tensors). Here each gate is its own contiguous
``(T, B, H)`` matmul output, activations are applied in place, and the backward writes
the gate gradients into one buffer, with about half the full-size passes. The recurrence is solved by a chunked scan
(:func:`chunked_scan`): a short loop over the steps of ``k``-step chunks, all chunks at
once, then a loop over chunk carries; only products of ``a = 1 - f`` in ``[0, 1]`` and
sums appear (no division, no logs), so it is as stable as the step-by-step loop.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

__all__ = ["qrnn_layer", "chunked_scan"]

_sigmoid_backward = torch.ops.aten.sigmoid_backward
_tanh_backward = torch.ops.aten.tanh_backward


def _chunk_len(T: int) -> int:
    # about sqrt(T): the inner loop and the carry loop then both have ~sqrt(T) steps
    k = 1
    while k * k < T:
        k *= 2
    return max(k, 1)


def chunked_scan(a: torch.Tensor, b: torch.Tensor, c0: torch.Tensor,
                 reverse: bool = False) -> torch.Tensor:
    """Solve a first-order linear recurrence over dim 0 (not differentiable; see
    :func:`vlrnn.models.linear_scan` for the differentiable one).

    Forwards (``reverse=False``): ``c_t = a_t c_{t-1} + b_t`` with ``c_{-1} = c0``.
    Backwards (``reverse=True``): ``c_t = a_{t+1} c_{t+1} + b_t`` with ``c_{T-1} =
    b_{T-1} + c0`` (``a_0`` unused): the adjoint recurrence, run without flipping.

    ``a``, ``b``: ``(T, *S)``; ``c0``: ``(*S)``. Returns ``c`` ``(T, *S)``, a new tensor.
    """
    T = b.shape[0]
    S = b.shape[1:]
    out = torch.empty_like(b)
    k = _chunk_len(T)
    m = T // k if k > 1 else 0
    if m < 2:  # short block: the plain loop
        _loop(a, b, c0, out, 0, T, reverse)
        return out
    r = T - m * k
    # chunks cover [0, m k) forwards; [r, T) backwards; the r leftover steps are looped
    lo = 0 if not reverse else r
    av = a.narrow(0, lo, m * k).view((m, k) + S)
    bv = b.narrow(0, lo, m * k).view((m, k) + S)
    loc = out.narrow(0, lo, m * k).view((m, k) + S)
    A = torch.empty((m, k) + S, dtype=b.dtype, device=b.device)  # products of a
    # per-step views made once (indexing in the loops costs more than the ops at small S)
    a_j, b_j, l_j, A_j = av.unbind(1), bv.unbind(1), loc.unbind(1), A.unbind(1)
    carry = torch.empty((m,) + S, dtype=b.dtype, device=b.device)
    carries = carry.unbind(0)
    if not reverse:
        # within chunk i: loc[i, j] = c at step i k + j from a zero start; A[i, j] its
        # multiplier of the carry c_{i k - 1}
        l_j[0].copy_(b_j[0])
        A_j[0].copy_(a_j[0])
        for j in range(1, k):
            torch.addcmul(b_j[j], a_j[j], l_j[j - 1], out=l_j[j])
            torch.mul(A_j[j - 1], a_j[j], out=A_j[j])
        ends, A_ends = l_j[k - 1].unbind(0), A_j[k - 1].unbind(0)
        carries[0].copy_(c0)
        for i in range(1, m):  # carry[i]: the value before chunk i's first step
            torch.addcmul(ends[i - 1], A_ends[i - 1], carries[i - 1], out=carries[i])
        loc.addcmul_(A, carry.unsqueeze(1))
        if r:
            _loop(a, b, out[m * k - 1], out, m * k, T, False)
        return out
    # backwards: within chunk i (steps lo + i k + j), loc[i, j] from a zero value after
    # the chunk; A[i, j] the multiplier of the value after the chunk (the next chunk's
    # first step; for the last chunk c0, with multiplier 1)
    l_j[k - 1].copy_(b_j[k - 1])
    A[:-1, k - 1] = av[1:, 0]
    A[-1, k - 1] = 1
    for j in range(k - 2, -1, -1):
        torch.addcmul(b_j[j], a_j[j + 1], l_j[j + 1], out=l_j[j])
        torch.mul(A_j[j + 1], a_j[j + 1], out=A_j[j])
    firsts, A_firsts = l_j[0].unbind(0), A_j[0].unbind(0)
    carries[m - 1].copy_(c0)
    for i in range(m - 2, -1, -1):  # carry[i]: the value at chunk i + 1's first step
        torch.addcmul(firsts[i + 1], A_firsts[i + 1], carries[i + 1], out=carries[i])
    loc.addcmul_(A, carry.unsqueeze(1))
    if r:
        _loop(a, b, out[r], out, 0, r, True, start_given=True)
    return out


def _loop(a, b, c, out, start: int, stop: int, reverse: bool, start_given: bool = False):
    """Plain step loop over ``[start, stop)`` writing into ``out`` (see chunked_scan)."""
    if not reverse:
        for t in range(start, stop):
            c = torch.addcmul(b[t], a[t], c, out=out[t])
        return
    if start_given:  # c is the value at step ``stop``
        for t in range(stop - 1, start - 1, -1):
            c = torch.addcmul(b[t], a[t + 1], c, out=out[t])
        return
    c = torch.add(b[stop - 1], c, out=out[stop - 1])
    for t in range(stop - 2, start - 1, -1):
        c = torch.addcmul(b[t], a[t + 1], c, out=out[t])


class _QRNNLayer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                c0: torch.Tensor, mult: Optional[torch.Tensor], output_gate: bool):
        T, B, n_in = u.shape
        H = c0.shape[-1]
        k = weight.shape[0] // H
        u2 = u.reshape(T * B, n_in)
        # one contiguous (T, B, H) tensor per gate: element-wise ops on the column slices
        # of one (T, B, k H) matmul output run many times slower on the CPU
        act = torch.empty(k, T, B, H, dtype=u.dtype, device=u.device)
        for g in range(k):
            w = weight[g * H:(g + 1) * H].t()
            if bias is None:
                torch.mm(u2, w, out=act[g].view(T * B, H))
            else:
                torch.addmm(bias[g * H:(g + 1) * H], u2, w, out=act[g].view(T * B, H))
        act[0].tanh_()
        act[1:].sigmoid_()
        z, f_raw = act[0], act[1]
        f = f_raw if mult is None else f_raw * mult
        c = chunked_scan(torch.rsub(f, 1.0), f * z, c0)
        h = act[2] * c if output_gate else c
        ctx.output_gate = output_gate
        ctx.has_bias = bias is not None
        ctx.save_for_backward(u, weight, act, c, c0, mult)
        return h, c[-1].clone()

    @staticmethod
    def backward(ctx, dh: Optional[torch.Tensor], dc_last: Optional[torch.Tensor]):
        if torch.is_grad_enabled():  # create_graph=True: a gradient of this gradient
            raise RuntimeError(
                "QRNN's fused layer (scan='parallel') has first derivatives only; for a "
                "double backward (create_graph=True) build the QRNN with scan='loop'")
        u, weight, act, c, c0, mult = ctx.saved_tensors
        T, B, n_in = u.shape
        H = c0.shape[-1]
        k = act.shape[0]
        z, f_raw = act[0], act[1]
        f = f_raw if mult is None else f_raw * mult
        dG = torch.empty_like(act)
        if dh is None:
            dh = torch.zeros_like(c)
        if ctx.output_gate:
            o = act[2]
            _sigmoid_backward.grad_input(dh * c, o, grad_input=dG[2])
            g = dh * o
        else:
            g = dh
        a = torch.rsub(f, 1.0)
        # dc_t = g_t + a_{t+1} dc_{t+1}, dc_{T-1} = g_{T-1} + dL/dc_last
        dc = chunked_scan(a, g, dc_last if dc_last is not None else torch.zeros_like(c0),
                          reverse=True)
        dc0 = a[0] * dc[0]
        # dz = dc f;  df = dc (z - c_{t-1});  dG_f = df m f_raw (1 - f_raw)
        _tanh_backward.grad_input(dc * f, z, grad_input=dG[0])
        df = torch.empty_like(dc)
        torch.sub(z[1:], c[:-1], out=df[1:])
        torch.sub(z[0], c0, out=df[0])
        df.mul_(dc)
        if mult is not None:
            df.mul_(mult)
        _sigmoid_backward.grad_input(df, f_raw, grad_input=dG[1])
        # the matmuls' gradients, gate by gate (row blocks of weight are contiguous)
        need_u, need_w, need_b = ctx.needs_input_grad[:3]
        dG2 = dG.view(k, T * B, H)
        du = dw = db = None
        if need_u:
            du = torch.mm(dG2[0], weight[:H])
            for g_ in range(1, k):
                du.addmm_(dG2[g_], weight[g_ * H:(g_ + 1) * H])
            du = du.view(T, B, n_in)
        if need_w:
            u2 = u.reshape(T * B, n_in)
            dw = torch.empty_like(weight)
            for g_ in range(k):
                torch.mm(dG2[g_].t(), u2, out=dw[g_ * H:(g_ + 1) * H])
        if need_b and ctx.has_bias:
            db = dG2.sum(1).view(k * H)
        return du, dw, db, dc0, None, None


def qrnn_layer(u: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
               c0: torch.Tensor, mult: Optional[torch.Tensor] = None,
               output_gate: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
    """A QRNN layer from its (windowed) input: gate matmul, activations, recurrence.

    Args:
        u: ``(T, B, F_u)`` the layer's input rows (``[x_{t-1}, x_t]`` for window 2).
        weight: ``(k H, F_u)``, gates ``(z, f, o)`` (``k = 3``) or ``(z, f)`` (``k = 2``,
            ``output_gate=False``) in row blocks, as ``nn.Linear(F_u, k H).weight``.
        bias: ``(k H)`` or ``None``.
        c0: ``(B, H)`` cell state before step 0.
        mult: ``None`` or a fixed multiplier of ``f`` broadcastable to ``(T, B, H)``:
            zoneout and padding masks; receives no gradient.
        output_gate: ``h = o * c`` (``True``) or ``h = c``.

    Returns:
        ``h`` ``(T, B, H)`` and ``c`` at the last step ``(B, H)``; differentiable w.r.t.
        ``u``, ``weight``, ``bias`` and ``c0`` (first derivatives only).
    """
    return _QRNNLayer.apply(u, weight, bias, c0, mult, output_gate)
