"""Each scan model against a plain step loop of its recurrence (float64): outputs, final
states and every gradient (parameters, inputs, initial state), packed unsorted input,
1-3 layers. The loops are written from the papers' equations with plain autograd ops,
one sequence and one step at a time, so they share no code with the models."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_sequence, pad_packed_sequence

from helpers import assert_close_grads, flat_state, run_both
from vlrnn.models import MinGRU, MinLSTM

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
            inp = hs
        outs.append(torch.stack(inp))
    return outs, torch.stack([torch.stack(f) for f in finals])


CASES = {
    "mingru": (lambda layers: MinGRU(N_IN, N_HID, layers), ref_min_rnn),
    "minlstm": (lambda layers: MinLSTM(N_IN, N_HID, layers), ref_min_rnn),
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
