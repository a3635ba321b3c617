"""ConvFront / ConvThen: causal convolutions streamed by block give exactly the whole
sequence's outputs, and the engine's gradient equals plain BPTT (float64, packed and
dense, sorted and unsorted, sequences ending mid-block, pooled series readout)."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_sequence, pad_packed_sequence

import vlrnn
from vlrnn.models import ConvFront, ConvThen, SequenceModel

from helpers import assert_close_grads, ragged_batch, run_both


def reference_front(front: ConvFront, x: torch.Tensor) -> torch.Tensor:
    """One sequence ``(T, F)``, left zero padding, plain conv1d per layer."""
    z = x.t()[None]                                          # (1, F, T)
    for conv, norm, k, d in zip(front.convs, front.norms, front.kernel_sizes,
                                front.dilations):
        z = conv(nn.functional.pad(z, ((k - 1) * d, 0)))
        z = torch.relu(norm(z.transpose(1, 2))).transpose(1, 2)
    return z[0].t()


@pytest.fixture(autouse=True)
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.mark.parametrize("sorted_", [True, False])
def test_blocks_give_the_whole_sequence_outputs(sorted_):
    torch.manual_seed(0)
    front = ConvFront(3, channels=5, kernel_sizes=(4, 3, 1), norm="layer",
                      dilations=(1, 3, 2))
    lengths = [9, 4, 13, 1, 7]
    xs = [torch.randn(n, 3) for n in lengths]
    if sorted_:
        xs = sorted(xs, key=lambda t: -len(t))
    x = pack_sequence(xs, enforce_sorted=sorted_)
    with torch.no_grad():
        y, _ = vlrnn.block_outputs(front, x, block_len=3)
        padded, _ = pad_packed_sequence(y)
        for b, seq in enumerate(xs):
            want = reference_front(front, seq)
            torch.testing.assert_close(padded[:len(seq), b], want, rtol=1e-10, atol=1e-12)
        dense = torch.randn(11, 2, 3)
        yd, _ = vlrnn.block_outputs(front, dense, block_len=4)
        for b in range(2):
            torch.testing.assert_close(yd[:, b], reference_front(front, dense[:, b]))


@pytest.mark.parametrize("sorted_", [True, False])
def test_engine_gradient_equals_plain_bptt(sorted_):
    torch.manual_seed(1)
    model = vlrnn.models.WithHead(ConvThen(ConvFront(2, 4, (3, 2), dilations=(2, 1)),
                                           nn.LSTM(4, 5, 2)), nn.Linear(5, 2))
    x, y = ragged_batch([10, 3, 7, 12], 2, 2, sorted_=sorted_)
    params = list(model.parameters())
    loss_fn = nn.MSELoss(reduction="none")
    ref, eng, _, _ = run_both(
        params,
        lambda: vlrnn.full_backward(model, loss_fn, x, y).loss,
        lambda: vlrnn.block_backward(model, loss_fn, x, y, block_len=3).loss)
    assert_close_grads(ref, eng)


def test_pooled_series_readout_gradient_is_exact():
    torch.manual_seed(2)
    rnn = ConvThen(ConvFront(2, 4, (5, 3)), nn.GRU(4, 6), skip=True)
    model = SequenceModel(rnn, 6 + 4, 3, pool=("mean", "max"))
    xs = [torch.randn(n, 2) for n in (11, 4, 8)]
    x = pack_sequence(xs, enforce_sorted=False)
    target = torch.tensor([0, 2, 1])
    params = list(model.parameters())

    def run(block_len):
        out = vlrnn.block_loss(model, None, x, None, block_len=block_len)
        loss = nn.functional.cross_entropy(model.readout(out.state), target)
        loss.backward()
        return loss.detach()

    ref, eng, ref_out, eng_out = run_both(params, lambda: run(100), lambda: run(3))
    torch.testing.assert_close(ref_out, eng_out)
    assert_close_grads(ref, eng)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="kernel_sizes"):
        ConvFront(2, 4, ())
    with pytest.raises(ValueError, match="dilations must be"):
        ConvFront(2, 4, (3, 3), dilations=(1,))
    with pytest.raises(ValueError, match="norm must be"):
        ConvFront(2, 4, norm="batch")
    with pytest.raises(ValueError, match="batch on dim 1"):
        ConvThen(ConvFront(2, 4), vlrnn.models.StackedRNN(4, 4))
