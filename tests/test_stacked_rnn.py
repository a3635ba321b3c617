"""StackedRNN against nn.LSTM / nn.GRU / nn.RNN with the same weights, plus its own API."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_sequence, pad_packed_sequence

from vlrnn import split_packed
from vlrnn.models import StackedRNN

ATOL = 1e-10
N_IN, N_HID = 3, 4
LENGTHS = [4, 7, 1, 5, 7]  # unsorted, a tie, and a length-1 sequence
REFS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


def make_pair(kind: str, num_layers: int, batch_first: bool = False, seed: int = 0):
    """(nn.LSTM/GRU/RNN, StackedRNN) with identical weights."""
    torch.manual_seed(seed)
    ref = REFS[kind](N_IN, N_HID, num_layers, batch_first=batch_first)
    model = StackedRNN(N_IN, N_HID, num_layers, cell=kind, batch_first=batch_first)
    with torch.no_grad():
        for layer, cell in enumerate(model.cells):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(cell, name).copy_(getattr(ref, f"{name}_l{layer}"))
    return ref, model


def ref_to_layers(kind: str, state):
    """nn.LSTM's (h_n, c_n) (L, B, H) -> per-layer ((h, c), ...); GRU/RNN h_n -> (h, ...)."""
    if kind == "lstm":
        h, c = state
        return tuple((h[i], c[i]) for i in range(h.shape[0]))
    return tuple(state[i] for i in range(state.shape[0]))


def layers_to_ref(kind: str, state):
    if kind == "lstm":
        return (torch.stack([s[0] for s in state]), torch.stack([s[1] for s in state]))
    return torch.stack(list(state))


def leaves(state):
    out = []
    for s in state:
        out.extend([s] if isinstance(s, torch.Tensor) else s)
    return out


def assert_states_equal(got, want):
    assert len(got) == len(want), f"{len(got)} layers vs {len(want)}"
    a, b = leaves(got), leaves(want)
    assert len(a) == len(b)
    for i, (p, q) in enumerate(zip(a, b)):
        assert p.shape == q.shape, f"state tensor {i}: {tuple(p.shape)} vs {tuple(q.shape)}"
        torch.testing.assert_close(p, q, atol=ATOL, rtol=0, msg=f"state tensor {i} differs")


def packed_input(lengths=LENGTHS, seed=1, enforce_sorted=False):
    g = torch.Generator().manual_seed(seed)
    return pack_sequence([torch.randn(n, N_IN, generator=g) for n in lengths],
                         enforce_sorted=enforce_sorted)


# -- equivalence with torch's fused RNNs -----------------------------------------------------
@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("batch_first", [False, True])
def test_dense_matches_torch(kind, num_layers, batch_first):
    ref, model = make_pair(kind, num_layers, batch_first)
    x = torch.randn(6, 3, N_IN)  # (B, T, F) or (T, B, F): both valid shapes here
    y_ref, s_ref = ref(x)
    y, s = model(x)
    assert y.shape == y_ref.shape
    torch.testing.assert_close(y, y_ref, atol=ATOL, rtol=0)
    assert len(s) == num_layers
    assert_states_equal(s, ref_to_layers(kind, s_ref))


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_packed_unsorted_matches_torch(kind, num_layers):
    ref, model = make_pair(kind, num_layers)
    x = packed_input()
    assert x.sorted_indices is not None
    y_ref, s_ref = ref(x)
    y, s = model(x)
    assert isinstance(y, nn.utils.rnn.PackedSequence)
    assert y.data.shape == (x.data.shape[0], N_HID)
    assert torch.equal(y.batch_sizes, x.batch_sizes)
    assert torch.equal(y.sorted_indices, x.sorted_indices)
    assert torch.equal(y.unsorted_indices, x.unsorted_indices)
    pad, lens = pad_packed_sequence(y)
    pad_ref, lens_ref = pad_packed_sequence(y_ref)
    assert torch.equal(lens, lens_ref)
    torch.testing.assert_close(pad, pad_ref, atol=ATOL, rtol=0)
    # final state in input order, each sequence frozen at its own last step
    assert_states_equal(s, ref_to_layers(kind, s_ref))


