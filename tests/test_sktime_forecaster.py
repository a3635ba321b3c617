"""vlrnn.sktime.RNNForecaster: sktime's forecaster checks, and what they do not check.

One model over every series of a panel (a global forecaster): it learns (beats the last
value on a panel of phase-shifted sines), relative and absolute ``fh`` agree, exogenous
``X`` is an input, hierarchies keep their index, ``update`` extends the history, and the
model is the one ``pack_and_train(horizon=h)`` trains on the same long frame.
"""
from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

sktime = pytest.importorskip("sktime")  # pip install -e ".[test]" installs it

from sktime.forecasting.base import ForecastingHorizon
from sktime.utils.estimator_checks import check_estimator

import vlrnn
from vlrnn._estimators import FORECASTER_OPTIONS
from vlrnn._estimators._core import TEST_PARAMS
from vlrnn.sktime import RNNForecaster

FH = [1, 2, 3, 4, 5]


def test_sktime_check_estimator():
    results = check_estimator(RNNForecaster, raise_exceptions=False, verbose=False)
    failed = {name: str(err)[:500] for name, err in results.items() if err != "PASSED"}
    assert len(results) > 500
    assert not failed, failed


def sines(n=8, T=80, seed=0):
    t = np.arange(T)
    rng = np.random.default_rng(seed)
    return pd.concat({k: pd.DataFrame({"v": np.sin(t / 4 + k) + 0.05 * rng.normal(size=T)})
                      for k in range(n)})


def split(y, at):
    step = y.index.get_level_values(-1)
    return y[step < at], y[(step >= at) & (step < at + len(FH))]


def test_global_model_learns_a_panel():
    train, test = split(sines(), 70)
    f = RNNForecaster(hidden_size=16, num_layers=1, epochs=30, progress=False).fit(
        train, fh=FH)
    pred = f.predict()
    assert pred.index.equals(test.index) and list(pred.columns) == ["v"]
    mae = np.abs(pred["v"] - test["v"]).mean()
    last = np.repeat(train.groupby(level=0).tail(1)["v"].to_numpy(), len(FH))
    assert mae < 0.6 * np.abs(last - test["v"].to_numpy()).mean()


def test_absolute_and_relative_fh_agree_on_a_dated_series():
    y = pd.DataFrame({"a": np.sin(np.arange(40) / 3), "b": np.cos(np.arange(40) / 5)},
                     index=pd.date_range("2024-01-01", periods=40, freq="D"))
    rel = RNNForecaster(**TEST_PARAMS).fit(y, fh=[1, 2, 3]).predict()
    when = pd.date_range("2024-02-10", periods=3, freq="D")
    absolute = RNNForecaster(**TEST_PARAMS).fit(
        y, fh=ForecastingHorizon(when, is_relative=False)).predict()
    assert rel.index.equals(when) and absolute.index.equals(when)
    pd.testing.assert_frame_equal(rel, absolute)


def test_exogenous_x_is_an_input_and_hierarchy_keeps_its_index():
    idx = pd.MultiIndex.from_product([["north", "south"], ["a", "b"], range(30)],
                                     names=["region", "store", "day"])
    rng = np.random.default_rng(1)
    X = pd.DataFrame({"price": rng.normal(size=len(idx))}, index=idx)
    y = pd.DataFrame({"sales": X["price"].to_numpy() + rng.normal(size=len(idx))},
                     index=idx)
    with_x = RNNForecaster(**TEST_PARAMS).fit(y, X=X, fh=[1, 2])
    assert with_x.model_.config["feature_cols"] == ["x0"]
    pred = with_x.predict(X=None)
    assert pred.index.names == ["region", "store", "day"] and len(pred) == 4 * 2
    assert pred.index.get_level_values("day").tolist() == [30, 31] * 4
    without = RNNForecaster(**TEST_PARAMS).fit(y, fh=[1, 2]).predict()
    assert not np.allclose(pred.to_numpy(), without.to_numpy())


def test_update_extends_the_history_without_refitting():
    y = sines(n=3, T=50)
    first, later = y[y.index.get_level_values(1) < 40], y[y.index.get_level_values(1) >= 40]
    f = RNNForecaster(**TEST_PARAMS).fit(first, fh=[1, 2])
    model, before = f.model_, f.predict()
    f.update(later, update_params=False)
    after = f.predict()
    assert f.model_ is model
    assert after.index.get_level_values(1).tolist() == [50, 51] * 3
    assert not np.allclose(before.to_numpy(), after.to_numpy())


def test_same_model_as_pack_and_train_and_pickle():
    y = sines(n=4, T=30)
    f = RNNForecaster(**TEST_PARAMS).fit(y, fh=[1, 2, 3])
    t = y.groupby(level=0).cumcount().to_numpy()
    frame = pd.DataFrame({"series": y.index.get_level_values(0), "t": t,
                          "y0": y["v"].to_numpy()})
    ref = vlrnn.pack_and_train(frame, id_col="series", time_col="t", target_cols=["y0"],
                               horizon=3, **TEST_PARAMS)
    want = ref.forecast(frame)["y0"].to_numpy()
    np.testing.assert_array_equal(f.predict()["v"].to_numpy(), want)
    back = pickle.loads(pickle.dumps(f))
    pd.testing.assert_frame_equal(back.predict(), f.predict())
    assert tuple(RNNForecaster().get_params()) == tuple(sorted(FORECASTER_OPTIONS))


def test_in_sample_and_beyond_the_fitted_horizon_are_refused():
    y = sines(n=2, T=30)
    with pytest.raises(NotImplementedError, match="in-sample"):      # sktime says so
        RNNForecaster(**TEST_PARAMS).fit(y, fh=[0, 1])
    f = RNNForecaster(**TEST_PARAMS).fit(y, fh=[1, 2])
    with pytest.raises(ValueError, match="re-fit"):                 # sktime says so
        f.predict(fh=[1, 2, 3])
