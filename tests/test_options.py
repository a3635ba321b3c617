"""The engine's options, checked once (vlrnn.engine._options): every entry point refuses the
same bad values with the same message, and the Trainer takes offload like block_loss."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_sequence

import vlrnn
from vlrnn.engine import Options

MSE = nn.MSELoss(reduction="none")
BAD = [(dict(block_len=0), ValueError, "block_len"),
       (dict(block_len="big"), ValueError, "positive int or 'auto'"),
       (dict(schedule="nope"), ValueError, "unknown schedule 'nope'"),
       (dict(memory_budget="lots"), ValueError, "not a size like '2GB'"),
       (dict(offload="gpu"), ValueError, "unknown offload 'gpu'; expected None or 'cpu'"),
       (dict(reduction="avg"), ValueError, "unknown reduction 'avg'"),
       (dict(batch_first="yes"), TypeError, "batch_first must be True, False or None"),
       (dict(state_batch_dim=-1), ValueError, "state_batch_dim must be >= 0")]


@pytest.mark.parametrize("kw, err, msg", BAD, ids=[next(iter(b[0])) for b in BAD])
def test_every_entry_point_refuses_the_same_bad_option(kw, err, msg):
    lstm = nn.LSTM(2, 3)
    x, y = torch.randn(6, 2, 2), torch.randn(6, 2, 3)
    with pytest.raises(err, match=msg):
        Options(**kw)
    with pytest.raises(err, match=msg):
        vlrnn.block_loss(lstm, MSE, x, y, **kw)
    with pytest.raises(err, match=msg):
        vlrnn.full_loss(lstm, MSE, x, y, **dict(kw, block_len=kw.get("block_len", 3)))
    if not {"reduction", "memory_budget", "offload"} & set(kw) and kw.get("block_len") != "big":
        with pytest.raises(err, match=msg):
            vlrnn.block_outputs(lstm, x, **kw)


def test_options_are_frozen_and_replace_checks_again():
    o = Options(block_len=8)
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.block_len = 9  # type: ignore[misc]
    assert o.replace(block_len=16).block_len == 16
    with pytest.raises(ValueError, match="unknown offload"):
        o.replace(offload="disk")


def test_trainer_takes_offload_and_refuses_a_bad_one():
    with pytest.raises(ValueError, match="unknown offload 'gpu'"):
        vlrnn.Trainer(nn.LSTM(2, 3), MSE, offload="gpu", progress=False, device="cpu")
    data = [(pack_sequence([torch.randn(9, 2), torch.randn(4, 2)], enforce_sorted=False),
             pack_sequence([torch.randn(9, 1), torch.randn(4, 1)], enforce_sorted=False))]
    states = []
    for offload in (None, "cpu"):
        torch.manual_seed(0)
        model = vlrnn.models.WithHead(nn.LSTM(2, 3), nn.Linear(3, 1))
        tr = vlrnn.Trainer(model, MSE, block_len=3, offload=offload, progress=False,
                           device="cpu", seed=0)
        assert tr.offload == offload
        tr.fit(data, epochs=2)
        states.append(model.state_dict())
    for k in states[0]:
        torch.testing.assert_close(states[0][k], states[1][k], rtol=0, atol=0)
