"""Bad input gets a clear error naming what was expected and what came."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_sequence

import vlrnn

mse = nn.MSELoss(reduction="none")


@pytest.fixture
def lstm():
    torch.manual_seed(0)
    return nn.LSTM(3, 4)


def dense(T=6, B=2, F=3):
    return torch.randn(T, B, F), torch.randn(T, B, 4)


@pytest.mark.parametrize("bad,exc,msg", [(0, ValueError, ">= 1"), (-3, ValueError, ">= 1"),
                                         (2.5, TypeError, "positive int"),
                                         (True, TypeError, "positive int")])
def test_block_len(lstm, bad, exc, msg):
    x, y = dense()
    with pytest.raises(exc, match=msg):
        vlrnn.block_loss(lstm, mse, x, y, block_len=bad)


def test_unknown_reduction(lstm):
    x, y = dense()
    with pytest.raises(ValueError, match=r"unknown reduction 'avg'.*'sum', 'mean', 'seq_mean'"):
        vlrnn.block_loss(lstm, mse, x, y, reduction="avg")


def test_unknown_option(lstm):
    x, y = dense()
    with pytest.raises(TypeError, match="block_size"):
        vlrnn.block_loss(lstm, mse, x, y, block_size=4)


def test_dense_target_shape(lstm):
    x, _ = dense()
    with pytest.raises(ValueError, match=r"target's leading dims \(T, B\) must equal x's \(6, 2\)"):
        vlrnn.block_loss(lstm, mse, x, torch.randn(5, 2, 4))


def test_packed_target_lengths():
    x = pack_sequence([torch.randn(5, 3), torch.randn(2, 3)], enforce_sorted=False)
    y = pack_sequence([torch.randn(4, 4), torch.randn(2, 4)], enforce_sorted=False)
    with pytest.raises(ValueError, match="lengths do not match"):
        vlrnn.block_loss(nn.LSTM(3, 4), mse, x, y)


def test_packed_target_with_swapped_lengths():
    x = pack_sequence([torch.randn(5, 3), torch.randn(2, 3)], enforce_sorted=False)
    y = pack_sequence([torch.randn(2, 4), torch.randn(5, 4)], enforce_sorted=False)
    with pytest.raises(ValueError, match=r"sequence 0 \(input order\) has 5 steps in x and 2"):
        vlrnn.block_loss(nn.LSTM(3, 4), mse, x, y)


def test_packed_x_dense_target():
    x = pack_sequence([torch.randn(5, 3)])
    with pytest.raises(TypeError, match="target must be a PackedSequence"):
        vlrnn.block_loss(nn.LSTM(3, 4), mse, x, torch.randn(5, 1, 4))


def test_x_of_wrong_type(lstm):
    with pytest.raises(TypeError, match="x must be a PackedSequence, a dense tensor"):
        vlrnn.block_loss(lstm, mse, [[1.0]], None)


def test_empty_dense(lstm):
    with pytest.raises(ValueError, match="x is empty"):
        vlrnn.block_loss(lstm, mse, torch.randn(0, 2, 3), torch.randn(0, 2, 4))


def test_scalar_loss_fn(lstm):
    x, y = dense()
    with pytest.raises(ValueError, match=r"first dimension is the number of rows \(12\).*reduction='none'"):
        vlrnn.block_loss(lstm, nn.MSELoss(), x, y)


def test_loss_fn_wrong_rows(lstm):
    x, y = dense()
    with pytest.raises(ValueError, match=r"number of rows \(12\), got shape \(4, 4\)"):
        vlrnn.block_loss(lstm, lambda o, t: mse(o, t)[:4], x, y)


def test_state_batch_mismatch(lstm):
    x, y = dense(B=2)
    h0 = (torch.zeros(1, 3, 4), torch.zeros(1, 3, 4))
    with pytest.raises(ValueError, match="initial state: tensor 0 has batch size 3 on dim 1.*expected 2"):
        vlrnn.block_loss(lstm, mse, x, y, state=h0)


def test_model_not_returning_pair():
    class Bad(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 4)

        def forward(self, x, state):
            return self.lin(x)

    x, y = dense()
    with pytest.raises(TypeError, match=r"model must return a pair \(y, new_state\)"):
        vlrnn.block_loss(Bad(), mse, x, y)


def test_state_of_wrong_kind(lstm):
    x, y = dense()
    with pytest.raises(TypeError, match="tensor or a \\(nested\\) tuple/list of tensors, got dict"):
        vlrnn.block_loss(lstm, mse, x, y, state={"h": torch.zeros(1, 2, 4)})


def test_batch_first_conflict():
    model = nn.GRU(3, 4, batch_first=True)
    x, y = dense()
    with pytest.raises(ValueError, match="batch_first=False but the model was built with batch_first=True"):
        vlrnn.block_loss(model, mse, x, y, batch_first=False)
