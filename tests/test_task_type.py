"""The task as one frozen value (``vlrnn.training._task.Task``): checked on construction,
frozen, saved as plain values that ``torch.load(weights_only=True)`` reads, and read back
to the same task by ``TrainedModel.load``."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

import vlrnn
from vlrnn.training import CheckpointError, TrainedModel
from vlrnn.training import _checkpoint_files as ckpt_io
from vlrnn.training._forecast_metrics import seasonal_naive_forecasts
from vlrnn.training._task import Task

OPTS = dict(id_col="id", time_col="t", hidden_size=6, num_layers=1, block_len=4,
            batch_size=4, progress=False)


def panel(n=6, T=20, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        level = 10.0 ** i
        for t in range(T):
            rows.append({"id": f"s{i}", "t": t, "u": float(np.sin(t / 3)),
                         "y": level * (1 + 0.1 * np.sin(2 * np.pi * t / 4))
                         + rng.normal(0, 0.01 * level),
                         "kind": "odd" if i % 2 else "even"})
    return pd.DataFrame(rows)


def test_the_task_of_each_kind_of_call():
    df = panel()
    fc = vlrnn.pack_and_train(df.drop(columns="kind"), target_cols="y", horizon=3, season=4,
                              epochs=1, val_fraction=0, **OPTS).task
    assert (fc.kind, fc.level, fc.horizon, fc.season) == ("regression", "step", 3, 4)
    assert fc.target_cols == ("y",) and fc.feature_cols == ("u",)
    assert fc.input_cols == fc.feature_cols + ("y",) and fc.n_outputs == 3
    assert fc.scale == "series" and fc.scalers.mode == "series"
    clf = vlrnn.pack_and_train(df, series_target="kind", epochs=1, **OPTS).task
    assert (clf.kind, clf.level, clf.classes, clf.label_col) == \
        ("classification", "series", ("even", "odd"), "kind")
    assert clf.majority_class in clf.classes and clf.target_cols == ()


def test_task_is_frozen():
    t = Task("regression", "step", "id", "t", ("y",), ("u",))
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.horizon = 3  # type: ignore[misc]
    assert t.replace(horizon=3).horizon == 3 and t.horizon is None
    assert isinstance(t.target_cols, tuple)
    lists = Task("regression", "step", "id", "t", ["y"], ["u"])   # lists become tuples
    assert lists == t and isinstance(lists.feature_cols, tuple)
    assert hash(lists) == hash(t)                                 # usable as a key


@pytest.mark.parametrize("kwargs, match", [
    (dict(kind="clustering"), "kind must be one of"),
    (dict(level="window"), "level must be one of"),
    (dict(horizon=0), "horizon must be an int >= 1"),
    (dict(horizon=True), "horizon must be an int >= 1"),
    (dict(season=4), "season= .* needs horizon="),
    (dict(horizon=2, season=1), "season must be an int >= 2"),
    (dict(feature_cols=("u", "y")), r"\['y'\] are targets"),
    (dict(feature_cols=("u", "u")), "names a column twice"),
    (dict(target_cols=()), "needs target_cols"),
    (dict(time_col="id"), "same column"),
    (dict(feature_cols=(), horizon=None), "needs input columns"),
    (dict(classes=("a", "b")), "regression task has no classes"),
    (dict(kind="classification"), "at least two classes"),
    (dict(kind="classification", classes=("a", "a")), "repeats a class"),
    (dict(kind="classification", classes=("a", "b"), majority_class="c"),
     "majority_class 'c' is not one of"),
    (dict(kind="classification", classes=("a", "b"), horizon=2), "horizon= forecasts"),
    (dict(level="series"), "series task has no target_cols"),
    (dict(mean_label=1.0), "mean_label is the baseline of series regression"),
    (dict(scalers={"mode": None}), "must be a Scalers"),
])
def test_bad_tasks_are_refused_with_clear_errors(kwargs, match):
    base = dict(kind="regression", level="step", id_col="id", time_col="t",
                target_cols=("y",), feature_cols=("u",))
    with pytest.raises((ValueError, TypeError), match=match):
        Task(**{**base, **kwargs})


def test_from_dict_refuses_unknown_and_missing_fields():
    d = Task("regression", "step", "id", "t", ("y",), ("u",)).to_dict()
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['colour'\]"):
        Task.from_dict({**d, "colour": 1})
    del d["level"]
    with pytest.raises(ValueError, match=r"lacks the field\(s\) \['level'\]"):
        Task.from_dict(d)


@pytest.mark.parametrize("call", ["forecast", "series_clf", "step_clf"])
def test_the_task_round_trips_through_save_and_load(tmp_path, call):
    df = panel()
    if call == "forecast":
        res = vlrnn.pack_and_train(df.drop(columns="kind"), target_cols="y", horizon=2,
                                   season=4, epochs=1, val_fraction=0, **OPTS)
    elif call == "series_clf":
        res = vlrnn.pack_and_train(df, series_target="kind", epochs=1, **OPTS)
    else:
        res = vlrnn.pack_and_train(df, target_cols="kind", feature_cols=["u", "y"], epochs=1,
                                   val_fraction=0, **OPTS)
    path = res.save(tmp_path / "m.pt")
    raw = torch.load(path, weights_only=True)     # plain values and tensors only
    assert isinstance(raw["task"], dict) and isinstance(raw["task"]["target_cols"], list)
    loaded = TrainedModel.load(path)
    assert loaded.task == res.task and loaded.task is not res.task
    assert loaded.config == res.config
    # the other constructor form, (scalers, a flat dict as .config), gives the same model
    again = TrainedModel(res.model, res.history, res.scaler, res.config)
    assert again.task == res.task and again.settings == res.settings
    # the scalers' statistics are part of the task: a changed one is a different task
    if res.task.scalers.features is not None:
        d = res.task.to_dict()
        d["scalers"]["features"]["mean"] = d["scalers"]["features"]["mean"] + 1
        assert Task.from_dict(d) != res.task


def test_a_damaged_task_in_a_saved_file_is_refused(tmp_path):
    res = vlrnn.pack_and_train(panel().drop(columns="kind"), target_cols="y", epochs=1,
                               val_fraction=0, **OPTS)
    data = ckpt_io.load(res.save(tmp_path / "m.pt"))
    data["task"]["horizon"] = -1
    ckpt_io.save_atomic(data, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="saved task is not valid: horizon must be"):
        TrainedModel.load(tmp_path / "bad.pt")
    data["format"] = "vlrnn.TrainedModel/1"
    ckpt_io.save_atomic(data, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match="before the task type"):
        TrainedModel.load(tmp_path / "old.pt")


def test_seasonal_naive_repeats_the_last_season():
    v = np.arange(10.0)[:, None]
    f = seasonal_naive_forecasts(v, 5, 4)
    np.testing.assert_array_equal(f[6], [3, 4, 5, 6, 3])   # y[t + k - 4 ceil(k / 4)]
    np.testing.assert_array_equal(f[1, :3], [1, 1, 0])     # under a season: the last value
    with pytest.raises(ValueError, match="season must be an int >= 1"):
        seasonal_naive_forecasts(v, 2, 0)


def test_evaluate_adds_seasonal_naive_where_the_season_is_known():
    df = panel().drop(columns="kind")
    res = vlrnn.pack_and_train(df, target_cols="y", horizon=4, epochs=1, val_fraction=0,
                               **OPTS)
    plain = res.evaluate(df)
    assert "seasonal_naive_mase" not in plain
    with_season = res.evaluate(df, season=4)
    # a clean period-4 series: the seasonal naive beats persistence by far
    assert with_season["seasonal_naive_mase"] < 0.5 * with_season["persistence_mase"]
    assert with_season["mase"] == plain["mase"]
    with pytest.raises(ValueError, match="season must be an int >= 2"):
        res.evaluate(df, season=1)
    step = vlrnn.pack_and_train(df, target_cols="y", epochs=1, val_fraction=0, **OPTS)
    with pytest.raises(ValueError, match="does not forecast"):
        step.evaluate(df, season=4)
