"""A bidirectional encoder for series tasks (``pack_and_train(bidirectional=True)``):
``vlrnn.Blockwise`` of a bidirectional rnn inside ``SequenceModel``, run as one block.
Its loss and gradients equal plain autograd through the same ``nn.LSTM``; a second block
is refused; the one-call path trains, predicts and round-trips through save/load."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_sequence, pad_packed_sequence

import vlrnn
from vlrnn.models import ConvFront, ConvThen, SequenceModel
from vlrnn.models._pooled import last_hidden
from vlrnn.training._helpers import engine_block_len

OPTS = dict(id_col="id", time_col="t", hidden_size=6, num_layers=1, block_len=8,
            batch_size=4, progress=False, device="cpu")


def _frame(n_series: int = 10, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    parts = []
    for s in range(n_series):
        T = int(rng.integers(6, 20))
        u = rng.normal(size=T) + (1.5 if s % 2 else -1.5)
        parts.append(pd.DataFrame({"id": f"s{s}", "t": np.arange(T), "u": u,
                                   "kind": "b" if s % 2 else "a"}))
    return pd.concat(parts, ignore_index=True)


def _reference_pools(lstm: nn.LSTM, x) -> torch.Tensor:
    """``[last fwd, last rev, mean, max]`` of a bidirectional LSTM, plain autograd."""
    y, (h, _) = lstm(x)
    padded, lengths = pad_packed_sequence(y)                       # (T, B, 2H), input order
    mask = (torch.arange(padded.shape[0])[:, None] < lengths[None, :]).unsqueeze(-1)
    mean = (padded * mask).sum(0) / lengths[:, None].to(padded.dtype)
    peak = padded.masked_fill(~mask, float("-inf")).amax(0)
    return torch.cat([h[-2], h[-1], mean, peak], 1)


@pytest.mark.parametrize("layers", [1, 2])
def test_loss_and_gradients_equal_plain_autograd(layers):
    torch.manual_seed(0)
    lstm = nn.LSTM(3, 5, num_layers=layers, bidirectional=True).double()
    model = SequenceModel(vlrnn.Blockwise(lstm, block_len=4), 10, 2,
                          pool=("last", "mean", "max")).double()
    seqs = [torch.randn(n, 3, dtype=torch.float64) for n in (9, 3, 13, 6)]   # unsorted
    x = pack_sequence(seqs, enforce_sorted=False)
    target = torch.tensor([0, 1, 1, 0])
    assert model.reads_whole_sequence and engine_block_len(model, x, 4) == 13
    out = vlrnn.block_loss(model, None, x, None, block_len=engine_block_len(model, x, 4))
    loss = nn.functional.cross_entropy(model.readout(out.state), target)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    ref = nn.functional.cross_entropy(model.head(_reference_pools(lstm, x)), target)
    ref_grads = torch.autograd.grad(ref, list(model.parameters()))
    assert torch.allclose(loss, ref, rtol=1e-10, atol=0)
    for g, r in zip(grads, ref_grads):
        assert torch.allclose(g, r, rtol=1e-7, atol=1e-10)


def test_a_second_block_is_refused_and_the_last_state_holds_both_directions():
    torch.manual_seed(0)
    lstm = nn.LSTM(2, 4, bidirectional=True)
    model = SequenceModel(vlrnn.Blockwise(lstm, block_len=4), 8, 3, pool=("last",))
    x = torch.randn(12, 2, 2)
    with pytest.raises(ValueError, match="reads whole sequences"):
        vlrnn.block_loss(model, None, x, None, block_len=4)           # three blocks
    _, state = model(x, None)
    h = state[0]
    assert torch.equal(last_hidden(model.rnn, state), torch.cat([h[-2], h[-1]], 1))
    conv = ConvThen(ConvFront(2, channels=3), vlrnn.Blockwise(nn.GRU(3, 4, bidirectional=True)))
    assert conv.bidirectional and SequenceModel(conv, 8, 2).reads_whole_sequence
    assert not SequenceModel(nn.LSTM(2, 4), 4, 2).reads_whole_sequence


def test_pack_and_train_bidirectional_trains_predicts_and_reloads(tmp_path):
    df = _frame()
    res = vlrnn.pack_and_train(df, series_target="kind", epochs=20, lr=0.03,
                               bidirectional=True, **OPTS)
    assert res.config["bidirectional"] is True
    assert isinstance(res.model.rnn.rnn, vlrnn.Blockwise)            # front, then Blockwise
    assert res.model.rnn.rnn.module.bidirectional
    assert res.evaluate(df)["accuracy"] >= 0.9      # the classes differ by their level
    pred = res.predict(df[["id", "t", "u"]])
    path = tmp_path / "bi.pt"
    res.save(path)
    back = vlrnn.TrainedModel.load(path)
    pd.testing.assert_frame_equal(back.predict(df[["id", "t", "u"]]), pred)


def test_bidirectional_needs_a_series_task_and_a_fused_cell():
    df = _frame()
    with pytest.raises(ValueError, match="needs a series task"):
        vlrnn.pack_and_train(df[["id", "t", "u"]], target_cols="u", horizon=2, epochs=1,
                             bidirectional=True, **OPTS)
    with pytest.raises(ValueError, match="cell 'lstm', 'gru' or 'rnn'"):
        vlrnn.pack_and_train(df, series_target="kind", epochs=1, cell="mingru",
                             bidirectional=True, **OPTS)
    with pytest.raises(TypeError, match="bidirectional must be True or False"):
        vlrnn.pack_and_train(df, series_target="kind", epochs=1, bidirectional="yes",
                             **OPTS)
