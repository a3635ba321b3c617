"""Each scan model against a plain step loop of its recurrence (float64): outputs, final
states and every gradient (parameters, inputs, initial state), packed unsorted input,
1-3 layers. The loops are written from the papers' equations with plain autograd ops,
one sequence and one step at a time, so they share no code with the models."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_sequence, pad_packed_sequence

from vlrnn.models import LRU, Mamba, MinGRU, MinLSTM
from vlrnn.models._lti_scan import lti_scan
from vlrnn.models._qrnn_scan import lerp_scan
from vlrnn.models._selective_scan import selective_scan

from helpers import assert_close_grads, flat_state, run_both

N_IN, N_HID = 3, 4
LENGTHS = [9, 3, 14, 6, 14, 1]


def ref_min_rnn(model, seqs, h0):
    """minGRU / minLSTM, step by step: ``h0`` ``(L, B, H)`` in input order."""
    H = model.hidden_size
    outs, finals = [], [[] for _ in model.layers]
    for j, xs in enumerate(seqs):
        inp = list(xs.unbind(0))
        for l, lin in enumerate(model.layers):
            h, hs = h0[l, j], []
            for x_t in inp:
                g = lin.weight @ x_t + lin.bias
                if isinstance(model, MinGRU):
                    z = torch.sigmoid(g[:H])
                    h = (1 - z) * h + z * g[H:]
                else:
                    f, i = torch.sigmoid(g[:H]), torch.sigmoid(g[H:2 * H])
                    h = f / (f + i) * h + i / (f + i) * g[2 * H:]
                hs.append(h)
            finals[l].append(h)
            up = hs
            if model.layer_norm:
                up = [model.norms[l](h_t) for h_t in up]
            if model.residual and lin.in_features == H:
                up = [u_t + x_t for u_t, x_t in zip(up, inp)]
            inp = up
        outs.append(torch.stack(inp))
    return outs, torch.stack([torch.stack(f) for f in finals])


def ref_lru(model, seqs, h0):
    """Deep LRU, step by step in complex arithmetic: ``h0`` ``(L, B, 2N)`` in input order."""
    N = model.state_size
    outs, finals = [], [[] for _ in model.layers]
    for j, xs in enumerate(seqs):
        u = [model.encoder(x_t) for x_t in xs.unbind(0)]
        for l, lay in enumerate(model.layers):
            lam = torch.exp(torch.complex(-torch.exp(lay.nu_log), torch.exp(lay.theta_log)))
            gamma = torch.exp(lay.gamma_log)
            Bc, Cc = torch.complex(lay.B_re, lay.B_im), torch.complex(lay.C_re, lay.C_im)
            x = torch.complex(h0[l, j, :N], h0[l, j, N:])
            nxt = []
            for u_t in u:
                v = lay.norm(u_t)
                x = lam * x + gamma * (Bc @ v.to(Bc.dtype))
                y = (Cc @ x).real + lay.D * v
                nxt.append(u_t + F.glu(lay.mlp(F.gelu(y)), -1))
            finals[l].append(torch.cat([x.real, x.imag]))
            u = nxt
        outs.append(torch.stack([model.norm(u_t) for u_t in u]))
    return outs, torch.stack([torch.stack(f) for f in finals])


def ref_mamba(model, seqs, state):
    """Deep Mamba, step by step: the convolution over an explicit window of the last K
    inputs, the state h (D, N) updated once per step; ``state`` ``(conv, h)``."""
    conv0, h0 = state
    K, N, R = model.conv_size, model.state_size, model.layers[0].dt_rank
    outs, f_conv, f_h = [], [[] for _ in model.layers], [[] for _ in model.layers]
    for j, xs in enumerate(seqs):
        u = [model.encoder(x_t) for x_t in xs.unbind(0)]
        for l, lay in enumerate(model.layers):
            window = list(conv0[l, j].unbind(0))  # oldest first
            h = h0[l, j]
            A = -torch.exp(lay.A_log)
            nxt = []
            for u_t in u:
                x, z = (lay.in_proj.weight @ lay.norm(u_t)).chunk(2)
                window.append(x)
                win = torch.stack(window[-K:], 1)                   # (D, K)
                x = F.silu((win * lay.conv_weight).sum(1) + lay.conv_bias)
                proj = lay.x_proj.weight @ x
                dt = F.softplus(lay.dt_proj.weight @ proj[:R] + lay.dt_proj.bias)
                b, c = proj[R:R + N], proj[R + N:]
                h = torch.exp(dt[:, None] * A) * h + (dt * x)[:, None] * b[None, :]
                y = (h @ c + lay.D * x) * F.silu(z)
                nxt.append(u_t + lay.out_proj.weight @ y)
            f_conv[l].append(torch.stack(window[len(window) - (K - 1):]))
            f_h[l].append(h)
            u = nxt
        outs.append(torch.stack([model.norm(u_t) for u_t in u]))
    return outs, (torch.stack([torch.stack(f) for f in f_conv]),
                  torch.stack([torch.stack(f) for f in f_h]))


CASES = {
    "mingru": (lambda layers: MinGRU(N_IN, N_HID, layers), ref_min_rnn),
    "minlstm": (lambda layers: MinLSTM(N_IN, N_HID, layers), ref_min_rnn),
    "mingru_norm_res": (lambda layers: MinGRU(N_IN, N_HID, layers, layer_norm=True,
                                              residual=layers > 1), ref_min_rnn),
    "lru": (lambda layers: LRU(N_IN, N_HID, layers, state_size=5, r_min=0.3), ref_lru),
    "mamba": (lambda layers: Mamba(N_IN, N_HID, layers, state_size=3, conv_size=3,
                                   dt_rank=2), ref_mamba),
}


def _unflat(model, leaves):
    return leaves[0] if len(leaves) == 1 else tuple(leaves)


@pytest.mark.parametrize("kind", sorted(CASES))
@pytest.mark.parametrize("layers", [1, 3])
def test_matches_step_loop(kind, layers):
    make, reference = CASES[kind]
    torch.manual_seed(0)
    model = make(layers).eval()
    with torch.no_grad():  # away from the initial values: gates of all sizes
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    g = torch.Generator().manual_seed(2)
    seqs = [torch.randn(n, N_IN, generator=g).requires_grad_() for n in LENGTHS]
    zeros = flat_state(model.initial_state(len(LENGTHS)))
    h0 = _unflat(model, [torch.randn(t.shape, generator=g).requires_grad_() for t in zeros])
    weights = [torch.randn(n, model.output_size, generator=g) for n in LENGTHS]
    tensors = [*model.parameters(), *seqs, *flat_state(h0)]

    def loss(ys, fin):
        total = sum((y * w).sum() for y, w in zip(ys, weights))
        total = total + sum((s ** 2).sum() for s in flat_state(fin))
        total.backward()

    def ref():
        ys, fin = reference(model, seqs, h0)
        loss(ys, fin)
        return ys, fin

    def got():
        y, fin = model(pack_sequence(seqs, enforce_sorted=False), h0)
        padded, lens = pad_packed_sequence(y, batch_first=True)
        ys = [padded[j, :n] for j, n in enumerate(lens.tolist())]
        loss(ys, fin)
        return ys, fin

    r, g_, (ys_r, fin_r), (ys_g, fin_g) = run_both(tensors, ref, got)
    for a, b in zip(ys_r, ys_g):
        torch.testing.assert_close(b, a, atol=1e-12, rtol=0)
    for a, b in zip(flat_state(fin_r), flat_state(fin_g)):
        assert a.shape == b.shape
        torch.testing.assert_close(b, a, atol=1e-12, rtol=0)
    assert_close_grads(r, g_, rtol=1e-10)


# -- the scans alone, long float32 runs against the float32 step loop ------------------------
def test_lerp_scan_float32_over_1e5_steps_as_accurate_as_the_loop():
    """minGRU/minLSTM's recurrence h_t = a h_{t-1} + (1 - a) h~ over 1e5 steps, a near 0
    and 1 included: the chunked scan's float32 error is that of the float32 step loop."""
    g = torch.Generator().manual_seed(1)
    T = 100_000
    a = torch.sigmoid(torch.randn(T, 2, 4, generator=g) * 8)
    a[:, 0, 0] = 1.0
    cand = torch.randn(T, 2, 4, generator=g)
    h0 = torch.randn(2, 4, generator=g)
    exact = lerp_scan(a, cand, h0)
    got = lerp_scan(a.float(), cand.float(), h0.float()).double()
    h, loop = h0.float(), []
    a32, c32 = a.float(), cand.float()
    for t in range(T):
        h = torch.lerp(c32[t], h, a32[t])
        loop.append(h)
    err, err_ref = (got - exact).abs().max(), (torch.stack(loop).double() - exact).abs().max()
    assert torch.isfinite(got).all()
    assert err <= 4 * err_ref + 1e-6, (err, err_ref)


