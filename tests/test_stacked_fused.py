"""StackedRNN's fused path (one torch.lstm/gru/rnn call per layer) against its own Python
step loop (``fused=False``): same outputs, states and gradients (float64) for every
option, packed (unsorted, ends inside blocks) and dense, under the block engine."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import vlrnn
from vlrnn.models import StackedRNN
from vlrnn.models._fused import fused_kernel

from helpers import assert_close_grads, flat_state, ragged_batch, seeded_total

LENGTHS = [7, 2, 11, 5, 11, 1]  # unsorted, a tie, a length-1 sequence

OPTIONS = [
    dict(hidden_size=[4, 4, 4], residual=True, layer_norm=True, dropout=0.3),
    dict(hidden_size=[5, 3, 3], residual=True, dropout=0.2),   # per-layer sizes
    dict(hidden_size=4, num_layers=2, layer_norm=True),
    dict(hidden_size=4, num_layers=1),
]


def initial_state(kind: str, sizes, batch: int, seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    rnd = lambda h: torch.randn(batch, h, generator=g).requires_grad_()  # noqa: E731
    return tuple((rnd(h), rnd(h)) if kind == "lstm" else rnd(h) for h in sizes)


def twin(model: StackedRNN) -> StackedRNN:
    """A copy of ``model`` (same parameters) that runs the Python step loop."""
    loop = copy.deepcopy(model)
    loop.fused = False
    return loop


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("opts", OPTIONS, ids=["all", "sizes", "norm", "one"])
@pytest.mark.parametrize("dense", [False, True])
def test_fused_equals_step_loop_under_engine(kind, opts, dense):
    torch.manual_seed(2)
    fused = StackedRNN(3, cell=kind, **opts).train()
    loop = twin(fused)
    assert all(fused_kernel(c) is not None for c in fused.cells)
    head = nn.Linear(fused.hidden_size, 2)
    if dense:
        g = torch.Generator().manual_seed(5)
        x = torch.randn(9, 4, 3, generator=g, requires_grad=True)
        y = torch.randn(9, 4, 2, generator=g)
        n_batch = 4
    else:
        x, y = ragged_batch(LENGTHS, 3, 2)  # ends inside blocks of 4
        x.data.requires_grad_(True)
        n_batch = len(LENGTHS)
    h0 = initial_state(kind, fused.hidden_sizes, n_batch)
    x_t = x if dense else x.data
    lf = lambda out, tgt: (head(out) - tgt) ** 2  # noqa: E731
    results = []
    for model in (loop, fused):
        for t in list(model.parameters()) + list(head.parameters()) + flat_state(h0) + [x_t]:
            t.grad = None
        total = seeded_total(vlrnn.block_loss, model, lf, x, y, seed=11, block_len=4,
                             state=h0, reduction="seq_mean")
        results.append((total, [p.grad.clone() for p in model.parameters()],
                        [t.grad.clone() for t in flat_state(h0) + [x_t]]))
    (t_ref, p_ref, s_ref), (t_got, p_got, s_got) = results
    assert torch.allclose(t_ref, t_got, rtol=1e-12, atol=0)
    assert_close_grads(p_ref, p_got, rtol=1e-10)
    assert_close_grads(s_ref, s_got, rtol=1e-10)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_fused_forward_equals_step_loop(kind, batch_first):
    torch.manual_seed(0)
    fused = StackedRNN(3, [5, 5], cell=kind, residual=True, batch_first=batch_first).eval()
    loop = twin(fused)
    x = torch.randn(6, 2, 3)
    h0 = initial_state(kind, fused.hidden_sizes, 6 if batch_first else 2)
    y_f, s_f = fused(x, h0)
    y_l, s_l = loop(x, h0)
    torch.testing.assert_close(y_f, y_l, rtol=1e-12, atol=1e-12)
    for a, b in zip(flat_state(s_f), flat_state(s_l)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # the state keeps its format: a tuple per layer, (h, c) for LSTM, batch on dim 0
    assert type(s_f) is tuple and len(s_f) == 2
    assert all(isinstance(s, tuple) if kind == "lstm" else isinstance(s, torch.Tensor)
               for s in s_f)


def test_relu_cell_and_no_bias_are_fused():
    torch.manual_seed(1)
    make = lambda i, h: nn.RNNCell(i, h, bias=False, nonlinearity="relu")  # noqa: E731
    fused = StackedRNN(3, 4, num_layers=2, cell=make)
    assert fused_kernel(fused.cells[0]) is torch.rnn_relu
    loop = twin(fused)
    x, _ = ragged_batch(LENGTHS, 3, 2)
    (y_f, s_f), (y_l, s_l) = fused(x), loop(x)
    torch.testing.assert_close(y_f.data, y_l.data, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s_f[1], s_l[1], rtol=1e-12, atol=1e-12)


def test_subclassed_cell_keeps_its_own_forward():
    class Doubled(nn.GRUCell):
        def forward(self, x, h):
            return 2 * super().forward(x, h)

    model = StackedRNN(3, 4, cell=Doubled)
    assert fused_kernel(model.cells[0]) is None  # its forward differs from torch.gru's
    x = torch.randn(3, 2, 3)
    y, _ = model(x)
    ref = twin(StackedRNN(3, 4, cell="gru"))
    ref.load_state_dict(model.state_dict())
    assert not torch.allclose(y, ref(x)[0])


def test_lstm_state_must_be_a_pair():
    model = StackedRNN(3, 4, cell="lstm")
    with pytest.raises(ValueError, match=r"nn.LSTMCell\) must be a tuple \(h, c\)"):
        model(torch.randn(2, 2, 3), (torch.zeros(2, 4),))
