"""QRNN's one-node layer (vlrnn.models._qrnn_layer) and its scans (vlrnn.models._qrnn_scan):
the chunked scans against step loops (values, every length, both directions, stability)
and the hand-written backward against autograd through the reference ops, in float64,
window 1 and 2, with and without masks."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vlrnn.models import linear_scan
from vlrnn.models._qrnn_layer import qrnn_layer
from vlrnn.models._qrnn_scan import chunk_len, chunked_scan, lerp_scan

from helpers import assert_close_grads

LENGTHS = list(range(1, 41)) + [63, 64, 65, 100, 255, 256, 257]


def reverse_loop(a, b, c0):
    """d_{T-1} = b_{T-1} + c0, d_t = a_{t+1} d_{t+1} + b_t."""
    d = torch.empty_like(b)
    v = b[-1] + c0
    d[-1] = v
    for t in range(b.shape[0] - 2, -1, -1):
        v = a[t + 1] * v + b[t]
        d[t] = v
    return d


def lerp_loop(a, z, c0):
    """c_t = a_t c_{t-1} + (1 - a_t) z_t, written as the QRNN paper's f z + (1 - f) c."""
    c, out = c0, []
    for t in range(z.shape[0]):
        f = 1 - a[t]
        c = f * z[t] + (1 - f) * c
        out.append(c)
    return torch.stack(out)


def test_chunks_are_used():
    # the lengths below run the chunked path, leftover steps included, not only the loop
    for T in (4, 40, 257):
        k = chunk_len(T)
        assert 1 < k and T // k >= 2, (T, k)
    assert any(T % chunk_len(T) for T in LENGTHS)


def test_chunk_len_grows_for_large_steps():
    assert chunk_len(256) == 16 and chunk_len(64) == 8
    # 8 chunks of 20 KB rows would not stay in cache: 4 chunks of 16 steps
    assert chunk_len(64, 20 * 1024) == 16
    assert chunk_len(16, 20 * 1024) == 4  # never fewer than 4 chunks
    assert chunk_len(256, 32 * 1024) == 256  # large steps: one chunk, the plain loop


@pytest.mark.parametrize("T, S", [(T, (3, 4)) for T in LENGTHS]
                         + [(64, (5, 512)), (70, (5, 512)), (40, (8, 1024))])
