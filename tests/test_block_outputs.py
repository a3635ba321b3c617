"""block_outputs: differentiable y and final state, against plain autograd (float64).

The losses couple all steps (CTC, softmax attention over time, a loss on the final
state), which block_loss cannot take; the reverse block pass must still give the exact
gradient of the parameters, x and the initial state.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

import vlrnn
from vlrnn.models import QRNN, StackedRNN

from helpers import assert_close_grads, flat_state, ragged_batch, run_both, state_like

N_IN, N_HID, N_CLS = 3, 4, 3
LENGTHS = [7, 1, 13, 5]  # 13 steps in blocks of 3: sequences end mid-block
CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


def batch(layout: str, gen=None):
    """``x`` (requiring grad) in the given layout: packed sorted/unsorted, dense time-major
    or batch-first (4 sequences of 13 steps)."""
    if layout.startswith("packed"):
        x, _ = ragged_batch(LENGTHS, N_IN, 1, sorted_=layout == "packed_sorted", gen=gen)
        return x._replace(data=x.data.detach().requires_grad_())
    shape = (4, 13, N_IN) if layout == "batch_first" else (13, 4, N_IN)
    return torch.randn(*shape, generator=gen).requires_grad_()


def padded(y, batch_first: bool):
    """(T, B, H) and lengths, input order, from packed or dense outputs."""
    if isinstance(y, PackedSequence):
        return pad_packed_sequence(y)
    y = y.transpose(0, 1) if batch_first else y
    return y, torch.full((y.shape[1],), y.shape[0], dtype=torch.int64)


def coupled_loss(y, state, proj: torch.Tensor, batch_first: bool = False) -> torch.Tensor:
    """CTC over every step + softmax attention pooling over time + a loss on the final
    state: every term depends on all steps."""
    seq, lengths = padded(y, batch_first)
    logp = torch.log_softmax(seq @ proj, -1)  # (T, B, C), class 0 the blank
    targets = torch.tensor([[1], [2], [1], [2]])[:seq.shape[1]]
    ctc = F.ctc_loss(logp, targets, lengths, torch.ones(seq.shape[1], dtype=torch.int64),
                     reduction="sum", zero_infinity=True)
    mask = torch.arange(seq.shape[0])[:, None] < lengths[None, :]
    scores = (seq.sum(-1)).masked_fill(~mask, float("-inf"))
    att = torch.softmax(scores, 0).unsqueeze(-1)
    pooled = (att * seq).sum(0)
    return ctc + (pooled ** 2).sum() + sum((s ** 3).sum() for s in flat_state(state))


def inputs_of(x):
    return x.data if isinstance(x, PackedSequence) else x


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("layout", ["packed_sorted", "packed_unsorted", "time_major",
                                    "batch_first"])
def test_coupled_loss_equals_plain_autograd(cell, layout):
    torch.manual_seed(0)
    bf = layout == "batch_first"
    model = CELLS[cell](N_IN, N_HID, num_layers=2, batch_first=bf)
    x = batch(layout)
    h0 = state_like(cell, 2, 4, N_HID)
    proj = torch.randn(N_HID, N_CLS, requires_grad=True)
    tensors = [*model.parameters(), inputs_of(x), *flat_state(h0), proj]

    def ref():
        y, s = model(x, h0)
        coupled_loss(y, s, proj, bf).backward()
        return y

    def eng():
        y, s = vlrnn.block_outputs(model, x, block_len=3, state=h0)
        coupled_loss(y, s, proj, bf).backward()
        return y

    r, g, y_ref, y_eng = run_both(tensors, ref, eng)
    assert type(y_ref) is type(y_eng)
    assert torch.allclose(inputs_of(y_ref), inputs_of(y_eng), rtol=1e-12, atol=1e-14)
    assert_close_grads(r, g)


@pytest.mark.parametrize("schedule", sorted(vlrnn.SCHEDULES))
def test_every_schedule(schedule):
    torch.manual_seed(1)
    model = nn.LSTM(N_IN, N_HID)
    x = batch("packed_unsorted")
    h0 = state_like("lstm", 1, 4, N_HID)
    proj = torch.randn(N_HID, N_CLS)
    tensors = [*model.parameters(), x.data, *h0]
    r, g, _, _ = run_both(
        tensors, lambda: coupled_loss(*model(x, h0), proj).backward(),
        lambda: coupled_loss(*vlrnn.block_outputs(model, x, block_len=2, state=h0,
                                                  schedule=schedule), proj).backward())
    assert_close_grads(r, g)


@pytest.mark.parametrize("block_len", [4, 100])
def test_only_the_final_state_used(block_len):
    """dL/dy is None (y unused): the reverse pass runs on dL/dstate alone (and with one
    block, on the forward pass's own graph)."""
    torch.manual_seed(2)
    model = nn.GRU(N_IN, N_HID)
    x = batch("packed_unsorted")
    tensors = [*model.parameters(), x.data]
    r, g, _, _ = run_both(tensors, lambda: (model(x)[1] ** 2).sum().backward(),
                          lambda: (vlrnn.block_outputs(model, x, block_len=block_len)[1] ** 2)
                          .sum().backward())
    assert_close_grads(r, g)


@pytest.mark.parametrize("make", [
    lambda: StackedRNN(N_IN, N_HID, 2, cell="lstm", dropout=0.4),
    lambda: QRNN(N_IN, N_HID, 2, window=2, dropout=0.3, zoneout=0.2),
    lambda: nn.LSTM(N_IN, N_HID, num_layers=2, dropout=0.5),
], ids=["stacked", "qrnn", "nn_lstm"])
def test_dropout_replayed(make):
    """Training-mode dropout: the reference is plain autograd through the same
    block-by-block calls (vlrnn.full_outputs) from the same seed, so both see the same
    random draws; the engine replays them when it recomputes a block."""
    torch.manual_seed(3)
    model = make().train()
    x = batch("packed_unsorted")
    proj = torch.randn(N_HID, N_CLS)
    tensors = [*model.parameters(), x.data]

    def run(fn):
        def go():
            torch.manual_seed(7)
            y, s = fn(model, x, block_len=3, schedule="two_level")
            coupled_loss(y, s, proj).backward()
            return y
        return go

    r, g, y_ref, y_eng = run_both(tensors, run(vlrnn.full_outputs), run(vlrnn.block_outputs))
    assert torch.allclose(y_ref.data, y_eng.data, rtol=1e-12, atol=1e-14)
    assert_close_grads(r, g)
    # and the masks did act: without dropout the outputs differ
    model.eval()
    assert not torch.allclose(model(x)[0].data, y_eng.data.detach())


def test_no_grad_streams_and_matches():
    torch.manual_seed(4)
    model = nn.LSTM(N_IN, N_HID, num_layers=2)
    x = batch("time_major")
    with torch.no_grad():
        y, (h, c) = vlrnn.block_outputs(model, x, block_len=5)
        ref, (rh, rc) = model(x)
    assert not y.requires_grad
    assert torch.allclose(y, ref, rtol=1e-12, atol=1e-14)
    assert torch.allclose(h, rh, rtol=1e-12, atol=1e-14)


def test_second_backward_with_retained_graph():
    """retain_graph=True: a second backward recomputes the kept blocks and doubles .grad."""
    torch.manual_seed(5)
    model = nn.GRU(N_IN, N_HID)
    x = batch("packed_sorted")
    y, s = vlrnn.block_outputs(model, x, block_len=3)
    loss = coupled_loss(y, s, torch.randn(N_HID, N_CLS))
    loss.backward(retain_graph=True)
    once = [p.grad.clone() for p in model.parameters()]
    loss.backward()
    for p, g in zip(model.parameters(), once):
        assert torch.allclose(p.grad, 2 * g, rtol=1e-10)


def test_reverse_reads_each_sequence_backwards():
    """reverse=True equals the model run on each sequence reversed within its length,
    outputs reversed back."""
    torch.manual_seed(6)
    model = nn.GRU(N_IN, N_HID)
    x = batch("packed_unsorted")
    seqs = torch.nn.utils.rnn.unpack_sequence(x)
    rev = torch.nn.utils.rnn.pack_sequence([s.flip(0) for s in seqs], enforce_sorted=False)
    tensors = [*model.parameters(), x.data]

    def ref():
        y, h = model(rev)
        ys = [t.flip(0) for t in torch.nn.utils.rnn.unpack_sequence(y)]
        loss = sum((t.cumsum(0) ** 2).sum() for t in ys) + (h ** 2).sum()
        loss.backward()
        return torch.cat(ys)

    def eng():
        y, h = vlrnn.block_outputs(model, x, block_len=3, reverse=True)
        ys = torch.nn.utils.rnn.unpack_sequence(y)
        loss = sum((t.cumsum(0) ** 2).sum() for t in ys) + (h ** 2).sum()
        loss.backward()
        return torch.cat(ys)

    r, g, y_ref, y_eng = run_both(tensors, ref, eng)
    assert torch.allclose(y_ref, y_eng, rtol=1e-12, atol=1e-14)
    assert_close_grads(r, g)


def test_bidirectional_refused_with_pointer_to_blockwise():
    model = nn.LSTM(N_IN, N_HID, bidirectional=True)
    with pytest.raises(ValueError, match="Blockwise"):
        vlrnn.block_outputs(model, batch("time_major"), block_len=3)
    with pytest.raises(ValueError, match="Blockwise"):
        vlrnn.block_loss(model, None, batch("time_major"), None, block_len=3)


def test_unknown_schedule_refused():
    with pytest.raises(ValueError, match="unknown schedule"):
        vlrnn.block_outputs(nn.GRU(N_IN, N_HID), batch("time_major"), block_len=3,
                            schedule="nope")


def test_joined_outputs_of_several_models_over_one_x():
    """Several models over the same x in one autograd node (Blockwise's bidirectional
    layers): outputs joined on the last dim, dL/dx summed over all of them."""
    from vlrnn.engine._bptt import joined_outputs
    torch.manual_seed(8)
    a, b = nn.GRU(N_IN, N_HID), nn.LSTM(N_IN, 2)
    x = batch("time_major")
    tensors = [*a.parameters(), *b.parameters(), x]

    def ref():
        y = torch.cat([a(x)[0], b(x)[0], a(x.flip(0))[0].flip(0)], -1)
        (y.cumsum(0) ** 2).sum().backward()
        return y

    def eng():
        y, _ = joined_outputs([(a, None, False), (b, None, False), (a, None, True)], x,
                              block_len=3)
        (y.cumsum(0) ** 2).sum().backward()
        return y

    r, g, y_ref, y_eng = run_both(tensors, ref, eng)
    assert torch.allclose(y_ref, y_eng, rtol=1e-12, atol=1e-14)
    assert_close_grads(r, g)
