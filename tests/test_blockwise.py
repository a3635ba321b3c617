"""Blockwise: a drop-in for the module it wraps; gradients equal plain autograd (float64).

Losses couple all steps (CTC, attention pooling over time, a loss on h_n); inputs are
packed ragged batches (sorted and not) and dense ones (time-major and batch-first),
with sequences ending mid-block, initial states and x requiring grad.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

import vlrnn
from helpers import assert_close_grads, flat_state, run_both
from test_block_outputs import N_CLS, N_HID, N_IN, batch, coupled_loss, inputs_of
from vlrnn.models import QRNN, StackedRNN

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
LAYOUTS = ["packed_sorted", "packed_unsorted", "time_major", "batch_first"]


def initial_state(rnn: nn.RNNBase, n_batch: int = 4):
    n = rnn.num_layers * (2 if rnn.bidirectional else 1)
    h_out = getattr(rnn, "proj_size", 0) or rnn.hidden_size
    h = torch.randn(n, n_batch, h_out, requires_grad=True)
    if isinstance(rnn, nn.LSTM):
        return (h, torch.randn(n, n_batch, rnn.hidden_size, requires_grad=True))
    return h


def compare(rnn: nn.Module, x, state, *, block_len: int = 3, schedule=None, bf=False):
    """Plain autograd through ``rnn`` against ``Blockwise(rnn)``: outputs and grads."""
    width = getattr(rnn, "proj_size", 0) or rnn.hidden_size
    width *= 2 if getattr(rnn, "bidirectional", False) else 1
    proj = torch.randn(width, N_CLS, requires_grad=True)
    tensors = [*rnn.parameters(), inputs_of(x), *(flat_state(state) if state is not None else []), proj]
    wrapped = vlrnn.Blockwise(rnn, block_len=block_len, schedule=schedule)

    def go(model):
        def run():
            y, s = model(x, state)
            coupled_loss(y, s, proj, bf).backward()
            return y, s
        return run

    r, g, (y_ref, s_ref), (y_eng, s_eng) = run_both(tensors, go(rnn), go(wrapped))
    assert type(y_ref) is type(y_eng)
    if isinstance(y_ref, PackedSequence):
        assert torch.equal(y_ref.batch_sizes, y_eng.batch_sizes)
    assert torch.allclose(inputs_of(y_ref), inputs_of(y_eng), rtol=1e-12, atol=1e-14)
    for a, b in zip(flat_state(s_ref), flat_state(s_eng)):
        assert a.shape == b.shape
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)
    assert_close_grads(r, g)


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_two_layers_every_cell_and_layout(cell, layout, bidirectional):
    torch.manual_seed(0)
    bf = layout == "batch_first"
    rnn = CELLS[cell](N_IN, N_HID, num_layers=2, bidirectional=bidirectional, batch_first=bf)
    compare(rnn, batch(layout), initial_state(rnn), bf=bf)


@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_one_and_three_bidirectional_layers(cell, layers):
    torch.manual_seed(1)
    rnn = CELLS[cell](N_IN, N_HID, num_layers=layers, bidirectional=True)
    compare(rnn, batch("packed_unsorted"), initial_state(rnn))


@pytest.mark.parametrize("schedule", sorted(vlrnn.SCHEDULES))
def test_every_schedule(schedule):
    torch.manual_seed(2)
    rnn = nn.LSTM(N_IN, N_HID, num_layers=2, bidirectional=True)
    compare(rnn, batch("packed_unsorted"), None, block_len=2, schedule=schedule)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_proj_size(bidirectional):
    torch.manual_seed(3)
    rnn = nn.LSTM(N_IN, N_HID, num_layers=2, proj_size=2, bidirectional=bidirectional)
    compare(rnn, batch("packed_unsorted"), initial_state(rnn))


def test_no_bias_and_relu():
    torch.manual_seed(4)
    rnn = nn.RNN(N_IN, N_HID, num_layers=2, nonlinearity="relu", bias=False,
                 bidirectional=True)
    compare(rnn, batch("time_major"), initial_state(rnn))


@pytest.mark.parametrize("bidirectional", [False, True])
def test_dropout_same_draws_as_plain_decomposition(bidirectional):
    """Training-mode inter-layer dropout. torch's own kernel draws its masks in an order
    of its own, so the reference is ``Blockwise.plain``: the same decomposition (and,
    unidirectional, the same block-by-block calls) with plain autograd, from the same
    seed: the same masks. Gradients must be equal, and the masks must act."""
    torch.manual_seed(5)
    rnn = nn.LSTM(N_IN, N_HID, num_layers=3, dropout=0.5, bidirectional=bidirectional).train()
    x = batch("packed_unsorted")
    proj = torch.randn(N_HID * (2 if bidirectional else 1), N_CLS)
    tensors = [*rnn.parameters(), x.data]

    def go(plain: bool):
        def run():
            wrapped = vlrnn.Blockwise(rnn, block_len=3, schedule="revolve")
            wrapped.plain = plain
            torch.manual_seed(11)
            y, s = wrapped(x)
            coupled_loss(y, s, proj).backward()
            return y.data
        return run

    r, g, y_ref, y_eng = run_both(tensors, go(True), go(False))
    assert torch.allclose(y_ref, y_eng, rtol=1e-12, atol=1e-14)
    assert_close_grads(r, g)
    rnn.eval()
    assert not torch.allclose(rnn(x)[0].data, y_eng.detach())


@pytest.mark.parametrize("make", [
    lambda: StackedRNN(N_IN, N_HID, 2, cell="gru"),
    lambda: QRNN(N_IN, N_HID, 2, window=2),
], ids=["stacked", "qrnn"])
def test_vlrnn_models(make):
    torch.manual_seed(6)
    model = make()
    x = batch("packed_unsorted")
    proj = torch.randn(N_HID, N_CLS)
    tensors = [*model.parameters(), x.data]
    wrapped = vlrnn.Blockwise(model, block_len=4)
    r, g, y_ref, y_eng = run_both(
        tensors, lambda: coupled_loss(*model(x), proj).backward() or model(x)[0],
        lambda: coupled_loss(*wrapped(x), proj).backward() or wrapped(x)[0])
    assert torch.allclose(y_ref.data, y_eng.data, rtol=1e-12, atol=1e-14)
    assert_close_grads(r, g)


class Leaky(nn.Module):
    """Any (x, state) -> (y, state) model: a leaky integrator, state (B, H) on dim 0."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(N_IN, N_HID)
        self.decay = nn.Parameter(torch.tensor(0.7))

    def forward(self, x, state=None):
        h = torch.zeros(x.shape[1], N_HID) if state is None else state
        out = []
        for t in range(x.shape[0]):
            h = self.decay * h + torch.tanh(self.inp(x[t]))
            out.append(h)
        return torch.stack(out), h


