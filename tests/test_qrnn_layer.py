"""QRNN's one-node layer (vlrnn.models.qrnn_layer): the chunked scan against the step loop
(values, every length, both directions, stability) and the hand-written backward against
autograd through the reference ops, in float64."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from helpers import assert_close_grads
from vlrnn.models import linear_scan
from vlrnn.models.qrnn_layer import chunked_scan, qrnn_layer


def reverse_loop(a, b, c0):
    """d_{T-1} = b_{T-1} + c0, d_t = a_{t+1} d_{t+1} + b_t."""
    d = torch.empty_like(b)
    v = b[-1] + c0
    d[-1] = v
    for t in range(b.shape[0] - 2, -1, -1):
        v = a[t + 1] * v + b[t]
        d[t] = v
    return d


@pytest.mark.parametrize("T", list(range(1, 20)) + [31, 32, 33, 64, 100, 257])
def test_chunked_scan_matches_loop(T):
    g = torch.Generator().manual_seed(T)
    a = torch.rand(T, 3, 4, generator=g)
    b = torch.randn(T, 3, 4, generator=g)
    c0 = torch.randn(3, 4, generator=g)
    torch.testing.assert_close(chunked_scan(a, b, c0), linear_scan(a, b, c0, method="loop"),
                               rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(chunked_scan(a, b, c0, reverse=True), reverse_loop(a, b, c0),
                               rtol=1e-12, atol=1e-12)


def test_chunked_scan_stable_on_long_saturated_blocks():
    # forget gates saturated at 0 and 1 over a long float32 block: products of a underflow
    # to 0 (their true value) and nothing divides by them, so no inf/nan appears
    T, n = 4096, 64
    g = torch.Generator().manual_seed(0)
    a = torch.where(torch.rand(T, n, generator=g) < 0.5, torch.tensor(1.0), torch.tensor(1e-30))
    a = a.float()
    a[:, :8] = 0.999  # slow decay: long products
    b = torch.randn(T, n, generator=g).float()
    c0 = torch.randn(n).float()
    for reverse in (False, True):
        got = chunked_scan(a, b, c0, reverse=reverse)
        ref = (reverse_loop(a.double(), b.double(), c0.double()) if reverse
               else linear_scan(a.double(), b.double(), c0.double(), method="loop"))
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got.double(), ref, rtol=1e-4, atol=1e-3)


def reference(u, weight, bias, c0, mult, output_gate):
    H = c0.shape[-1]
    gates = F.linear(u, weight, bias)
    z, f = torch.tanh(gates[..., :H]), torch.sigmoid(gates[..., H:2 * H])
    if mult is not None:
        f = f * mult
    c = linear_scan(1 - f, f * z, c0, method="loop")
    h = torch.sigmoid(gates[..., 2 * H:]) * c if output_gate else c
    return h, c[-1]


@pytest.mark.parametrize("T", [1, 5, 40])
@pytest.mark.parametrize("output_gate", [True, False])
@pytest.mark.parametrize("with_mult", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_qrnn_layer_matches_autograd(T, output_gate, with_mult, bias):
    g = torch.Generator().manual_seed(1)
    k, H = (3 if output_gate else 2), 4
    u = torch.randn(T, 3, 5, generator=g, requires_grad=True)
    weight = torch.randn(k * H, 5, generator=g, requires_grad=True)
    b = torch.randn(k * H, generator=g, requires_grad=True) if bias else None
    c0 = torch.randn(3, H, generator=g, requires_grad=True)
    mult = (torch.rand(T, 3, H, generator=g) > 0.3).double() if with_mult else None
    w_h, w_c = torch.randn(T, 3, H, generator=g), torch.randn(3, H, generator=g)
    inputs = [t for t in (u, weight, b, c0) if t is not None]
    res = []
    for fn in (reference, qrnn_layer):
        h, c_last = fn(u, weight, b, c0, mult, output_gate)
        loss = (h * w_h).sum() + (c_last * w_c).sum()
        res.append(([h.detach(), c_last.detach()], list(torch.autograd.grad(loss, inputs))))
    assert_close_grads(res[0][0], res[1][0], rtol=1e-12)
    assert_close_grads(res[0][1], res[1][1], rtol=1e-10)


def test_qrnn_layer_only_first_derivatives():
    u = torch.randn(3, 2, 4, requires_grad=True)
    weight = torch.randn(6, 4, requires_grad=True)
    h, _ = qrnn_layer(u, weight, None, torch.zeros(2, 2))
    with pytest.raises(RuntimeError, match="first derivatives only.*scan='loop'"):
        torch.autograd.grad(h.sum(), u, create_graph=True)
