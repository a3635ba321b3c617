"""The regularisation options of pack_and_train for series tasks: label_smoothing (the
cross-entropy's) and head_dropout (on the pooled features before the head), their
defaults by task and recipe, and that both are recorded in the config and kept on load."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from test_recipe import OPTS, frame
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_sequence

import vlrnn
from vlrnn.models import SequenceModel
from vlrnn.training._losses import MaskedCrossEntropy
from vlrnn.training._pipeline import TrainedModel
from vlrnn.training._recipe import (
    HEAD_DROPOUT,
    LABEL_SMOOTHING,
    dropout_share,
    label_share,
)


def test_masked_cross_entropy_smooths_the_labels_and_still_skips_missing():
    torch.manual_seed(0)
    logits = torch.randn(5, 3)
    target = torch.tensor([0.0, 2.0, float("nan"), 1.0, 1.0])
    got = MaskedCrossEntropy(label_smoothing=0.2)(logits, target)
    seen = torch.isfinite(target)
    want = F.cross_entropy(logits[seen], target[seen].long(), reduction="none",
                           label_smoothing=0.2)
    torch.testing.assert_close(got[seen], want)
    assert got[2] == 0.0
    plain = MaskedCrossEntropy()(logits, target)
    assert not torch.allclose(plain[seen], got[seen])
    # a confident right answer costs more with smoothing: the target is not one-hot
    sure = torch.tensor([[20.0, 0.0, 0.0]])
    assert MaskedCrossEntropy(label_smoothing=0.1)(sure, torch.tensor([0.0])) > 0.5
    for bad in (1.0, -0.1, True, "0.1"):
        with pytest.raises(ValueError, match="label_smoothing must be"):
            MaskedCrossEntropy(label_smoothing=bad)


def test_defaults_follow_the_task_and_the_recipe():
    assert label_share(None, "series", "steps") == LABEL_SMOOTHING
    assert label_share(None, "series", "classic") == 0.0
    assert label_share(None, "step", "steps") == 0.0
    assert label_share(0.3, "step", "classic") == 0.3
    assert dropout_share(None, "series", "steps") == HEAD_DROPOUT
    assert dropout_share(None, "series", "classic") == 0.0
    assert dropout_share(0.25, "series", "classic") == 0.25
    for bad in (1.0, -0.5, False):
        with pytest.raises(ValueError, match="head_dropout must be"):
            dropout_share(bad, "series", "steps")
        with pytest.raises(ValueError, match="label_smoothing must be"):
            label_share(bad, "series", "steps")


def test_sequence_model_dropout_acts_in_training_mode_only():
    torch.manual_seed(0)
    model = SequenceModel(nn.GRU(2, 8), hidden_size=8, n_out=3, pool=("last", "mean"),
                          dropout=0.5)
    _, state = model(pack_sequence([torch.randn(9, 2), torch.randn(4, 2)]), None)
    model.eval()
    a, b = model.readout(state), model.readout(state)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, model.head(model.features(state)))
    model.train()
    assert not torch.allclose(model.readout(state), a)
    with pytest.raises(ValueError, match="dropout must be"):
        SequenceModel(nn.GRU(2, 8), hidden_size=8, n_out=3, dropout=1.0)


def test_pack_and_train_records_both_options_and_load_keeps_them(tmp_path):
    df = frame()
    res = vlrnn.pack_and_train(df, series_target="kind", epochs=2, label_smoothing=0.2,
                               head_dropout=0.3, **OPTS)
    assert res.config["label_smoothing"] == 0.2 and res.config["head_dropout"] == 0.3
    assert res.model.dropout.p == 0.3
    loaded = TrainedModel.load(res.save(tmp_path / "m.pt"))
    assert loaded.config["head_dropout"] == 0.3 and loaded.model.dropout.p == 0.3
    np.testing.assert_allclose(loaded.predict(df)["prob_a"], res.predict(df)["prob_a"],
                               rtol=1e-6)
    default = vlrnn.pack_and_train(df, series_target="kind", epochs=1, **OPTS)
    assert default.config["label_smoothing"] == LABEL_SMOOTHING
    assert default.config["head_dropout"] == HEAD_DROPOUT
    # series regression (classic recipe) and per-step tasks: no smoothing, no dropout
    df["score"] = df.groupby("id")["u"].transform("mean")
    reg = vlrnn.pack_and_train(df[["id", "t", "u", "score"]], series_target="score",
                               epochs=1, **OPTS)
    assert reg.config["label_smoothing"] is None and reg.config["head_dropout"] == 0.0
    assert reg.model.dropout.p == 0.0
    step = vlrnn.pack_and_train(df[["id", "t", "u", "kind"]], target_cols="kind",
                                epochs=1, **OPTS)
    assert step.config["label_smoothing"] == 0.0 and step.config["head_dropout"] is None


def test_label_smoothing_changes_the_training_loss_and_the_default_is_0_1():
    df = frame()
    runs = [vlrnn.pack_and_train(df, series_target="kind", epochs=3, label_smoothing=ls,
                                 **OPTS) for ls in (0.0, 0.4, 0.1, None)]
    loss = [r.history["train_loss"].to_numpy() for r in runs]
    # same seed, same data: the losses differ only through the smoothing
    assert loss[0][0] != pytest.approx(loss[1][0])
    assert runs[1].config["label_smoothing"] == 0.4
    # the default (series classification, recipe "steps") is 0.1, and reaches the loss
    assert LABEL_SMOOTHING == 0.1 and runs[3].config["label_smoothing"] == 0.1
    np.testing.assert_array_equal(loss[3], loss[2])
    assert loss[3][0] != pytest.approx(loss[0][0])
    classic = vlrnn.pack_and_train(df, series_target="kind", epochs=1, recipe="classic",
                                   **OPTS)
    assert classic.config["label_smoothing"] == 0.0