def test_packed_final_state_is_last_output():
    """Independent of torch: the last layer's h of each sequence is its last output row."""
    _, model = make_pair("gru", 2)
    x = packed_input()
    y, s = model(x)
    pad, lens = pad_packed_sequence(y)
    last = pad[lens - 1, torch.arange(len(LENGTHS))]  # input order
    torch.testing.assert_close(s[-1], last, atol=ATOL, rtol=0)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("enforce_sorted", [False, True])
def test_initial_state_packed(kind, enforce_sorted):
    ref, model = make_pair(kind, 2)
    lengths = sorted(LENGTHS, reverse=True) if enforce_sorted else LENGTHS
    x = packed_input(lengths, enforce_sorted=enforce_sorted)
    assert (x.sorted_indices is None) == enforce_sorted
    g = torch.Generator().manual_seed(5)

    def rand():
        return torch.randn(len(lengths), N_HID, generator=g)

    state = tuple((rand(), rand()) if kind == "lstm" else rand() for _ in range(2))
    y_ref, s_ref = ref(x, layers_to_ref(kind, state))
    y, s = model(x, state)
    torch.testing.assert_close(pad_packed_sequence(y)[0], pad_packed_sequence(y_ref)[0],
                               atol=ATOL, rtol=0)
    assert_states_equal(s, ref_to_layers(kind, s_ref))
    # the given state matters (guards against it being ignored)
    y0, _ = model(x)
    assert not torch.allclose(y0.data, y.data)


# -- carrying state between calls ----------------------------------------------------------
@pytest.mark.parametrize("batch_first", [False, True])
def test_carry_state_dense_halves(batch_first):
    _, model = make_pair("lstm", 2, batch_first)
    x = torch.randn(3, 8, N_IN) if batch_first else torch.randn(8, 3, N_IN)
    t_dim = 1 if batch_first else 0
    y_all, s_all = model(x)
    a, b = x.split(4, dim=t_dim)
    y1, s1 = model(a)
    y2, s2 = model(b, s1)
    torch.testing.assert_close(torch.cat([y1, y2], t_dim), y_all, atol=ATOL, rtol=0)
    assert_states_equal(s2, s_all)
    # starting the second half from zeros must differ, or the test proves nothing
    y2_fresh, _ = model(b)
    assert not torch.allclose(y2_fresh, y2)


def test_carry_state_packed_blocks():
    """The engine's use: sorted blocks, state narrowed to the sequences still running."""
    _, model = make_pair("lstm", 2)
    x = packed_input()
    y_all, s_all = model(x)
    state, enders, rows = None, [], []
    for blk in split_packed(x, 2):
        y, out = model(blk.x, state)
        rows.append(y.data)
        assert leaves(out)[0].shape[0] == blk.n_in
        enders.append([t[blk.n_out:blk.n_in] for t in leaves(out)])
        state = tuple(tuple(t[:blk.n_out] for t in layer) for layer in out)
    torch.testing.assert_close(torch.cat(rows), y_all.data, atol=ATOL, rtol=0)
    # sorted order: later blocks' enders are earlier rows
    final_sorted = [torch.cat(ts) for ts in zip(*enders[::-1])]
    final = [t.index_select(0, x.unsorted_indices) for t in final_sorted]
    for i, (p, q) in enumerate(zip(final, leaves(s_all))):
        torch.testing.assert_close(p, q, atol=ATOL, rtol=0, msg=f"state tensor {i}")


def test_block_engine_matches_full_loss():
    from vlrnn import block_loss, full_loss

    _, model = make_pair("gru", 2)
    g = torch.Generator().manual_seed(3)
    x = packed_input()
    target = pack_sequence([torch.randn(n, N_HID, generator=g) for n in LENGTHS],
                           enforce_sorted=False)
    loss_fn = nn.MSELoss(reduction="none")
    params = list(model.parameters())
    full = full_loss(model, loss_fn, x, target)
    blocked = block_loss(model, loss_fn, x, target, block_len=3)
    torch.testing.assert_close(blocked.loss, full.loss, atol=ATOL, rtol=0)
    assert_states_equal(blocked.state, full.state)
    g_full = torch.autograd.grad(full.loss, params)
    g_blk = torch.autograd.grad(blocked.loss, params)
    for a, b in zip(g_blk, g_full):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