def test_chunked_scans_match_loops(T, S):
    g = torch.Generator().manual_seed(T)
    a = torch.rand(T, *S, generator=g)
    b = torch.randn(T, *S, generator=g)
    c0 = torch.randn(*S, generator=g)
    torch.testing.assert_close(chunked_scan(a, b, c0), linear_scan(a, b, c0, method="loop"),
                               rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(chunked_scan(a, b, c0, reverse=True), reverse_loop(a, b, c0),
                               rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(lerp_scan(a, b, c0), lerp_loop(a, b, c0),
                               rtol=1e-12, atol=1e-12)


def test_scan_writes_into_out():
    g = torch.Generator().manual_seed(0)
    a, z, c0 = torch.rand(50, 6, generator=g), torch.randn(50, 6, generator=g), torch.randn(6)
    buf = torch.empty(2, 50, 6)
    got = lerp_scan(a, z, c0, out=buf[1])
    assert got.data_ptr() == buf[1].data_ptr()
    torch.testing.assert_close(buf[1], lerp_loop(a, z, c0), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("T", LENGTHS + [64, 70])
def test_scans_in_place_over_their_input(T):
    """``out`` may be an input it is computed from (the QRNN writes ``c`` over ``a`` and
    ``dc`` over ``dL/dc``): same result as into a fresh tensor, chunked and looped steps."""
    g = torch.Generator().manual_seed(T)
    a, b, c0 = torch.rand(T, 3, 4, generator=g), torch.randn(T, 3, 4, generator=g), \
        torch.randn(3, 4, generator=g)
    a_in = a.clone()  # the no-grad QRNN writes c over a
    got = lerp_scan(a_in, b, c0, out=a_in)
    torch.testing.assert_close(got, lerp_loop(a, b, c0), rtol=1e-12, atol=1e-12)
    for scan, ref in ((lambda b_, **kw: lerp_scan(a, b_, c0, **kw), lerp_loop(a, b, c0)),
                      (lambda b_, **kw: chunked_scan(a, b_, c0, **kw),
                       linear_scan(a, b, c0, method="loop")),
                      (lambda b_, **kw: chunked_scan(a, b_, c0, reverse=True, **kw),
                       reverse_loop(a, b, c0))):
        inp = b.clone()
        got = scan(inp, out=inp)
        assert got.data_ptr() == inp.data_ptr()
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)


def test_chunked_scans_stable_on_long_saturated_blocks():
    # forget gates saturated at 0 and 1 over a long float32 block: products of a underflow
    # to 0 (their true value) and nothing divides by them, so no inf/nan appears
    T, n = 4096, 64
    g = torch.Generator().manual_seed(0)
    a = torch.where(torch.rand(T, n, generator=g) < 0.5, torch.tensor(1.0), torch.tensor(1e-30))
    a = a.float()
    a[:, :8] = 0.999  # slow decay: long products
    b = torch.randn(T, n, generator=g).float()
    c0 = torch.randn(n).float()
    for name in ("forward", "reverse", "lerp"):
        if name == "lerp":
            got, ref = lerp_scan(a, b, c0), lerp_loop(a.double(), b.double(), c0.double())
        elif name == "reverse":
            got = chunked_scan(a, b, c0, reverse=True)
            ref = reverse_loop(a.double(), b.double(), c0.double())
        else:
            got = chunked_scan(a, b, c0)
            ref = linear_scan(a.double(), b.double(), c0.double(), method="loop")
        assert torch.isfinite(got).all(), name
        torch.testing.assert_close(got.double(), ref, rtol=1e-4, atol=1e-3, msg=name)


def reference(x, weight, bias, c0, mult, output_gate, x_prev=None):
    """Autograd through plain ops: the window's concatenation, one linear, a step loop."""
    H = c0.shape[-1]
    u = x if x_prev is None else torch.cat([torch.cat([x_prev[None], x[:-1]]), x], 2)
    gates = F.linear(u, weight, bias)
    z, f = torch.tanh(gates[..., :H]), torch.sigmoid(gates[..., H:2 * H])
    if mult is not None:
        f = f * mult
    c = linear_scan(1 - f, f * z, c0, method="loop")
    h = torch.sigmoid(gates[..., 2 * H:]) * c if output_gate else c
    return h, c[-1]


MULTS = {
    "none": lambda T, g: None,
    "zoneout": lambda T, g: (torch.rand(T, 3, 4, generator=g) > 0.3).double(),
    "scalar": lambda T, g: torch.tensor(0.7),
    # a packed block's padding mask: sequences end mid-block, c frozen after their end
    "padding": lambda T, g: (torch.arange(T)[:, None] < torch.tensor([T, max(T // 2, 1), 1])
                             ).double()[:, :, None],
}


@pytest.mark.parametrize("T", [1, 5, 40, 257])
@pytest.mark.parametrize("window", [1, 2])
@pytest.mark.parametrize("output_gate", [True, False])
@pytest.mark.parametrize("mult", list(MULTS))
@pytest.mark.parametrize("bias", [True, False])
def test_qrnn_layer_matches_autograd(T, window, output_gate, mult, bias):
    g = torch.Generator().manual_seed(T * 10 + window)
    k, H, n_x = (3 if output_gate else 2), 4, 5
    x = torch.randn(T, 3, n_x, generator=g, requires_grad=True)
    x_prev = torch.randn(3, n_x, generator=g, requires_grad=True) if window == 2 else None
    weight = torch.randn(k * H, window * n_x, generator=g, requires_grad=True)
    b = torch.randn(k * H, generator=g, requires_grad=True) if bias else None
    c0 = torch.randn(3, H, generator=g, requires_grad=True)
    m = MULTS[mult](T, g)
    w_h, w_c = torch.randn(T, 3, H, generator=g), torch.randn(3, H, generator=g)
    inputs = [t for t in (x, weight, b, c0, x_prev) if t is not None]
    res = []
    for fn in (reference, qrnn_layer):
        h, c_last = fn(x, weight, b, c0, m, output_gate, x_prev)
        loss = (h * w_h).sum() + (c_last * w_c).sum()
        res.append(([h.detach(), c_last.detach()], list(torch.autograd.grad(loss, inputs))))
    assert_close_grads(res[0][0], res[1][0], rtol=1e-12)
    assert_close_grads(res[0][1], res[1][1], rtol=1e-10)


@pytest.mark.parametrize("window", [1, 2])
def test_qrnn_layer_time_reversed_input(window):
    """A non-contiguous input (a time-reversed view, as a reverse direction might pass):
    the same values and gradients as the contiguous copy."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(30, 2, 3, generator=g, requires_grad=True)
    x_prev = torch.randn(2, 3, generator=g) if window == 2 else None
    weight = torch.randn(12, 3 * window, generator=g, requires_grad=True)
    c0 = torch.zeros(2, 4)
    w_h = torch.randn(30, 2, 4, generator=g)
    outs = []
    for inp in (x.flip(0), x.flip(0).contiguous()):
        h, _ = qrnn_layer(inp, weight, None, c0, None, True, x_prev)
        outs.append([h.detach()] + list(torch.autograd.grad((h * w_h).sum(), (x, weight))))
    assert_close_grads(outs[0], outs[1], rtol=1e-14)


@pytest.mark.parametrize("window", [1, 2])
@pytest.mark.parametrize("output_gate", [True, False])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("mult", [False, True])
@pytest.mark.parametrize("T", [20, 70])
def test_qrnn_layer_no_grad_forward_equals_graph_forward(window, output_gate, bias, mult, T):
    """Without a graph the layer takes its own path (c written over a, one glu pass, no
    autograd node): bit for bit the graph path's values, and its inputs are untouched."""
    g = torch.Generator().manual_seed(4)
    k = 3 if output_gate else 2
    x = torch.randn(T, 2, 3, generator=g, requires_grad=True)
    # a transposed (non-contiguous) weight, as a user's own parameter layout might give
    weight = torch.randn(window * 3, k * 4, generator=g).t().requires_grad_()
    b = torch.randn(k * 4, generator=g, requires_grad=True) if bias else None
    x_prev = torch.randn(2, 3, generator=g) if window == 2 else None
    c0 = torch.randn(2, 4, generator=g)
    m = (torch.rand(T, 2, 4, generator=g) > 0.3).double() if mult else None
    before = [t.clone() for t in (x, weight, c0)]
    with torch.no_grad():
        h0, c_0 = qrnn_layer(x, weight, b, c0, m, output_gate, x_prev)
    h1, c_1 = qrnn_layer(x, weight, b, c0, m, output_gate, x_prev)
    assert h1.requires_grad and not h0.requires_grad
    assert torch.equal(h0, h1.detach()) and torch.equal(c_0, c_1.detach())
    assert all(torch.equal(t0, t.detach()) for t0, t in zip(before, (x, weight, c0)))


def test_qrnn_layer_errors():
    with pytest.raises(ValueError, match="weight has 6 columns, expected 8"):
        qrnn_layer(torch.randn(3, 2, 4), torch.randn(6, 6), None, torch.zeros(2, 2),
                   x_prev=torch.zeros(2, 4))


def test_qrnn_layer_only_first_derivatives():
    u = torch.randn(3, 2, 4, requires_grad=True)
    weight = torch.randn(6, 4, requires_grad=True)
    h, _ = qrnn_layer(u, weight, None, torch.zeros(2, 2))
    with pytest.raises(RuntimeError, match="first derivatives only.*scan='loop'"):
        torch.autograd.grad(h.sum(), u, create_graph=True)
