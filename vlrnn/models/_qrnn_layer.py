"""A QRNN layer as one autograd node: (windowed) input -> gates -> ``h``.

For a whole block, :func:`qrnn_layer` computes the gates ``G = W u_t + b`` (``u_t = x_t``,
or ``[x_{t-1}, x_t]`` for window 2) and::

    z = tanh(G_z),  f = sigmoid(G_f) * m,  o = sigmoid(G_o)
    c_t = f_t z_t + (1 - f_t) c_{t-1}        (c_{-1} = c0)
    h_t = o_t c_t                            (h = c without the output gate)

where ``m`` is an optional fixed multiplier on ``f`` (the zoneout mask and/or the padding
mask of a packed block). Written with autograd's own ops this is a dozen nodes, each a
full pass over ``(T, B, H)`` tensors forwards and backwards, on column slices of one
``(T, B, 3H)`` matmul output. On a CPU these element-wise passes, not the matmuls or the
recurrence's step count, are most of a QRNN's time at hidden sizes up to a few hundred,
so this node keeps them few:

- each gate is its own contiguous ``(T, B, H)`` matmul output (element-wise ops on
  column slices of one matmul output run several times slower), all from one batched
  matmul over the shared input rows (forwards, and for the weight gradient);
- the bias is a last column of the weight, over a column of ones in the input rows: the
  matmul adds it almost for free (``addmm`` or an add per gate is a full pass each), and
  its gradient is that column of the weight gradient (no sum over ``T * B`` rows);
- the forget gate is computed as ``a = 1 - f = sigmoid(-G_f)`` (the matmul negates it),
  and the recurrence ``c_t = a_t c_{t-1} + (1 - a_t) z_t`` is one ``torch.lerp`` per step
  of the chunked scan (:func:`vlrnn.models._qrnn_scan.lerp_scan`): no ``1 - f`` or
  ``f z`` tensors; ``a (1 - a) = f (1 - f)`` serves the backward as well;
- with a graph, ``o = sigmoid(G_o)`` is kept for the backward (three light passes there;
  torch's ``glu_backward`` recomputes the sigmoid and took 3x as long); without one (the
  engine's forward pass), ``c`` is written over ``a`` and ``h = c sigmoid(G_o)`` is one
  ``glu`` pass: no ``c`` or ``o`` tensors, and no autograd node at all;
- the scans write in place: ``dL/dc`` over ``dL/dh o``, then ``dG_z`` over ``dL/dc``;
- window 2 builds ``[x_{t-1}, x_t]`` with one copy and sends its gradient back to ``x``
  and ``x_{-1}`` in one pass;
- the backward writes every gate's gradient in place into one buffer.

Where the time goes (2 layers, hidden 64, batch 16, blocks of 256 steps through the
engine, one CPU thread): about 28% in the matmuls, 31% in the element-wise passes (about
0.5 ns per element each: the activations are compute-bound, the rest mostly
memory-bound), 17% in the scans and 18% in Python (these nodes and the engine).

The scans use products of ``a`` in ``[0, 1]`` and sums only (no division, no logs), so
they are as stable as the step-by-step loop.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from ._qrnn_scan import chunked_scan, lerp_scan

__all__ = ["qrnn_layer"]

_sigmoid_backward = torch.ops.aten.sigmoid_backward
_tanh_backward = torch.ops.aten.tanh_backward


def _window_input(x: torch.Tensor, x_prev: Optional[torch.Tensor], ones: bool) -> torch.Tensor:
    """``(T * B, F_u)`` rows ``u_t``: ``x_t`` (window 1) or ``[x_{t-1}, x_t]`` (window 2,
    ``x_{-1} = x_prev``), contiguous; with ``ones``, a last column of ones (``F_u + 1``
    columns: the bias becomes a column of the weight, which costs the matmul far less
    than adding it to each ``(T, B, H)`` gate, and its gradient comes out of the weight's)."""
    T, B, n_x = x.shape
    n_u = n_x if x_prev is None else 2 * n_x
    if x_prev is None and not ones:
        return x.reshape(T * B, n_x)
    u = torch.empty(T, B, n_u + ones, dtype=x.dtype, device=x.device)
    parts0, parts = [x[0]], [x[1:]]  # rows of step 0, rows of steps 1 ..
    if x_prev is not None:
        parts0.insert(0, x_prev)
        parts.insert(0, x[:-1])
    if ones:
        parts0.append(x.new_ones(()).expand(B, 1))
        parts.append(x.new_ones(()).expand(T - 1, B, 1))
    # cat into contiguous rows: faster than copies into column slices
    torch.cat(parts0, 1, out=u[0])
    torch.cat(parts, 2, out=u[1:])
    return u.view(T * B, n_u + ones)


class _QRNNLayer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                c0: torch.Tensor, mult: Optional[torch.Tensor], output_gate: bool,
                x_prev: Optional[torch.Tensor]):
        h, c_last, saved = _forward(x, weight, bias, c0, mult, output_gate, x_prev, True)
        ctx.output_gate = output_gate
        ctx.has_bias = bias is not None
        ctx.shape = x.shape
        ctx.save_for_backward(*saved)
        return h, c_last

    @staticmethod
    def backward(ctx, dh: Optional[torch.Tensor], dc_last: Optional[torch.Tensor]):
        if torch.is_grad_enabled():  # create_graph=True: a gradient of this gradient
            raise RuntimeError(
                "QRNN's fused layer (scan='parallel') has first derivatives only; for a "
                "double backward (create_graph=True) build the QRNN with scan='loop'")
        u2, weight, gates, c, c0, mult, a = ctx.saved_tensors
        T, B, n_x = ctx.shape
        H = c0.shape[-1]
        k = gates.shape[0]
        z, a_raw = gates[0], gates[1]
        if a is None:
            a = a_raw
        if dh is None:
            dh = torch.zeros_like(c)
        # dG[g]: dL/d(gate g's matmul output), in the weight's row-block order (z, f, o)
        dG = torch.empty(k, T, B, H, dtype=c.dtype, device=c.device)
        dz, df = dG[0], dG[1]
        if ctx.output_gate:  # h = o c: dL/dc through h = dh o (in dz's slot for now) and
            o = gates[2]     # dG_o = dh c o (1 - o)
            g = torch.mul(dh, o, out=dz)
            torch.mul(dh, c, out=dG[2])
            _sigmoid_backward.grad_input(dG[2], o, grad_input=dG[2])
        else:
            g = dh
        # dc_t = g_t + a_{t+1} dc_{t+1}, dc_{T-1} = g_{T-1} + dL/dc_last; written over g
        # (in dz's slot: dz is made from dc in place below)
        dc = chunked_scan(a, g, dc_last if dc_last is not None else torch.zeros_like(c0),
                          reverse=True, out=dz)
        dc0 = a[0] * dc[0]
        # dc_t/df_t = z_t - c_{t-1};  dG_f = dc (z - c_prev) m f (1 - f), f (1 - f) = a (1 - a)
        torch.sub(z[1:], c[:-1], out=df[1:])
        torch.sub(z[0], c0, out=df[0])
        df.mul_(dc)
        if mult is not None:
            df.mul_(mult)
        _sigmoid_backward.grad_input(df, a_raw, grad_input=df)
        # dG_z = dc (1 - a) (1 - z^2), in place over dc
        torch.addcmul(dc, dc, a, value=-1, out=dz)
        _tanh_backward.grad_input(dz, z, grad_input=dz)
        # the matmuls' gradients (row blocks of weight are contiguous)
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        need_prev = ctx.needs_input_grad[6]
        dG2 = dG.view(k, T * B, H)
        dx = dw = db = dprev = None
        if need_x or need_prev:
            du = torch.mm(dG2[0], weight[:H])
            for g_ in range(1, k):
                du.addmm_(dG2[g_], weight[g_ * H:(g_ + 1) * H])
            du = du.view(T, B, -1)
            if du.shape[2] == n_x:  # window 1
                dx = du
            else:  # u_t = [x_{t-1}, x_t]: x_t reaches u_t and u_{t+1}
                dx = torch.empty(T, B, n_x, dtype=du.dtype, device=du.device)
                torch.add(du[:-1, :, n_x:], du[1:, :, :n_x], out=dx[:-1])
                dx[-1] = du[-1, :, n_x:]
                dprev = du[0, :, :n_x].clone()
        if need_w or (need_b and ctx.has_bias):
            # with a bias, u2's last column is ones: its column of the result is db. One
            # batched matmul for all gates (the rows u2 shared through a stride-0 view).
            dwb = torch.empty(k * H, u2.shape[1], dtype=c.dtype, device=c.device)
            torch.bmm(dG2.transpose(1, 2), u2.expand(k, -1, -1), out=dwb.view(k, H, -1))
            if ctx.has_bias:
                n_u = weight.shape[1]
                dw = dwb[:, :n_u].contiguous() if need_w else None
                db = dwb[:, n_u].contiguous() if need_b else None
            else:
                dw = dwb
        return dx, dw, db, dc0, None, None, dprev