def test_lti_scan_float32_over_1e5_steps_and_gradients():
    """The LRU's x_t = lam x_{t-1} + b_t, |lam| up to 0.9995, 1e5 steps in float32:
    finite and within a small factor of the float32 step loop of the same recurrence;
    gradients (float64) equal autograd through that loop."""
    g = torch.Generator().manual_seed(2)
    T = 100_000
    lam = torch.exp(torch.complex(-torch.tensor([0.5, 0.03, 5e-4]), torch.tensor([0.1, 2.0, 6.0])))
    b = torch.complex(torch.randn(T, 2, 3, generator=g), torch.randn(T, 2, 3, generator=g))
    x0 = torch.complex(torch.randn(2, 3, generator=g), torch.randn(2, 3, generator=g))
    c64 = torch.complex64
    lam32, b32, x032 = lam.to(c64), b.to(c64), x0.to(c64)
    exact = lti_scan(lam32.to(torch.complex128), b, x0)  # the float32 lam, exactly
    got = lti_scan(lam32, b32, x032).to(torch.complex128)
    x, loop = x032, []
    for t in range(T):
        x = lam32 * x + b32[t]
        loop.append(x)
    err = (got - exact).abs().max()
    err_ref = (torch.stack(loop).to(torch.complex128) - exact).abs().max()
    assert torch.isfinite(torch.view_as_real(got)).all()
    assert err <= 4 * err_ref, (err, err_ref)


