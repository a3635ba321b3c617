"""Mamba's short causal depthwise convolution followed by SiLU, as one autograd node.

For ``xc`` ``(T + K - 1, B, D)`` (the ``K - 1`` carried inputs, then the block's ``T``),
weight ``(D, K)`` and bias ``(D,)``::

    pre_t = bias + sum_j weight[:, j] * xc_{t + j},     x_t = silu(pre_t)     (t < T)

Forwards: ``K`` fused multiply-adds written in place into one ``(T, B, D)`` buffer.
Backwards, written out: ``dL/dxc`` is ``K`` multiply-adds into one zero-filled buffer
and each weight column's gradient a product and a sum in one scratch buffer (autograd
through the shifted slices built a zero-filled ``(T + K - 1, B, D)`` gradient per slice
and summed them, and allocated every product).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["causal_conv_silu"]

_silu_backward = torch.ops.aten.silu_backward


def _pre_activation(xc: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor
                    ) -> torch.Tensor:
    K = weight.shape[1]
    T = xc.shape[0] - K + 1
    pre = torch.addcmul(bias, xc[:T], weight[:, 0])
    for j in range(1, K):
        pre.addcmul_(xc[j:j + T], weight[:, j])
    return pre


class _CausalConvSiLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xc, weight, bias):
        pre = _pre_activation(xc, weight, bias)
        ctx.save_for_backward(xc, weight, pre)
        return F.silu(pre)

    @staticmethod
    def backward(ctx, g):
        if torch.is_grad_enabled():
            raise RuntimeError("causal_conv_silu has first derivatives only")
        xc, weight, pre = ctx.saved_tensors
        K = weight.shape[1]
        T = pre.shape[0]
        gp = _silu_backward(g, pre)                       # dL/dpre
        need_x, need_w, need_b = ctx.needs_input_grad
        dxc = dw = db = None
        if need_x:
            dxc = torch.zeros_like(xc, memory_format=torch.contiguous_format)
            for j in range(K):
                dxc[j:j + T].addcmul_(gp, weight[:, j])
        if need_w:
            dw_t = weight.new_empty((K, weight.shape[0]))
            tmp = torch.empty_like(gp)
            for j in range(K):
                torch.sum(torch.mul(gp, xc[j:j + T], out=tmp), (0, 1), out=dw_t[j])
            dw = dw_t.t().contiguous()
        if need_b:
            db = gp.sum((0, 1))
        return dxc, dw, db


def causal_conv_silu(xc: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor
                     ) -> torch.Tensor:
    """``silu`` of the causal depthwise convolution of ``xc`` (see the module doc).

    Args:
        xc: ``(T + K - 1, B, D)``: the ``K - 1`` inputs before the block, then its ``T``.
        weight: ``(D, K)``, column ``j`` multiplying ``xc_{t + j}`` (oldest first).
        bias: ``(D,)``.

    Returns:
        ``(T, B, D)``; differentiable w.r.t. all three (first derivatives).
    """
    if torch.is_grad_enabled() and any(t.requires_grad for t in (xc, weight, bias)):
        return _CausalConvSiLU.apply(xc, weight, bias)
    return F.silu(_pre_activation(xc, weight, bias))
