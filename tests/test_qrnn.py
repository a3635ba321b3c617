"""QRNN and its parallel scan against plain step loops, and under the block engine (float64)."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_sequence, pad_packed_sequence

import vlrnn
from vlrnn.models import QRNN, WithHead, linear_scan

from helpers import assert_close_grads, flat_state, ragged_batch, run_both, seeded_total

N_IN, N_HID = 3, 4
LENGTHS = [9, 3, 14, 6, 14, 1]  # unsorted, a tie, a length-1 sequence


# -- the scan ---------------------------------------------------------------------------------
def loop_scan(a, b, c0):
    c, out = c0, []
    for t in range(a.shape[0]):
        c = a[t] * c + b[t]
        out.append(c)
    return torch.stack(out)


@pytest.mark.parametrize("T", [1, 2, 3, 5, 8, 13, 64, 100])
def test_scan_matches_loop_values_and_grads(T):
    g = torch.Generator().manual_seed(T)
    a = torch.rand(T, 3, 5, generator=g).requires_grad_()
    b = torch.randn(T, 3, 5, generator=g).requires_grad_()
    c0 = torch.randn(3, 5, generator=g).requires_grad_()
    w = torch.randn(T, 3, 5, generator=g)
    got = linear_scan(a, b, c0)
    want = loop_scan(a, b, c0)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=0)
    ga = torch.autograd.grad((got * w).sum(), (a, b, c0))
    gw = torch.autograd.grad((want * w).sum(), (a, b, c0))
    for x, y in zip(ga, gw):
        torch.testing.assert_close(x, y, atol=1e-12, rtol=0)


def test_scan_every_short_length():
    """Every T up to 40: each parity pattern of the odd-even recursion, both directions."""
    g = torch.Generator().manual_seed(7)
    for T in range(1, 41):
        a = torch.rand(T, 2, generator=g).requires_grad_()
        b = torch.randn(T, 2, generator=g).requires_grad_()
        c0 = torch.randn(2, generator=g).requires_grad_()
        w = torch.randn(T, 2, generator=g)
        got, want = linear_scan(a, b, c0), loop_scan(a, b, c0)
        torch.testing.assert_close(got, want, atol=1e-12, rtol=0, msg=f"T={T}")
        for x, y in zip(torch.autograd.grad((got * w).sum(), (a, b, c0)),
                        torch.autograd.grad((want * w).sum(), (a, b, c0))):
            torch.testing.assert_close(x, y, atol=1e-12, rtol=0, msg=f"T={T}")


def test_scan_gradcheck_and_double_backward():
    g = torch.Generator().manual_seed(0)
    args = (torch.rand(7, 2, generator=g).requires_grad_(),
            torch.randn(7, 2, generator=g).requires_grad_(),
            torch.randn(2, generator=g).requires_grad_())
    assert torch.autograd.gradcheck(linear_scan, args)
    assert torch.autograd.gradgradcheck(linear_scan, args)


def test_scan_stable_on_long_saturated_blocks():
    """float32, 3000 steps, gates near 0 and 1 (a long product of a's underflows): the
    parallel scan stays as accurate as the float32 step loop."""
    g = torch.Generator().manual_seed(1)
    T = 3000
    logits = torch.randn(T, 4, 8, generator=g, dtype=torch.float64) * 12
    a = torch.sigmoid(logits)
    a[:, 0] = 1.0   # no decay at all: a running sum
    a[:, 1] = 0.0   # no memory at all
    b = torch.randn(T, 4, 8, generator=g, dtype=torch.float64) * (1 - a)
    c0 = torch.randn(4, 8, generator=g, dtype=torch.float64)
    exact = loop_scan(a, b, c0)
    got = linear_scan(a.float(), b.float(), c0.float()).double()
    ref32 = loop_scan(a.float(), b.float(), c0.float()).double()
    assert torch.isfinite(got).all()
    err, err_ref = (got - exact).abs().max(), (ref32 - exact).abs().max()
    assert err <= 4 * err_ref + 1e-5, (err, err_ref)


def test_scan_errors():
    with pytest.raises(ValueError, match="same shape"):
        linear_scan(torch.rand(3, 2), torch.rand(3, 3))
    with pytest.raises(ValueError, match=r"c0 must have shape \(2,\)"):
        linear_scan(torch.rand(3, 2), torch.rand(3, 2), torch.rand(3))
    with pytest.raises(ValueError, match="unknown method"):
        linear_scan(torch.rand(3, 2), torch.rand(3, 2), method="fast")


# -- QRNN against a per-sequence step loop ------------------------------------------------------
def reference_qrnn(model: QRNN, seqs, state, zoneout_scale=1.0):
    """Plain Python loops over sequences, layers and steps, with the model's weights.

    ``seqs``: list of ``(L_j, F)`` in input order; ``state`` per layer ``(c, [x_prev])``
    with the batch on dim 0 (input order) or ``None``. Returns (outputs per sequence,
    per-layer final states stacked in input order)."""
    H, outs = model.hidden_size, []
    finals = [[[] for _ in range(model.window)] for _ in model.layers]
    for j, xs in enumerate(seqs):
        inp = list(xs.unbind(0))
        for l, lin in enumerate(model.layers):
            n_in = lin.in_features // model.window
            c = state[l][0][j] if state is not None else xs.new_zeros(H)
            prev = (state[l][1][j] if state is not None else xs.new_zeros(n_in)) \
                if model.window == 2 else None
            hs = []
            for x_t in inp:
                u = torch.cat([prev, x_t]) if model.window == 2 else x_t
                gate = lin.weight @ u + lin.bias
                z = torch.tanh(gate[:H])
                f = torch.sigmoid(gate[H:2 * H]) * zoneout_scale
                c = f * z + (1 - f) * c
                hs.append(torch.sigmoid(gate[2 * H:]) * c if model.output_gate else c)
                prev = x_t
            finals[l][0].append(c)
            if model.window == 2:
                finals[l][1].append(prev)
            inp = hs
        outs.append(torch.stack(inp))
    return outs, tuple(tuple(torch.stack(p) for p in layer) for layer in finals)


def random_state(model: QRNN, batch: int, seed: int = 5):
    g = torch.Generator().manual_seed(seed)
    out = []
    for lin in model.layers:
        s = [torch.randn(batch, model.hidden_size, generator=g)]
        if model.window == 2:
            s.append(torch.randn(batch, lin.in_features // 2, generator=g))
        out.append(tuple(t.requires_grad_() for t in s))
    return tuple(out)


@pytest.mark.parametrize("window", [1, 2])
@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("output_gate", [True, False])
@pytest.mark.parametrize("with_state", [False, True])
def test_packed_matches_step_loop(window, layers, output_gate, with_state):
    torch.manual_seed(0)
    model = QRNN(N_IN, N_HID, layers, window=window, output_gate=output_gate)
    g = torch.Generator().manual_seed(2)
    seqs = [torch.randn(n, N_IN, generator=g).requires_grad_() for n in LENGTHS]
    h0 = random_state(model, len(LENGTHS)) if with_state else None
    weights = [torch.randn(n, N_HID, generator=g) for n in LENGTHS]
    tensors = list(model.parameters()) + seqs + (flat_state(h0) if with_state else [])

    def ref():
        ys, fin = reference_qrnn(model, seqs, h0)
        loss = sum((y * w).sum() for y, w in zip(ys, weights))
        loss = loss + sum((s ** 2).sum() for s in flat_state(fin))
        loss.backward()
        return ys, fin

    def got():
        y, fin = model(pack_sequence(seqs, enforce_sorted=False), h0)
        padded, lens = pad_packed_sequence(y, batch_first=True)
        ys = [padded[j, :n] for j, n in enumerate(lens.tolist())]
        loss = sum((y * w).sum() for y, w in zip(ys, weights))
        loss = loss + sum((s ** 2).sum() for s in flat_state(fin))
        loss.backward()
        return ys, fin

    g_ref, g_got, (ys_r, fin_r), (ys_g, fin_g) = run_both(tensors, ref, got)
    for a, b in zip(ys_r, ys_g):
        torch.testing.assert_close(b, a, atol=1e-12, rtol=0)
    assert len(fin_g) == layers and all(len(s) == window for s in fin_g)
    for a, b in zip(flat_state(fin_r), flat_state(fin_g)):
        torch.testing.assert_close(b, a, atol=1e-12, rtol=0)
    assert_close_grads(g_ref, g_got, rtol=1e-10)


@pytest.mark.parametrize("batch_first", [False, True])
def test_dense_eval_zoneout_matches_step_loop(batch_first):
    """Dense input, evaluation mode: zoneout scales f by (1 - zoneout)."""
    torch.manual_seed(0)
    model = QRNN(N_IN, N_HID, 2, window=2, zoneout=0.3, dropout=0.5,
                 batch_first=batch_first).eval()
    x = torch.randn(4, 11, N_IN) if batch_first else torch.randn(11, 4, N_IN)
    y, fin = model(x)
    seqs = list(x.unbind(0 if batch_first else 1))
    ys, fin_r = reference_qrnn(model, seqs, None, zoneout_scale=0.7)
    want = torch.stack(ys, 0 if batch_first else 1)
    torch.testing.assert_close(y, want, atol=1e-12, rtol=0)
    for a, b in zip(flat_state(fin_r), flat_state(fin)):
        torch.testing.assert_close(b, a, atol=1e-12, rtol=0)
    _, fin_plain = reference_qrnn(model, seqs, None)  # the scaling did change something
    assert not torch.allclose(fin_plain[0][0], fin[0][0])


def test_zoneout_training_keeps_or_updates_each_element():
    """Training zoneout: every element either keeps its previous c exactly (f zeroed) or
    takes the ordinary update; about `zoneout` of them keep it."""
    torch.manual_seed(0)
    model = QRNN(N_IN, N_HID, 1, zoneout=0.4, output_gate=False).train()  # h = c
    x = torch.randn(200, 8, N_IN)
    torch.manual_seed(1)
    c, _ = model(x)
    with torch.no_grad():
        gate = model.layers[0](x)
        z, f = torch.tanh(gate[..., :N_HID]), torch.sigmoid(gate[..., N_HID:])
        prev = torch.cat([torch.zeros(1, 8, N_HID), c[:-1]])
        kept = (c - prev).abs() < 1e-14
        updated = (c - (f * z + (1 - f) * prev)).abs() < 1e-12
    assert (kept | updated).all()
    frac = kept.double().mean().item()
    assert 0.35 < frac < 0.45, frac
    torch.manual_seed(1)
    assert torch.equal(model(x)[0], c)  # the mask comes from the global RNG


def test_packed_sorted_indices_state_order():
    """State in and out in the caller's order: equal to running each sequence alone."""
    torch.manual_seed(0)
    model = QRNN(N_IN, N_HID, 2, window=2)
    g = torch.Generator().manual_seed(3)
    seqs = [torch.randn(n, N_IN, generator=g) for n in LENGTHS]
    h0 = tuple(tuple(t.detach() for t in s) for s in random_state(model, len(LENGTHS)))
    _, fin = model(pack_sequence(seqs, enforce_sorted=False), h0)
    for j, s in enumerate(seqs):
        one = tuple(tuple(t[j:j + 1] for t in layer) for layer in h0)
        _, fin_j = model(s.unsqueeze(1), one)
        for a, b in zip(flat_state(fin_j), flat_state(fin)):
            torch.testing.assert_close(b[j:j + 1], a, atol=1e-12, rtol=0)


def test_loop_scan_option_gives_the_same_result():
    torch.manual_seed(0)
    fast = QRNN(N_IN, N_HID, 2, window=2)
    slow = QRNN(N_IN, N_HID, 2, window=2, scan="loop")
    slow.load_state_dict(fast.state_dict())
    x, _ = ragged_batch(LENGTHS, N_IN, 1)
    a, sa = fast(x)
    b, sb = slow(x)
    torch.testing.assert_close(a.data, b.data, atol=1e-12, rtol=0)
    for p, q in zip(flat_state(sa), flat_state(sb)):
        torch.testing.assert_close(p, q, atol=1e-12, rtol=0)


# -- under the block engine ---------------------------------------------------------------------
def mse_head(head):
    return lambda out, tgt: (head(out) - tgt) ** 2


@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("window", [1, 2])
@pytest.mark.parametrize("block_len", [1, 4, 6])
def test_engine_with_dropout_and_zoneout_replayed(layers, window, block_len):
    torch.manual_seed(layers * 10 + window)
    model = QRNN(N_IN, N_HID, layers, window=window, dropout=0.3 if layers > 1 else 0.0,
                 zoneout=0.4).train()
    head = nn.Linear(N_HID, 2)
    x, y = ragged_batch(LENGTHS, N_IN, 2)  # unsorted; sequences end inside blocks
    x.data.requires_grad_(True)
    h0 = random_state(model, len(LENGTHS))
    tensors = list(model.parameters()) + list(head.parameters()) + flat_state(h0) + [x.data]
    lf = mse_head(head)

    def seeded(fn, seed=11, **kw):  # dropout between layers is replayed on recompute
        return seeded_total(fn, model, lf, x, y, seed=seed, block_len=block_len, state=h0,
                            reduction="seq_mean", **kw)

    ref, got, r, o = run_both(tensors, lambda: seeded(vlrnn.full_loss),
                              lambda: seeded(vlrnn.block_loss))
    assert_close_grads(ref, got, rtol=1e-10)
    assert torch.allclose(r, o, rtol=1e-12)
    # the random draws mattered: another seed gives another loss
    with torch.no_grad():
        losses = []
        for seed in (11, 12):
            torch.manual_seed(seed)
            losses.append(vlrnn.full_loss(model, lf, x, y, block_len=block_len, state=h0,
                                          reduction="seq_mean").loss)
    assert not torch.allclose(losses[0], losses[1])


@pytest.mark.parametrize("window", [1, 2])
@pytest.mark.parametrize("block_len", [1, 5, 20])
def test_engine_eval_equals_one_call(window, block_len):
    """Without random draws the blocked gradient equals one call on the whole batch."""
    torch.manual_seed(4)
    model = QRNN(N_IN, N_HID, 2, window=window, zoneout=0.25, output_gate=False).eval()
    x, y = ragged_batch(LENGTHS, N_IN, N_HID)
    tensors = list(model.parameters())
    lf = nn.MSELoss(reduction="none")
    ref, got, r, o = run_both(
        tensors, lambda: vlrnn.full_backward(model, lf, x, y),
        lambda: vlrnn.block_backward(model, lf, x, y, block_len=block_len))
    assert_close_grads(ref, got, rtol=1e-10)
    assert torch.allclose(r.loss, o.loss, rtol=1e-12)
    for a, b in zip(flat_state(r.state), flat_state(o.state)):
        torch.testing.assert_close(b, a, atol=1e-12, rtol=0)


@pytest.mark.parametrize("batch_first", [False, True])
def test_engine_dense_with_head(batch_first):
    torch.manual_seed(5)
    model = QRNN(N_IN, N_HID, 2, window=2, batch_first=batch_first).with_head(2)
    assert isinstance(model, WithHead) and model.batch_first == batch_first
    shape = (3, 13) if batch_first else (13, 3)
    x = torch.randn(*shape, N_IN, requires_grad=True)
    y = torch.randn(*shape, 2)
    tensors = list(model.parameters()) + [x]
    lf = nn.MSELoss(reduction="none")
    ref, got, _, _ = run_both(tensors, lambda: vlrnn.full_backward(model, lf, x, y),
                              lambda: vlrnn.block_backward(model, lf, x, y, block_len=4))
    assert_close_grads(ref, got, rtol=1e-10)


# -- arguments and errors -------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, match", [
    (dict(window=3), r"window must be 1 or 2, got 3"),
    (dict(zoneout=1.0), r"zoneout must be a probability in \[0, 1\)"),
    (dict(dropout=-0.1), r"dropout must be a probability"),
    (dict(hidden_size=0), r"hidden_size must be >= 1"),
    (dict(scan="fast"), r"scan must be one of"),
])
def test_bad_arguments(kwargs, match):
    args = dict(input_size=N_IN, hidden_size=N_HID)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        QRNN(**args)


def test_single_layer_dropout_warns():
    with pytest.warns(UserWarning, match="dropout only acts between layers"):
        QRNN(N_IN, N_HID, 1, dropout=0.5)


def test_bad_input_and_state():
    model = QRNN(N_IN, N_HID, 2, window=2)
    with pytest.raises(ValueError, match=r"expected input_size=3, got 5 features"):
        model(torch.randn(4, 2, 5))
    with pytest.raises(ValueError, match=r"3-D"):
        model(torch.randn(4, N_IN))
    x = torch.randn(4, 2, N_IN)
    with pytest.raises(ValueError, match=r"one entry per layer \(2\)"):
        model(x, ((torch.zeros(2, N_HID), torch.zeros(2, N_IN)),))
    good = (torch.zeros(2, N_HID), torch.zeros(2, N_IN))
    with pytest.raises(ValueError, match=r"layer 1: x_prev has shape \(2, 3\), expected \(2, 4\)"):
        model(x, (good, (torch.zeros(2, N_HID), torch.zeros(2, N_IN))))
    with pytest.raises(ValueError, match=r"layer 0 must be a tuple \(c, x_prev\)"):
        model(x, (torch.zeros(2, N_HID), good))
