"""vlrnn.sktime: sktime's own estimator checks on both classes, and what they do not check.

sktime's ``check_estimator`` runs its whole suite on each class (every scenario: equal and
unequal length, univariate and multivariate panels, pickling, cloning, idempotent fit, the
docstring examples). Then: sktime's own loaders and panel mtypes (unequal length,
multivariate), NaN refused as tagged, probabilities in ``classes_`` order, pickling,
parameters, the same model as vlrnn.aeon's, and the ImportError without sktime.
"""
from __future__ import annotations

import pickle
import sys

import numpy as np
import pandas as pd
import pytest

sktime = pytest.importorskip("sktime")  # pip install -e ".[test]" installs it

from sklearn.base import clone
from sktime.datasets import load_japanese_vowels
from sktime.datatypes import check_is_mtype, convert_to
from sktime.utils.estimator_checks import check_estimator

from vlrnn._estimators import CLASSIFIER_OPTIONS, REGRESSOR_OPTIONS
from vlrnn._estimators._core import TEST_PARAMS
from vlrnn.sktime import RNNClassifier, RNNRegressor


@pytest.mark.parametrize("cls", [RNNClassifier, RNNRegressor], ids=lambda c: c.__name__)
def test_sktime_check_estimator(cls):
    results = check_estimator(cls, raise_exceptions=False, verbose=False)
    failed = {name: str(err)[:500] for name, err in results.items() if err != "PASSED"}
    assert len(results) > 100
    assert not failed, failed


def panel(n=12, channels=2, seed=0, labels=("even", "odd")):
    """A pd-multiindex panel of ``n`` instances of lengths 5..24, and one label each."""
    rng = np.random.default_rng(seed)
    X = pd.concat({i: pd.DataFrame(rng.normal(size=(int(rng.integers(5, 25)), channels))
                                   + i % 2, columns=[f"v{j}" for j in range(channels)])
                   for i in range(n)})
    y = np.array([labels[i % 2] for i in range(n)])
    return X, y


def test_unequal_length_multivariate_from_sktime_loader():
    X, y = load_japanese_vowels(split="train", return_type="pd-multiindex")
    Xt, yt = load_japanese_vowels(split="test", return_type="pd-multiindex")
    lengths = X.groupby(level=0).size()
    assert lengths.nunique() > 1 and X.shape[1] == 12       # unequal, 12 variables
    keep = lengths.index[::3]                                # 90 instances, all 9 classes
    keep_t = Xt.index.get_level_values(0).unique()[::4]
    X, y = X.loc[keep], y[::3]
    Xt, yt = Xt.loc[keep_t], yt[::4]
    clf = RNNClassifier(hidden_size=16, num_layers=1, epochs=10, val_fraction=0.0,
                        progress=False, random_state=0).fit(X, y)
    proba = clf.predict_proba(Xt)
    assert proba.shape == (len(keep_t), 9)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-9)
    pred = clf.predict(Xt)
    np.testing.assert_array_equal(pred, clf.classes_[proba.argmax(axis=1)])
    assert (pred == yt).mean() > 0.6                         # chance: 1/9


@pytest.mark.parametrize("mtype", ["df-list", "nested_univ", "pd-multiindex"])
def test_every_unequal_panel_mtype_gives_the_same_model(mtype):
    X, y = panel()
    other = convert_to(X, to_type=mtype)
    assert check_is_mtype(other, mtype)
    ref = RNNClassifier(**TEST_PARAMS).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(RNNClassifier(**TEST_PARAMS).fit(other, y)
                                  .predict_proba(other), ref)


def test_numpy3d_and_regression():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(10, 3, 15))                         # (instances, variables, time)
    y = X[:, 0].mean(axis=1)
    reg = RNNRegressor(**TEST_PARAMS).fit(X, y)
    out = reg.predict(X)
    assert out.shape == (10,) and np.isfinite(out).all()
    assert reg.model_.config["n_features"] == 3


def test_missing_values_refused_as_tagged():
    assert RNNClassifier.get_class_tag("capability:missing_values") is False
    X, y = panel()
    X.iloc[7, 1] = np.nan
    with pytest.raises(ValueError, match="missing|NaN"):
        RNNClassifier(**TEST_PARAMS).fit(X, y)


def test_proba_columns_in_classes_order_and_pickle():
    X, y = panel(labels=("zeta", "alpha"))
    clf = RNNClassifier(**TEST_PARAMS).fit(X, y)
    assert clf.classes_.tolist() == ["alpha", "zeta"]
    proba = clf.predict_proba(X)
    own = clf.model_.predict(pd.DataFrame(  # the TrainedModel's own columns, by name
        {"series": X.index.get_level_values(0), "t": X.groupby(level=0).cumcount(),
         "f0": X["v0"].to_numpy(), "f1": X["v1"].to_numpy()}))
    np.testing.assert_allclose(proba, own[["prob_alpha", "prob_zeta"]].to_numpy(),
                               rtol=1e-12)
    back = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(back.predict_proba(X), proba)
    np.testing.assert_array_equal(back.predict(X), clf.predict(X))


def test_params_and_clone():
    assert tuple(RNNClassifier().get_params()) == tuple(sorted(CLASSIFIER_OPTIONS))
    assert tuple(RNNRegressor().get_params()) == tuple(sorted(REGRESSOR_OPTIONS))
    clf = RNNClassifier(hidden_size=8, random_state=2)
    other = clone(clf).set_params(hidden_size=4)
    assert (other.hidden_size, clf.hidden_size, other.random_state) == (4, 8, 2)
    assert clf.get_tag("capability:unequal_length") and clf.get_tag("capability:multivariate")


def test_same_model_as_vlrnn_aeon():
    aeon_mod = pytest.importorskip("vlrnn.aeon")
    X, y = panel()
    series = [g.to_numpy().T for _, g in X.groupby(level=0, sort=False)]
    a = aeon_mod.RNNClassifier(**TEST_PARAMS).fit(series, y).predict_proba(series)
    np.testing.assert_array_equal(RNNClassifier(**TEST_PARAMS).fit(X, y).predict_proba(X), a)


def test_import_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sktime", None)  # as if sktime were not installed
    monkeypatch.delitem(sys.modules, "vlrnn.sktime")
    with pytest.raises(ImportError, match=r'pip install "vlrnn\[sktime\]"'):
        import vlrnn.sktime  # noqa: F401