def _forward(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
             c0: torch.Tensor, mult: Optional[torch.Tensor], output_gate: bool,
             x_prev: Optional[torch.Tensor], for_backward: bool):
    """``(h, c_last, saved)``: the layer's output, its last cell state (a copy) and, with
    ``for_backward``, what :meth:`_QRNNLayer.backward` needs (else ``None``, and with the
    output gate ``c`` is written over ``a``: one ``(T, B, H)`` allocation fewer)."""
    T, B, _ = x.shape
    H = c0.shape[-1]
    k = weight.shape[0] // H
    u2 = _window_input(x, x_prev, bias is not None)
    # a small (k H, F_u) copy of the weight with the f rows negated: the matmul gives -G_f
    w = torch.cat([weight, bias.unsqueeze(1)], 1) if bias is not None \
        else weight.clone(memory_format=torch.contiguous_format)
    w = w.view(k, H, -1)
    w[1].neg_()
    # gates[g]: gate g's own contiguous (T, B, H) matmul output, all from one batched
    # matmul (u2 shared through a stride-0 view): z, then a = 1 - f (before the mask), o
    gates = torch.empty(k, T, B, H, dtype=x.dtype, device=x.device)
    torch.bmm(u2.expand(k, -1, -1), w.transpose(1, 2), out=gates.view(k, T * B, H))
    z = gates[0].tanh_()
    if for_backward:  # the backward needs o: a and o (next to each other) in one pass
        gates[1:].sigmoid_()
    else:
        gates[1].sigmoid_()
    a_raw = gates[1]
    # a = 1 - f m = lerp(1, a_raw, m)
    a = a_raw if mult is None else torch.lerp(a_raw.new_ones(()), a_raw, mult)
    if for_backward:
        c = lerp_scan(a, z, c0)
        h = torch.mul(c, gates[2]) if output_gate else c
    elif output_gate:  # c written over a (the scan reads a_t before it writes c_t there),
        # next to G_o: h = c sigmoid(G_o) is one glu pass, and no (T, B, H) tensor for c
        c = lerp_scan(a, z, c0, out=gates[1])
        h = torch.empty_like(z)
        torch.ops.aten.glu.out(gates[1:], 0, out=h.unsqueeze(0))
    else:
        c = h = lerp_scan(a, z, c0)
    c_last = c[-1].clone()
    saved = (u2, weight, gates, c, c0, mult, None if mult is None else a) if for_backward \
        else None
    return h, c_last, saved