def test_lti_scan_gradients_equal_the_loop():
    T = 13
    g = torch.Generator().manual_seed(4)
    lam = torch.exp(torch.complex(-torch.rand(3, generator=g), torch.randn(3, generator=g)))
    lam.requires_grad_()
    b = torch.complex(torch.randn(T, 2, 3, generator=g), torch.randn(T, 2, 3, generator=g))
    b.requires_grad_()
    x0 = torch.complex(torch.randn(2, 3, generator=g), torch.randn(2, 3, generator=g))
    x0.requires_grad_()
    w = torch.randn(T, 2, 3, 2, generator=g)

    def loop():
        x, out = x0, []
        for t in range(T):
            x = lam * x + b[t]
            out.append(x)
        return torch.stack(out)

    def loss(x):
        (torch.view_as_real(x) * w).sum().backward()
        return x.detach()

    r, g_, xr, xg = run_both([lam, b, x0], lambda: loss(loop()), lambda: loss(lti_scan(lam, b, x0)))
    torch.testing.assert_close(xg, xr, atol=1e-12, rtol=0)
    assert_close_grads(r, g_, rtol=1e-10)


@pytest.mark.parametrize("chunk", [None, 1, 3])
@pytest.mark.parametrize("ragged", [False, True])
@pytest.mark.parametrize("method", ["steps", "blocks"])
def test_selective_scan_matches_loop_across_sub_blocks(chunk, ragged, method):
    """Mamba's recurrence alone: values, final states at each sequence's own last step
    and all gradients, with sub-blocks of 1 and 3 steps (the backward's recompute)."""
    T, B, D, N = 8, 3, 4, 2
    g = torch.Generator().manual_seed(3)
    x = torch.randn(T, B, D, generator=g).requires_grad_()
    dt = (torch.rand(T, B, D, generator=g) + 0.1).requires_grad_()
    A = (-torch.rand(D, N, generator=g) - 0.2).requires_grad_()
    Bm = torch.randn(T, B, N, generator=g).requires_grad_()
    Cm = torch.randn(T, B, N, generator=g).requires_grad_()
    h0 = torch.randn(B, D, N, generator=g).requires_grad_()
    ends = [7, 2, 4] if ragged else [T - 1] * B
    last = torch.tensor([t * B + b for b, t in enumerate(ends)]) if ragged else None
    w = torch.randn(T, B, D, generator=g)
    wh = torch.randn(B, D, N, generator=g)
    tensors = [x, dt, A, Bm, Cm, h0]

    def ref():
        h, ys, fin = h0, [], [None] * B
        for t in range(T):
            h = torch.exp(dt[t, :, :, None] * A) * h + (dt[t] * x[t])[..., None] * Bm[t, :, None]
            ys.append((h * Cm[t, :, None]).sum(-1))
            for b in range(B):
                if ends[b] == t:
                    fin[b] = h[b]
        y, fin = torch.stack(ys), torch.stack(fin)
        mask = (torch.arange(T)[:, None] <= torch.tensor(ends)[None]).unsqueeze(-1)
        ((y * w * mask).sum() + (fin * wh).sum()).backward()
        return y * mask, fin

    def got():
        y, fin = selective_scan(x, dt, A, Bm, Cm, h0, last, chunk, method)
        mask = (torch.arange(T)[:, None] <= torch.tensor(ends)[None]).unsqueeze(-1)
        ((y * w * mask).sum() + (fin * wh).sum()).backward()
        return y * mask, fin

    r, g_, (yr, fr), (yg, fg) = run_both(tensors, ref, got)
    torch.testing.assert_close(yg, yr, atol=1e-12, rtol=0)
    torch.testing.assert_close(fg, fr, atol=1e-12, rtol=0)
    assert_close_grads(r, g_, rtol=1e-10)


