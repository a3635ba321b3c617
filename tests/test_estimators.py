"""The shared core under vlrnn.aeon and vlrnn.sktime (needs neither framework).

What the core promises: the estimators' parameters are pack_and_train's options (a renamed
or dropped option fails here), ``None`` passes nothing (so pack_and_train's defaults are
the estimators' defaults), ``random_state`` becomes ``seed``, and the fitted model is the
one pack_and_train trains on the same frame. ``import vlrnn`` needs neither extra.
"""
from __future__ import annotations

import inspect
import subprocess
import sys

import numpy as np
import pytest
import torch

import vlrnn
from vlrnn._estimators import (
    CLASSIFIER_OPTIONS,
    FORECASTER_OPTIONS,
    REGRESSOR_OPTIONS,
    as_series_list,
    fit_series_model,
    import_extra,
    predict_proba,
    predict_values,
    train_options,
)
from vlrnn._estimators._core import TEST_PARAMS
from vlrnn.data import from_arrays

TINY = dict(TEST_PARAMS)


def ragged(n=12, channels=2, seed=0):
    """``n`` series ``(channels, T_i)``, T_i in 5..24, and a label that depends on them."""
    rng = np.random.default_rng(seed)
    X = [rng.normal(size=(channels, int(rng.integers(5, 25)))) for _ in range(n)]
    X = [x + (i % 2) for i, x in enumerate(X)]
    y = np.array(["odd" if i % 2 else "even" for i in range(n)])
    return X, y


def test_options_are_pack_and_train_options():
    trainer = set(inspect.signature(vlrnn.Trainer.__init__).parameters)
    pat = set(inspect.signature(vlrnn.pack_and_train).parameters)
    own = {"train_options", "random_state"}
    for name in CLASSIFIER_OPTIONS:
        if name not in own:
            assert name in pat or name in trainer, name
    assert set(CLASSIFIER_OPTIONS) - set(REGRESSOR_OPTIONS) == {"class_weight"}
    assert set(REGRESSOR_OPTIONS) - set(FORECASTER_OPTIONS) == {"pool"}


def test_none_passes_nothing_and_random_state_is_seed():
    assert train_options(dict.fromkeys(CLASSIFIER_OPTIONS)) == {}
    opts = train_options(dict(dict.fromkeys(REGRESSOR_OPTIONS), hidden_size=8,
                              random_state=3, train_options={"schedule": "two_level"}))
    assert opts == {"hidden_size": 8, "seed": 3, "schedule": "two_level"}
    assert train_options({"random_state": np.random.RandomState(0)})["seed"] == \
        train_options({"random_state": np.random.RandomState(0)})["seed"]
    with pytest.raises(ValueError, match="random_state for seed"):
        train_options({"random_state": None, "train_options": {"seed": 1}})
    with pytest.raises(ValueError, match="hidden_size"):
        train_options({"hidden_size": None, "train_options": {"hidden_size": 1}})
    with pytest.raises(TypeError, match="random_state must be"):
        train_options({"random_state": "zero"})
    with pytest.raises(TypeError, match="train_options must be a dict"):
        train_options({"train_options": ["schedule"]})


def test_same_model_as_pack_and_train():
    X, y = ragged()
    model = fit_series_model(X, y, "classification", TINY)
    data = from_arrays(X, y, channels_first=True)
    ref = vlrnn.pack_and_train(data.frame, task="classification", **data.train_kwargs,
                               **TINY)
    for (k, a), b in zip(model.model.state_dict().items(), ref.model.state_dict().values()):
        assert torch.equal(a, b), k
    want = ref.predict(data.frame).iloc[:, 1:].to_numpy()
    np.testing.assert_array_equal(predict_proba(model, X), want)
    assert model.trainer is None  # let go: not needed to predict, not picklable


def test_proba_columns_follow_the_order_asked_for():
    X, y = ragged()
    model = fit_series_model(X, y, "classification", TINY)
    p = predict_proba(model, X)
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-12)
    assert model.classes == ["even", "odd"]
    np.testing.assert_array_equal(predict_proba(model, X, np.array(["odd", "even"])),
                                  p[:, ::-1])
    with pytest.raises(ValueError, match="not among the model's classes"):
        predict_proba(model, X, ["even", "nope"])


def test_regression_values_and_channel_check():
    X, _ = ragged()
    y = np.array([x.mean() for x in X])
    model = fit_series_model(X, y, "regression", TINY)
    out = predict_values(model, X)
    assert out.shape == (len(X),) and out.dtype == np.float64 and np.isfinite(out).all()
    with pytest.raises(ValueError, match="fitted on series of 2 channel"):
        predict_values(model, [x[:1] for x in X])


def test_collections_and_nan():
    X3 = np.zeros((3, 2, 7))
    assert [x.shape for x in as_series_list(X3)] == [(2, 7)] * 3
    with pytest.raises(ValueError, match=r"expected a 2-D array \(n_channels"):
        as_series_list([np.zeros(4)])
    with pytest.raises(TypeError, match="expected a 3-D array"):
        as_series_list("series")
    X, y = ragged()
    X[3][1, 2] = np.nan
    with pytest.raises(ValueError, match=r"series 3 .*non-finite"):
        fit_series_model(X, y, "classification", TINY)


def test_import_extra_names_the_extra():
    with pytest.raises(ImportError, match=r'pip install "vlrnn\[nothere\]"'):
        import_extra("vlrnn_no_such_module", "nothere")


def test_import_vlrnn_needs_neither_framework():
    code = ("import sys, vlrnn, vlrnn._estimators; "
            "bad = [m for m in ('aeon', 'sktime') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_class_weight_as_a_dict_by_class():
    X, y = ragged()
    model = fit_series_model(X, y, "classification", dict(TINY, class_weight={"odd": 3.0}))
    assert model.config["class_weight"] == [1.0, 3.0]          # classes: even, odd
    with pytest.raises(ValueError, match=r"class_weight names classes \['nope'\]"):
        fit_series_model(X, y, "classification", dict(TINY, class_weight={"nope": 2.0}))
