"""A minGRU or minLSTM layer (Feng et al. 2024) over a block as one autograd node.

Both cells are the same first-order recurrence with a mixing weight ``a_t`` in ``(0, 1)``
that reads only the input::

    minGRU:   z = sigmoid(G_z),  a = 1 - z                     (gates from rows [z; h~])
    minLSTM:  f = sigmoid(G_f),  i = sigmoid(G_i),  a = f / (f + i)   (rows [f; i; h~])
    h~_t = G_h,   h_t = a_t h_{t-1} + (1 - a_t) h~_t              (h_{-1} = h0)

(minLSTM's normalised gates ``f' = f / (f + i)``, ``i' = i / (f + i)`` sum to 1, so its
cell is the same interpolation.) The gates of the whole block come from one batched
matmul (bias as a column of ones: see :mod:`vlrnn.models._qrnn_layer`, whose passes this
node follows), the recurrence is one ``torch.lerp`` per step of the chunked scan
(:func:`vlrnn.models._qrnn_scan.lerp_scan`: products of ``a`` and sums only, no logs or
division, so as stable as the step loop over any length), and the backward is written
out: the adjoint scan backwards in time, then every gate's gradient in place in one
buffer, then the two matmuls.
"""
from __future__ import annotations

import torch

from ._qrnn_layer import _window_input
from ._qrnn_scan import chunked_scan, lerp_scan
from ._scan_base import at_last

__all__ = ["min_rnn_layer"]

_sigmoid_backward = torch.ops.aten.sigmoid_backward
KINDS = {"gru": 2, "lstm": 3}  # gate row blocks of the weight


def _forward(x, weight, bias, h0, last, kind: str, for_backward: bool):
    T, B, _ = x.shape
    H = h0.shape[-1]
    k = KINDS[kind]
    u2 = _window_input(x, None, bias is not None)
    w = torch.cat([weight, bias.unsqueeze(1)], 1) if bias is not None \
        else weight.clone(memory_format=torch.contiguous_format)
    w = w.view(k, H, -1)
    if kind == "gru":
        w[0].neg_()  # the matmul gives -G_z: a = 1 - z = sigmoid(-G_z)
    gates = torch.empty(k, T, B, H, dtype=x.dtype, device=x.device)
    torch.bmm(u2.expand(k, -1, -1), w.transpose(1, 2), out=gates.view(k, T * B, H))
    cand = gates[k - 1]
    if kind == "gru":
        a = gates[0].sigmoid_()
    else:
        gates[:2].sigmoid_()
        if for_backward:  # the backward needs f and i as well as a
            a = torch.add(gates[0], gates[1])
            torch.div(gates[0], a, out=a)
        else:  # a = f / (f + i) written over f: no (T, B, H) allocation
            a = gates[0].div_(gates[1].add_(gates[0]))
    # the no-grad forward writes h over the candidate (read at step t before h_t is written)
    h = lerp_scan(a, cand, h0, out=None if for_backward else cand)
    h_last = at_last(h, last)
    if last is None:
        h_last = h_last.clone()
    saved = (u2, weight, gates, a, h, h0, last) if for_backward else None
    return h, h_last, saved