# -- custom cells ----------------------------------------------------------------------------
class Elman(nn.Module):
    """h' = tanh(W x + U h): no bias, no initial_state (zeros are used)."""

    def __init__(self, n_in: int, n_hid: int):
        super().__init__()
        self.w = nn.Parameter(torch.randn(n_hid, n_in) * 0.5)
        self.u = nn.Parameter(torch.randn(n_hid, n_hid) * 0.5)

    def forward(self, x, h):
        return torch.tanh(x @ self.w.T + h @ self.u.T)


def elman_reference(model, x_tbf):
    """Plain loops over layers and steps, dense time-major."""
    seq = x_tbf
    finals = []
    for cell in model.cells:
        h = torch.zeros(seq.shape[1], N_HID)
        outs = []
        for t in range(seq.shape[0]):
            h = torch.tanh(seq[t] @ cell.w.T + h @ cell.u.T)
            outs.append(h)
        seq = torch.stack(outs)
        finals.append(h)
    return seq, tuple(finals)


def test_custom_cell_class():
    torch.manual_seed(0)
    model = StackedRNN(N_IN, N_HID, 2, cell=Elman)
    assert all(isinstance(c, Elman) for c in model.cells)
    assert model.cells[0].w.shape == (N_HID, N_IN) and model.cells[1].w.shape == (N_HID, N_HID)
    x = torch.randn(5, 2, N_IN)
    y, s = model(x)
    y_ref, s_ref = elman_reference(model, x)
    torch.testing.assert_close(y, y_ref, atol=ATOL, rtol=0)
    assert_states_equal(s, s_ref)
    assert all(isinstance(t, torch.Tensor) and t.shape == (2, N_HID) for t in s)


def test_custom_cell_initial_state_and_tuple_state():
    class Pair(nn.Module):
        """State (h, m) with a non-zero initial m, to check initial_state is used."""

        def __init__(self, n_in, n_hid):
            super().__init__()
            self.lin = nn.Linear(n_in + n_hid, n_hid)

        def initial_state(self, batch_size, device, dtype):
            z = torch.zeros(batch_size, N_HID, device=device, dtype=dtype)
            return (z, z + 1.0)

        def forward(self, x, hm):
            h, m = hm
            h2 = torch.tanh(self.lin(torch.cat([x, h], 1))) * m
            return (h2, m + 1.0)

    torch.manual_seed(0)
    model = StackedRNN(N_IN, N_HID, 2, cell=lambda a, b: Pair(a, b))
    x = packed_input()
    _, s = model(x)
    # m counts the steps of each sequence, starting from initial_state's 1
    for layer in s:
        torch.testing.assert_close(layer[1][:, 0], torch.tensor(LENGTHS, dtype=torch.float64) + 1)


def test_gradcheck_custom_cell():
    torch.manual_seed(0)
    model = StackedRNN(2, 3, 2, cell=Elman)
    x = pack_sequence([torch.randn(3, 2), torch.randn(1, 2), torch.randn(2, 2)],
                      enforce_sorted=False)

    def f(data, h0, h1, w0, u1):
        xp = nn.utils.rnn.PackedSequence(data, x.batch_sizes, x.sorted_indices,
                                         x.unsorted_indices)
        y, s = torch.func.functional_call(model, {"cells.0.w": w0, "cells.1.u": u1},
                                          (xp, (h0, h1)))
        return y.data, s[0], s[1]

    inputs = (x.data, torch.randn(3, 3), torch.randn(3, 3), model.cells[0].w.detach(),
              model.cells[1].u.detach())
    inputs = tuple(t.clone().requires_grad_(True) for t in inputs)
    assert torch.autograd.gradcheck(f, inputs)


# -- dropout ------------------------------------------------------------------------------------
def dropout_model(p=0.5, layers=3):
    torch.manual_seed(0)
    return StackedRNN(N_IN, N_HID, layers, cell="gru", dropout=p)


