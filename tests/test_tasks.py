"""Tasks from pandas: per-step classes, one label per series, forecasting, missing targets,
and the errors for bad input (each names the series or column)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import vlrnn
from vlrnn.data import DataWarning
from vlrnn.training._pipeline import TrainedModel

OPTS = dict(id_col="id", time_col="t", hidden_size=8, num_layers=1, block_len=8,
            batch_size=4, progress=False, device="cpu")


def frame(n_series: int = 12, seed: int = 0) -> pd.DataFrame:
    """Ragged series; class 'b' series have a higher mean of u; state is u > 0.5; the
    target y follows u with one step of delay."""
    rng = np.random.default_rng(seed)
    parts = []
    for s in range(n_series):
        T = int(rng.integers(8, 30))
        u = rng.normal(size=T) + (1.5 if s % 2 else -1.5)
        parts.append(pd.DataFrame({
            "id": f"s{s}", "t": np.arange(T), "u": u,
            "y": 10 + np.r_[0.0, u[:-1]], "state": np.where(u > 0.5, "hi", "lo"),
            "kind": "b" if s % 2 else "a"}))
    return pd.concat(parts, ignore_index=True)


def with_float64(fn):
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return fn()
    finally:
        torch.set_default_dtype(old)


@pytest.fixture(scope="module")
def series_clf() -> TrainedModel:
    df = frame()[["id", "t", "u", "kind"]]
    # val_fraction=0.2: the split the history's val_accuracy is checked on (the default
    # holds none out for a set this small)
    return with_float64(lambda: vlrnn.pack_and_train(df, series_target="kind", epochs=15,
                                                     lr=0.03, val_fraction=0.2, **OPTS))


@pytest.fixture(scope="module")
def forecaster() -> TrainedModel:
    df = frame()[["id", "t", "u", "y"]]
    return with_float64(lambda: vlrnn.pack_and_train(df, target_cols="y", horizon=3,
                                                     epochs=3, **OPTS))


# -- series classification -------------------------------------------------------------
def test_series_classification_learns_and_predicts_one_row_per_series(series_clf):
    df = frame()
    assert series_clf.config["task"] == "classification"
    assert series_clf.classes == ["a", "b"]
    pred = series_clf.predict(df[["id", "t", "u"]])
    assert pred.index.name == "id" and sorted(pred.index) == sorted(df["id"].unique())
    assert list(pred.columns) == ["prediction", "prob_a", "prob_b"]
    np.testing.assert_allclose(pred[["prob_a", "prob_b"]].sum(axis=1), 1.0)
    scores = series_clf.evaluate(df)
    assert set(scores) == {"accuracy", "majority_accuracy"}
    assert scores["majority_accuracy"] == 0.5
    assert scores["accuracy"] >= 0.9  # the classes differ by their mean level
    h = series_clf.history
    assert "val_accuracy" in h.columns and h["val_accuracy"].notna().all()


def test_series_target_as_a_series_and_evaluate_with_labels():
    df = frame(8)
    labels = df.groupby("id")["kind"].first()
    res = vlrnn.pack_and_train(df[["id", "t", "u"]], series_target=labels, epochs=1, **OPTS)
    with pytest.raises(ValueError, match="series_target=labels"):
        res.evaluate(df[["id", "t", "u"]])
    scores = res.evaluate(df[["id", "t", "u"]], series_target=labels)
    assert 0.0 <= scores["accuracy"] <= 1.0
    more = pd.concat([labels, pd.Series({"ghost": "a"})])
    with pytest.warns(DataWarning, match=r"labels for 1 id\(s\) that are not in .*'ghost'"):
        res.evaluate(df[["id", "t", "u"]], series_target=more)


def test_series_regression_reports_errors_in_label_units():
    df = frame(8)
    labels = df.groupby("id")["u"].mean() * 100 + 7.0  # floats: regression
    res = vlrnn.pack_and_train(df[["id", "t", "u"]], series_target=labels, epochs=2, **OPTS)
    assert res.config["task"] == "regression" and res.config["level"] == "series"
    pred = res.predict(df)
    assert list(pred.columns) == ["prediction"] and len(pred) == 8
    scores = res.evaluate(df[["id", "t", "u"]], series_target=labels)
    assert set(scores) == {"mae", "rmse", "persistence_mae", "persistence_rmse"}
    # the naive baseline predicts the training mean label, in label units
    base = np.abs(labels - res.config["mean_label"]).mean()
    assert scores["persistence_mae"] == pytest.approx(base)


def test_save_load_keeps_task_classes_and_scalers(series_clf, forecaster, tmp_path):
    df = frame(seed=3)
    for res in (series_clf, forecaster):
        loaded = TrainedModel.load(res.save(tmp_path / "m.pt"))
        assert loaded.config == res.config
        pd.testing.assert_frame_equal(loaded.predict(df), res.predict(df))
    loaded = TrainedModel.load(forecaster.save(tmp_path / "f.pt"))
    pd.testing.assert_frame_equal(loaded.forecast(df), forecaster.forecast(df))


# -- per-step classification -----------------------------------------------------------
def test_per_step_classification_predicts_labels_and_probabilities():
    df = frame(8)[["id", "t", "u", "state"]]
    res = vlrnn.pack_and_train(df, target_cols="state", epochs=2, **OPTS)
    assert res.classes == ["hi", "lo"]
    pred = res.predict(df.sample(frac=1.0, random_state=0))
    assert list(pred.columns) == ["state_pred", "prob_hi", "prob_lo"]
    assert set(pred["state_pred"]) <= {"hi", "lo"}
    scores = res.evaluate(df)
    want = (df["state"] == res.config["majority_class"]).mean()
    assert scores["majority_accuracy"] == pytest.approx(want)


def test_integer_target_needs_a_task_and_task_classification_takes_it():
    df = frame(6)[["id", "t", "u", "state"]]
    df["code"] = (df.pop("state") == "hi").astype(int)
    with pytest.raises(ValueError, match="task='classification' or task='regression'"):
        vlrnn.pack_and_train(df, target_cols="code", epochs=1, **OPTS)
    res = vlrnn.pack_and_train(df, target_cols="code", task="classification", epochs=1,
                               **OPTS)
    assert res.classes == [0, 1]
    res = vlrnn.pack_and_train(df, target_cols="code", task="regression", epochs=1, **OPTS)
    assert "code_pred" in res.predict(df).columns


# -- forecasting -----------------------------------------------------------------------
def test_forecast_extends_each_series_by_its_step(forecaster):
    df = frame()
    fc = forecaster.forecast(df)
    assert list(fc.columns) == ["id", "t", "y"] and len(fc) == 3 * df["id"].nunique()
    last = df.groupby("id")["t"].max()
    for sid, part in fc.groupby("id"):
        assert part["t"].tolist() == [last[sid] + k for k in (1, 2, 3)]
    # datetimes with a daily step
    dated = df.assign(t=pd.Timestamp("2024-01-01") + pd.to_timedelta(df["t"], unit="D"))
    fc2 = forecaster.forecast(dated)
    one = fc2[fc2["id"] == "s0"]["t"].tolist()
    end = dated[dated["id"] == "s0"]["t"].max()
    assert one == [end + pd.Timedelta(days=k) for k in (1, 2, 3)]
    np.testing.assert_allclose(fc2["y"], fc["y"])


def test_forecast_never_reads_the_future(forecaster):
    df = frame()
    base = forecaster.predict(df)
    later = df.copy()
    cut = (later["id"] == "s1") & (later["t"] >= 5)
    later.loc[cut, ["u", "y"]] = 1e3  # change everything from step 5 on
    changed = forecaster.predict(later)
    early = (df["id"] == "s1") & (df["t"] < 5)
    pd.testing.assert_frame_equal(changed[early], base[early])
    assert not np.allclose(changed[cut], base[cut])


def test_forecast_evaluate_has_persistence_baseline(forecaster):
    scores = forecaster.evaluate(frame())
    assert set(scores) == {"mae", "rmse", "persistence_mae", "persistence_rmse", "mase",
                           "smape", "persistence_mase", "persistence_smape", "drift_mase",
                           "drift_smape", "holt_mase", "holt_smape"}
    assert all(np.isfinite(v) for v in scores.values())
    cols = forecaster.predict(frame()).columns.tolist()
    assert cols == ["y_h1", "y_h2", "y_h3"]


# -- missing targets -------------------------------------------------------------------
def test_missing_targets_are_counted_masked_and_left_out_of_metrics():
    df = frame(8)[["id", "t", "u", "y"]]
    df.loc[df.index % 5 == 2, "y"] = np.nan
    n_nan = int(df["y"].isna().sum())
    with pytest.warns(DataWarning, match=f"{n_nan} of {len(df)} target values are missing"):
        res = vlrnn.pack_and_train(df, target_cols="y", epochs=2, **OPTS)
    assert np.isfinite(res.history["train_loss"]).all()
    pred = res.predict(df)
    assert pred["y_pred"].notna().all()  # every step still predicted
    scores = res.evaluate(df)
    seen = df["y"].notna()
    want = np.abs(pred.loc[seen, "y_pred"] - df.loc[seen, "y"]).mean()
    assert scores["mae"] == pytest.approx(want)


def test_trainer_monitor_early_stops_on_a_maximised_metric():
    df = frame(10)[["id", "t", "u", "kind"]]
    res = vlrnn.pack_and_train(df, series_target="kind", epochs=6, lr=0.0,
                               early_stopping_patience=2, monitor="val_accuracy", **OPTS)
    # lr=0: accuracy never improves after epoch 1, so patience 2 stops at epoch 3
    assert res.history["epoch"].tolist() == [1, 2, 3]
    assert res.trainer.best_epoch == 1
    assert res.trainer.best_score == res.history["val_accuracy"].iloc[0]


# -- errors ----------------------------------------------------------------------------
def test_errors_name_the_series_or_column():
    df = frame(6)
    x = df[["id", "t", "u"]]
    bad = df.copy()
    bad.loc[(bad["id"] == "s2") & (bad["t"] == 3), "kind"] = "z"
    with pytest.raises(ValueError, match=r"not constant within series 's2'"):
        vlrnn.pack_and_train(bad[["id", "t", "u", "kind"]], series_target="kind", **OPTS)
    labels = df.groupby("id")["kind"].first().drop("s4")
    with pytest.raises(ValueError, match=r"no label for series 's4'"):
        vlrnn.pack_and_train(x, series_target=labels, **OPTS)
    one = df.assign(kind="a")
    with pytest.raises(ValueError, match=r"single class \['a'\]|single class 'a'"):
        vlrnn.pack_and_train(one[["id", "t", "u", "kind"]], series_target="kind", **OPTS)
    with pytest.raises(ValueError, match=r"horizon=20 is longer than series 's"):
        vlrnn.pack_and_train(df[["id", "t", "u", "y"]], target_cols="y", horizon=20, **OPTS)
    with pytest.raises(ValueError, match="either target_cols .* or series_target"):
        vlrnn.pack_and_train(df, target_cols="y", series_target="kind", **OPTS)


def test_unseen_class_and_irregular_time_are_errors(series_clf, forecaster):
    df = frame()
    new = df[["id", "t", "u", "kind"]].copy()
    new.loc[new["id"] == "s3", "kind"] = "c"
    with pytest.raises(ValueError, match=r"class\(es\) 'c' in series 's3'.*not trained on"):
        series_clf.evaluate(new)
    gappy = df[~((df["id"] == "s5") & (df["t"] == 4))]
    with pytest.raises(ValueError, match=r"series 's5' is too irregular"):
        forecaster.forecast(gappy)
    with pytest.raises(ValueError, match="forecast needs a model trained with horizon"):
        series_clf.forecast(df)
