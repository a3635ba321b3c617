"""The training recipe options of pack_and_train: recipe='steps' (AdamW, cosine decay,
clipping), val_fraction='auto', front='conv', ensemble=k (mean of seeds), save/load."""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import torch

import vlrnn
from vlrnn.models import MeanOfModels
from vlrnn.training._pipeline import TrainedModel
from vlrnn.training._recipe import MIN_VAL_SERIES, cosine_decay, val_share

OPTS = {"id_col": "id", "time_col": "t", "hidden_size": 8, "num_layers": 1, "block_len": 8,
        "batch_size": 4, "progress": False, "device": "cpu"}


def frame(n_series: int = 10, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    parts = []
    for s in range(n_series):
        T = int(rng.integers(8, 20))
        u = rng.normal(size=T) + (1.5 if s % 2 else -1.5)
        parts.append(pd.DataFrame({"id": f"s{s}", "t": np.arange(T), "u": u,
                                   "kind": "b" if s % 2 else "a"}))
    return pd.concat(parts, ignore_index=True)


def test_val_share_and_cosine_decay():
    assert val_share("auto", MIN_VAL_SERIES - 1) == 0.0
    assert val_share("auto", MIN_VAL_SERIES) == 0.2
    assert val_share(0.1, 5) == 0.1
    assert val_share("auto", 5, "classic") == 0.2     # early stopping needs a split
    with pytest.raises(TypeError, match="'auto'"):
        val_share("some", 5)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = cosine_decay(5)(opt)
    lrs = []
    for _ in range(5):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == 1.0 and lrs[-1] == pytest.approx(0.01)
    assert all(a > b for a, b in itertools.pairwise(lrs))


def test_steps_recipe_uses_adamw_cosine_and_keeps_the_last_weights():
    res = vlrnn.pack_and_train(frame(), series_target="kind", epochs=4, recipe="steps",
                               val_fraction="auto", lr=0.01, weight_decay=0.05, **OPTS)
    opt = res.trainer.optimizer
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.param_groups[0]["weight_decay"] == 0.05
    assert res.trainer.clip_grad_norm == 1.0
    lr = res.history["lr"].to_numpy()
    assert lr[0] == pytest.approx(0.01) and (np.diff(lr) < 0).all()
    assert res.history["val_loss"].isna().all()     # 10 series: no validation split
    assert res.config["val_fraction"] == 0.0 and res.config["recipe"] == "steps"
    with pytest.raises(ValueError, match="recipe must be 'auto'"):
        vlrnn.pack_and_train(frame(), series_target="kind", epochs=1, recipe="fast", **OPTS)


def test_ensemble_averages_member_probabilities_and_saves(tmp_path):
    df = frame()
    res = vlrnn.pack_and_train(df, series_target="kind", epochs=2, ensemble=3,
                               front="conv", **OPTS)
    assert isinstance(res.model, MeanOfModels) and len(res.model.members) == 3
    assert sorted(res.history["member"].unique()) == [0, 1, 2]
    pred = res.predict(df)
    # the members differ (seeds 0, 1, 2) and the ensemble's probability is their mean
    probs = []
    for m in res.model.members:
        one = TrainedModel(m, res.history, res.task, {**res.settings, "ensemble": 1})
        probs.append(one.predict(df)["prob_a"].to_numpy())
    assert not np.allclose(probs[0], probs[1])
    np.testing.assert_allclose(pred["prob_a"], np.mean(probs, axis=0), rtol=1e-5)
    loaded = TrainedModel.load(res.save(tmp_path / "e.pt"))
    pd.testing.assert_frame_equal(loaded.predict(df), pred)
    with pytest.raises(ValueError, match="ensemble must be"):
        vlrnn.pack_and_train(df, series_target="kind", epochs=1, ensemble=0, **OPTS)
    with pytest.raises(ValueError, match="ensemble must be"):
        vlrnn.pack_and_train(df, series_target="kind", epochs=1, ensemble=True, **OPTS)
    # each member checkpoints into its own folder (tests/test_ensemble_checkpoints.py)
    vlrnn.pack_and_train(df, series_target="kind", epochs=1, ensemble=2,
                         checkpoint_dir=tmp_path / "ck", **OPTS)
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["member0", "member1"]


def test_conv_front_per_step_and_bad_front():
    df = frame()
    df["y"] = df["u"].shift(1, fill_value=0.0)
    res = vlrnn.pack_and_train(df[["id", "t", "u", "y"]], target_cols="y", epochs=2,
                               front={"channels": 4, "kernel_sizes": [3, 2]}, **OPTS)
    assert res.config["front"] == {"channels": 4, "kernel_sizes": [3, 2],
                                   "dilations": [1, 1], "norm": None, "skip": True}
    assert len(res.predict(df)) == len(df)
    with pytest.raises(ValueError, match="front must be None, 'conv'"):
        vlrnn.pack_and_train(df, series_target="kind", epochs=1, front="lstm", **OPTS)


def test_auto_recipe_and_front_follow_the_task():
    from vlrnn.training._recipe import resolve
    assert resolve("series", "classification", "auto", "auto") == ("steps", "conv")
    assert resolve("series", "regression", "auto", "auto") == ("classic", None)
    assert resolve("step", "classification", "auto", "auto") == ("classic", None)
    assert resolve("step", "regression", "steps", "conv") == ("steps", "conv")
    res = vlrnn.pack_and_train(frame(), series_target="kind", epochs=1, **OPTS)
    assert res.config["recipe"] == "steps" and res.config["front"]["dilations"] == [1, 2, 4]


def test_conv_front_grows_its_dilations_with_the_series_length():
    from vlrnn.training._recipe import CONV_FRONT, front_config, receptive_field
    assert receptive_field([7, 5, 3], [1, 2, 4]) == 23
    assert front_config("conv")["dilations"] == CONV_FRONT["dilations"] == [1, 2, 4]
    assert front_config("conv", 38)["dilations"] == [1, 2, 4]            # 39 steps > 38
    assert front_config("conv", 39)["dilations"] == [1, 2, 4, 8]
    long = front_config("conv", 250)
    assert long["dilations"] == [1, 2, 4, 8, 16] and long["kernel_sizes"] == [7, 5, 3, 3, 3]
    assert receptive_field(long["kernel_sizes"], long["dilations"]) == 71
    assert CONV_FRONT["kernel_sizes"] == [7, 5, 3]                        # not changed
    assert front_config({"channels": 8}, 250)["dilations"] == [1, 2, 4]  # a dict adds none
    rows = []
    for s in range(6):
        rows.append(pd.DataFrame({"id": f"s{s}", "t": np.arange(60), "u": np.sin(
            np.arange(60) / (2 + s % 2)), "kind": "ab"[s % 2]}))
    res = vlrnn.pack_and_train(pd.concat(rows, ignore_index=True), series_target="kind",
                               epochs=1, **OPTS)
    assert res.config["front"]["dilations"] == [1, 2, 4, 8]              # median 60 steps