def test_any_model():
    torch.manual_seed(7)
    model = Leaky()
    x = batch("time_major")
    h0 = torch.randn(4, N_HID, requires_grad=True)
    proj = torch.randn(N_HID, N_CLS)
    tensors = [*model.parameters(), x, h0]
    wrapped = vlrnn.Blockwise(model, block_len=5)
    r, g, _, _ = run_both(tensors, lambda: coupled_loss(*model(x, h0), proj).backward(),
                          lambda: coupled_loss(*wrapped(x, h0), proj).backward())
    assert_close_grads(r, g)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_unbatched_input(bidirectional):
    torch.manual_seed(8)
    rnn = nn.GRU(N_IN, N_HID, num_layers=2, bidirectional=bidirectional, batch_first=True)
    x = torch.randn(9, N_IN)
    h0 = torch.randn(2 * (1 + bidirectional), N_HID)
    y, h = vlrnn.Blockwise(rnn, block_len=4)(x, h0)
    ref_y, ref_h = rnn(x, h0)
    assert y.shape == ref_y.shape and h.shape == ref_h.shape
    assert torch.allclose(y, ref_y, rtol=1e-12, atol=1e-14)
    assert torch.allclose(h, ref_h, rtol=1e-12, atol=1e-14)


def test_attributes_of_the_wrapped_module():
    rnn = nn.LSTM(N_IN, N_HID, num_layers=2, bidirectional=True)
    wrapped = vlrnn.Blockwise(rnn)
    assert wrapped.hidden_size == N_HID and wrapped.bidirectional and wrapped.num_layers == 2
    assert wrapped.module is rnn
    with pytest.raises(AttributeError):
        _ = wrapped.no_such_attribute