class _MinRNNLayer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, h0, last, kind):
        h, h_last, saved = _forward(x, weight, bias, h0, last, kind, True)
        ctx.kind, ctx.has_bias, ctx.shape = kind, bias is not None, x.shape
        ctx.save_for_backward(*saved)
        return h, h_last

    @staticmethod
    def backward(ctx, dh, dh_last):
        if torch.is_grad_enabled():
            raise RuntimeError("the minGRU/minLSTM layer has first derivatives only "
                               "(no create_graph=True)")
        u2, weight, gates, a, h, h0, last = ctx.saved_tensors
        T, B, _ = ctx.shape
        H = h0.shape[-1]
        k = KINDS[ctx.kind]
        cand = gates[k - 1]
        if dh is None:
            dh = torch.zeros_like(h)
        if dh_last is None:
            dh_last = torch.zeros_like(h0)
        dG = torch.empty(k, T, B, H, dtype=h.dtype, device=h.device)
        # dL/dh_t = dh_t + a_{t+1} dL/dh_{t+1} (+ dh_last at each sequence's last step)
        if last is None:
            dc = chunked_scan(a, dh, dh_last, reverse=True, out=dG[k - 1])
        else:
            g = dG[k - 1]
            g.copy_(dh).view(T * B, H).index_add_(0, last, dh_last)
            dc = chunked_scan(a, g, torch.zeros_like(h0), reverse=True, out=g)
        dh0 = a[0] * dc[0]
        # q = dL/dh (h~ - h_prev) a (1 - a): dL/dG_z for minGRU (a = sigmoid(-G_z))
        q = dG[0] if ctx.kind == "gru" else dG[1]
        torch.sub(cand[1:], h[:-1], out=q[1:])
        torch.sub(cand[0], h0, out=q[0])
        q.mul_(dc)
        _sigmoid_backward.grad_input(q, a, grad_input=q)
        if ctx.kind == "lstm":  # da/dG_f = a (1 - a)(1 - f), da/dG_i = -a (1 - a)(1 - i)
            torch.addcmul(q, q, gates[0], value=-1, out=dG[0])  # -dL/dG_f
            torch.addcmul(q, q, gates[1], value=-1, out=dG[1])  # dL/dG_i
        torch.addcmul(dc, dc, a, value=-1, out=dG[k - 1])      # dL/dG_h = dL/dh (1 - a)
        sign = [-1.0 if ctx.kind == "lstm" and g_ == 0 else 1.0 for g_ in range(k)]
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        dG2 = dG.view(k, T * B, H)
        dx = dw = db = None
        if need_x:
            du = torch.mm(dG2[0], weight[:H])
            if sign[0] < 0:
                du.neg_()
            for g_ in range(1, k):
                du.addmm_(dG2[g_], weight[g_ * H:(g_ + 1) * H], alpha=sign[g_])
            dx = du.view(T, B, -1)
        if need_w or (need_b and ctx.has_bias):
            dwb = torch.empty(k * H, u2.shape[1], dtype=h.dtype, device=h.device)
            torch.bmm(dG2.transpose(1, 2), u2.expand(k, -1, -1), out=dwb.view(k, H, -1))
            if sign[0] < 0:
                dwb[:H].neg_()
            if ctx.has_bias:
                n_u = weight.shape[1]
                dw = dwb[:, :n_u].contiguous() if need_w else None
                db = dwb[:, n_u].contiguous() if need_b else None
            else:
                dw = dwb
        return dx, dw, db, dh0, None, None


def min_rnn_layer(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                  h0: torch.Tensor, last: torch.Tensor | None = None, kind: str = "gru"
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """A minGRU (``kind="gru"``) or minLSTM (``kind="lstm"``) layer over a block.

    Args:
        x: ``(T, B, F)`` the layer's input (time-major, padded).
        weight: ``(k H, F)``: row blocks ``[z; h~]`` (``k = 2``) or ``[f; i; h~]``
            (``k = 3``), as ``nn.Linear(F, k H).weight``. bias: ``(k H)`` or ``None``.
        h0: ``(B, H)`` state before step 0.
        last: ``None`` (every sequence ends at ``T - 1``) or ``(B,)`` flat indices into
            ``T * B`` of each sequence's last step (NOTE [scan model state]).

    Returns:
        ``h`` ``(T, B, H)`` and each sequence's last ``h`` ``(B, H)``; differentiable
        w.r.t. ``x``, ``weight``, ``bias`` and ``h0`` (first derivatives).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
    if weight.shape[0] != KINDS[kind] * h0.shape[-1] or weight.shape[1] != x.shape[-1]:
        raise ValueError(f"min_rnn_layer: weight of shape {tuple(weight.shape)} does not fit "
                         f"{KINDS[kind]} gates of {h0.shape[-1]} and {x.shape[-1]} inputs")
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                       for t in (x, weight, bias, h0)):
        return _MinRNNLayer.apply(x, weight, bias, h0, last, kind)
    h, h_last, _ = _forward(x, weight, bias, h0, last, kind, False)
    return h, h_last