def test_mamba_matches_step_loop_with_the_per_step_scan(monkeypatch):
    """The model's default for large states (one step at a time), forced on small ones."""
    import vlrnn.models._selective_scan as sel
    monkeypatch.setattr(sel, "STEP_BYTES", 0)
    test_matches_step_loop("mamba", 2)


def test_causal_conv_silu_equals_autograd_of_the_formula():
    """Mamba's convolution node: values bitwise those of the plain formula, gradients
    (input with its carried steps, weight, bias) equal to autograd's."""
    from vlrnn.models._causal_conv import causal_conv_silu
    T, B, D, K = 9, 2, 5, 4
    g = torch.Generator().manual_seed(5)
    xc = torch.randn(T + K - 1, B, D, generator=g).requires_grad_()
    w = torch.randn(D, K, generator=g).requires_grad_()
    bias = torch.randn(D, generator=g).requires_grad_()
    gy = torch.randn(T, B, D, generator=g)

    def ref():
        pre = sum(xc[j:j + T] * w[:, j] for j in range(K)) + bias
        y = F.silu(pre)
        (y * gy).sum().backward()
        return y.detach()

    def got():
        y = causal_conv_silu(xc, w, bias)
        (y * gy).sum().backward()
        return y.detach()

    r, g_, yr, yg = run_both([xc, w, bias], ref, got)
    torch.testing.assert_close(yg, yr, atol=1e-12, rtol=0)
    assert_close_grads(r, g_, rtol=1e-10)
    with torch.no_grad():  # the engine's forward pass: no graph, the same values
        torch.testing.assert_close(causal_conv_silu(xc, w, bias), yg, rtol=0, atol=0)