def test_state_dict_is_the_wrapped_modules():
    rnn = nn.LSTM(N_IN, N_HID, num_layers=2, bidirectional=True)
    wrapped = vlrnn.Blockwise(rnn)
    assert list(wrapped.state_dict()) == list(rnn.state_dict())
    assert [id(p) for p in wrapped.parameters()] == [id(p) for p in rnn.parameters()]
    # a model holding it has the keys it would have with the module itself
    plain_model = nn.ModuleDict({"rnn": nn.LSTM(N_IN, N_HID, 2, bidirectional=True)})
    wrapped_model = nn.ModuleDict({"rnn": vlrnn.Blockwise(nn.LSTM(N_IN, N_HID, 2,
                                                                  bidirectional=True))})
    assert list(plain_model.state_dict()) == list(wrapped_model.state_dict())
    wrapped_model.load_state_dict(plain_model.state_dict())
    x = batch("time_major")
    assert torch.allclose(plain_model["rnn"](x)[0], wrapped_model["rnn"](x)[0],
                          rtol=1e-12, atol=1e-14)


def test_to_and_train_act_on_the_wrapped_module():
    rnn = nn.GRU(N_IN, N_HID, bidirectional=True)
    wrapped = vlrnn.Blockwise(rnn).to(torch.float32)
    assert all(p.dtype == torch.float32 for p in rnn.parameters())
    y, _ = wrapped(torch.randn(6, 2, N_IN, dtype=torch.float32))
    assert y.dtype == torch.float32
    wrapped.eval()
    assert not rnn.training and not wrapped.training
    wrapped.train()
    assert rnn.training


def test_bad_arguments_named():
    rnn = nn.LSTM(N_IN, N_HID, num_layers=2, bidirectional=True)
    with pytest.raises(ValueError, match=r"expected shape \(4, 4, 4\)"):
        vlrnn.Blockwise(rnn, block_len=3)(batch("time_major"),
                                          (torch.zeros(2, 4, 4), torch.zeros(2, 4, 4)))
    with pytest.raises(ValueError, match="block_len"):
        vlrnn.Blockwise(rnn, block_len=0)
    with pytest.raises(ValueError, match="unknown schedule"):
        vlrnn.Blockwise(rnn, schedule="nope")
    with pytest.raises(TypeError, match="nn.Module"):
        vlrnn.Blockwise(lambda x, s: (x, s))


@pytest.mark.parametrize("window", [1, 2])
@pytest.mark.parametrize("layout", ["packed_unsorted", "batch_first"])
def test_bidirectional_qrnn(window, layout):
    """QRNN(bidirectional=True): the reverse forget-mult scan on each sequence read
    backwards; Blockwise runs it last-to-first and equals the plain QRNN."""
    torch.manual_seed(9)
    bf = layout == "batch_first"
    model = QRNN(N_IN, N_HID, 2, window=window, bidirectional=True, batch_first=bf)
    x = batch(layout)
    state = tuple(tuple(t.clone().requires_grad_() for t in s)
                  for s in model.initial_state(4))
    state = tuple(tuple(t + 0.1 * torch.randn_like(t) for t in s) for s in state)
    leaves = [t for s in state for t in s]
    for t in leaves:
        t.retain_grad()
    proj = torch.randn(2 * N_HID, N_CLS)
    tensors = [*model.parameters(), inputs_of(x), *leaves]
    wrapped = vlrnn.Blockwise(model, block_len=3)
    r, g, y_ref, y_eng = run_both(
        tensors, lambda: coupled_loss(*model(x, state), proj, bf).backward() or model(x)[0],
        lambda: coupled_loss(*wrapped(x, state), proj, bf).backward() or wrapped(x)[0])
    assert torch.allclose(inputs_of(y_ref), inputs_of(y_eng), rtol=1e-12, atol=1e-14)
    assert_close_grads(r, g)


def test_bidirectional_qrnn_reverse_is_the_sequence_read_backwards():
    torch.manual_seed(10)
    model = QRNN(N_IN, N_HID, 1, bidirectional=True)
    x = torch.randn(9, 2, N_IN)
    y, _ = model(x)
    y_rev, _ = model.direction_view(0, reverse=True)(x.flip(0))
    assert torch.allclose(y[..., N_HID:], y_rev.flip(0), rtol=1e-12, atol=1e-14)
    assert len(model.initial_state(2)) == 2 and model.output_size == 2 * N_HID