def test_dropout_eval_has_no_effect():
    model = dropout_model()
    plain = StackedRNN(N_IN, N_HID, 3, cell="gru")
    plain.load_state_dict(model.state_dict())
    x = torch.randn(6, 3, N_IN)
    model.eval()
    y, s = model(x)
    y_plain, s_plain = plain(x)
    torch.testing.assert_close(y, y_plain, atol=ATOL, rtol=0)
    assert_states_equal(s, s_plain)
    model.train()
    y_train, _ = model(x)
    assert not torch.allclose(y_train, y_plain)


def test_dropout_train_seeded():
    model = dropout_model().train()
    x = packed_input()

    def run(seed):
        torch.manual_seed(seed)
        y, s = model(x)
        return y.data, leaves(s)

    y1, s1 = run(7)
    y2, s2 = run(7)
    y3, _ = run(8)
    assert torch.equal(y1, y2)
    assert all(torch.equal(a, b) for a, b in zip(s1, s2))
    assert not torch.allclose(y1, y3)


def test_dropout_not_on_last_layer():
    """Dropout acts on the inputs of layers 2.., never on the returned output."""
    model = dropout_model(p=0.5, layers=2).train()
    torch.manual_seed(1)
    y, _ = model(torch.randn(6, 3, N_IN))
    assert (y != 0).all()  # half of 72 outputs would be zero if the last layer were dropped


def test_dropout_single_layer_warns_and_does_nothing():
    model = StackedRNN(N_IN, N_HID, 1, cell="gru")
    with pytest.warns(UserWarning, match="num_layers=1"):
        single = StackedRNN(N_IN, N_HID, 1, cell="gru", dropout=0.5)
    single.load_state_dict(model.state_dict())
    single.train()
    x = torch.randn(6, 3, N_IN)
    torch.testing.assert_close(single(x)[0], model(x)[0], atol=ATOL, rtol=0)


# -- arguments and errors ---------------------------------------------------------------------
def test_state_batch_dim_and_format():
    assert StackedRNN.state_batch_dim == 0
    _, model = make_pair("lstm", 3)
    _, s = model(torch.randn(2, 5, N_IN))
    assert isinstance(s, tuple) and len(s) == 3
    assert all(isinstance(layer, tuple) and len(layer) == 2 for layer in s)
    assert all(t.shape == (5, N_HID) for layer in s for t in layer)


@pytest.mark.parametrize("kwargs, match", [
    (dict(cell="lstmm"), r"unknown cell 'lstmm'.*'lstm', 'gru', 'rnn'"),
    (dict(hidden_size=0), r"hidden_size must be >= 1, got 0"),
    (dict(input_size=-2), r"input_size must be >= 1"),
    (dict(num_layers=0), r"num_layers must be >= 1"),
    (dict(dropout=1.5), r"dropout must be a probability in \[0, 1\), got 1.5"),
    (dict(dropout=-0.1), r"dropout must be a probability"),
    (dict(cell=3), r"cell must be one of"),
])
def test_bad_arguments(kwargs, match):
    args = dict(input_size=N_IN, hidden_size=N_HID, num_layers=2)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        StackedRNN(**args)


def test_wrong_feature_size():
    model = StackedRNN(N_IN, N_HID)
    with pytest.raises(ValueError, match=r"expected input_size=3, got 5 features"):
        model(torch.randn(4, 2, 5))
    packed = pack_sequence([torch.randn(3, 5), torch.randn(2, 5)])
    with pytest.raises(ValueError, match=r"expected input_size=3, got 5 features"):
        model(packed)
    with pytest.raises(ValueError, match=r"3-D"):
        model(torch.randn(4, N_IN))


def test_bad_state():
    model = StackedRNN(N_IN, N_HID, 2, cell="gru")
    x = torch.randn(4, 2, N_IN)
    with pytest.raises(ValueError, match=r"one entry per layer \(2\)"):
        model(x, (torch.zeros(2, N_HID),))
    with pytest.raises(ValueError, match=r"layer 1 .*expected batch size 2"):
        model(x, (torch.zeros(2, N_HID), torch.zeros(3, N_HID)))