def qrnn_layer(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
               c0: torch.Tensor, mult: Optional[torch.Tensor] = None,
               output_gate: bool = True, x_prev: Optional[torch.Tensor] = None
               ) -> Tuple[torch.Tensor, torch.Tensor]:
    """A QRNN layer from its input: gate matmul, activations, recurrence.

    Args:
        x: ``(T, B, F)`` the layer's input rows (time-major).
        weight: ``(k H, F_u)``, gates ``(z, f, o)`` (``k = 3``) or ``(z, f)`` (``k = 2``,
            ``output_gate=False``) in row blocks, as ``nn.Linear(F_u, k H).weight``;
            ``F_u = F`` (window 1) or ``2 F`` (window 2: columns ``[x_{t-1}, x_t]``).
        bias: ``(k H)`` or ``None``.
        c0: ``(B, H)`` cell state before step 0.
        mult: ``None`` or a fixed multiplier of ``f`` broadcastable to ``(T, B, H)``:
            zoneout and padding masks; receives no gradient.
        output_gate: ``h = o * c`` (``True``) or ``h = c``.
        x_prev: ``None`` (window 1) or ``(B, F)``, the input row before ``x[0]`` (window
            2: the gates at step ``t`` read ``[x_{t-1}, x_t]``).

    Returns:
        ``h`` ``(T, B, H)`` and ``c`` at the last step ``(B, H)``; differentiable w.r.t.
        ``x``, ``weight``, ``bias``, ``c0`` and ``x_prev`` (first derivatives only).
    """
    n_u = x.shape[-1] * (1 if x_prev is None else 2)
    if weight.shape[-1] != n_u:
        raise ValueError(f"qrnn_layer: weight has {weight.shape[-1]} columns, expected "
                         f"{n_u} (x has {x.shape[-1]} features, window "
                         f"{1 if x_prev is None else 2})")
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                       for t in (x, weight, bias, c0, x_prev)):
        return _QRNNLayer.apply(x, weight, bias, c0, mult, output_gate, x_prev)
    h, c_last, _ = _forward(x, weight, bias, c0, mult, output_gate, x_prev, False)
    return h, c_last
