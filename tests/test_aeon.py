"""vlrnn.aeon: aeon's own estimator checks on both classes, and what they do not check.

aeon's suite (``parametrize_with_checks``) fits each class on its test collections
(equal and unequal length, univariate and multivariate, "np-list" and "numpy3D"), checks
outputs, cloning, pickling, determinism and the tags. Then: aeon's own loaders (unequal
length, multivariate), NaN refused as tagged, probabilities in ``classes_`` order,
pickling and the model's own file, parameters, and the ImportError without aeon.
"""
from __future__ import annotations

import doctest
import pickle
import subprocess
import sys

import numpy as np
import pytest

aeon = pytest.importorskip("aeon")  # pip install -e ".[test]" installs it

from aeon.datasets import load_basic_motions, load_japanese_vowels
from aeon.testing.data_generation import make_example_3d_numpy_list
from aeon.testing.estimator_checking import parametrize_with_checks
from sklearn.base import clone
from sklearn.model_selection import cross_val_score

import vlrnn
from vlrnn._estimators import CLASSIFIER_OPTIONS, REGRESSOR_OPTIONS
from vlrnn._estimators._core import TEST_PARAMS
from vlrnn.aeon import RNNClassifier, RNNRegressor


@parametrize_with_checks([RNNClassifier, RNNRegressor])
def test_aeon_estimator_checks(check):
    check()


def subset(X, y, step):
    return [X[i] for i in range(0, len(X), step)], y[::step]


def test_unequal_length_multivariate_from_aeon_loader():
    X, y = load_japanese_vowels(split="train")        # 12 channels, lengths 7..29
    Xt, yt = load_japanese_vowels(split="test")
    assert isinstance(X, list) and len({x.shape[1] for x in X}) > 1
    X, y = subset(X, y, 3)                            # 90 series, all 9 classes
    Xt, yt = subset(Xt, yt, 4)
    clf = RNNClassifier(hidden_size=16, num_layers=1, epochs=10, val_fraction=0.0,
                        progress=False, random_state=0).fit(X, y)
    proba = clf.predict_proba(Xt)
    assert proba.shape == (len(Xt), 9)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-9)
    pred = clf.predict(Xt)
    np.testing.assert_array_equal(pred, clf.classes_[proba.argmax(axis=1)])
    assert (pred == yt).mean() > 0.6                  # chance: 1/9


def test_equal_length_multivariate_numpy3d_from_aeon_loader():
    X, y = load_basic_motions(split="train")          # (40, 6, 100)
    assert isinstance(X, np.ndarray) and X.shape[1] == 6
    clf = RNNClassifier(**TEST_PARAMS).fit(X, y)
    assert clf.predict_proba(X).shape == (40, 4)
    assert clf.model_.config["n_features"] == 6


def test_all_defaults_give_a_working_model():
    X, y = make_example_3d_numpy_list(n_cases=12, n_channels=2, min_n_timepoints=5,
                                      max_n_timepoints=15, random_state=0)
    clf = RNNClassifier(progress=False).fit(X, y)
    assert clf.model_.config["hidden_size"] == 64      # pack_and_train's default
    assert set(clf.predict(X)) <= set(clf.classes_)
    X, y = make_example_3d_numpy_list(n_cases=12, n_channels=2, regression_target=True,
                                      random_state=0)
    assert np.isfinite(RNNRegressor(progress=False).fit(X, y).predict(X)).all()


def test_missing_values_refused_as_tagged():
    assert RNNClassifier.get_class_tag("capability:missing_values") is False
    X, y = make_example_3d_numpy_list(n_cases=8, n_channels=2, random_state=0)
    X[2][1, 3] = np.nan
    with pytest.raises(ValueError, match="[Mm]issing"):
        RNNClassifier(**TEST_PARAMS).fit(X, y)


def test_proba_columns_in_classes_order():
    X, _ = make_example_3d_numpy_list(n_cases=12, n_channels=1, random_state=1)
    y = np.array([30, 4, 200] * 4)                    # sorted as numbers, not as text
    clf = RNNClassifier(**TEST_PARAMS).fit(X, y)
    assert clf.classes_.tolist() == [4, 30, 200]
    frame = clf.model_.predict(
        vlrnn.data.from_arrays(X, channels_first=True, id_col="series").frame)
    want = frame[[f"prob_{c}" for c in clf.classes_]].to_numpy()
    np.testing.assert_array_equal(clf.predict_proba(X), want)
    assert clf.predict(X).dtype == clf.classes_.dtype


def test_pickle_and_the_models_own_file(tmp_path):
    X, y = make_example_3d_numpy_list(n_cases=10, n_channels=2, random_state=2)
    clf = RNNClassifier(**TEST_PARAMS).fit(X, y)
    back = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(back.predict_proba(X), clf.predict_proba(X))
    path = clf.model_.save(tmp_path / "model.pt")  # the TrainedModel pack_and_train gives
    loaded = vlrnn.TrainedModel.load(path)
    frame = vlrnn.data.from_arrays(X, channels_first=True, id_col="series").frame
    np.testing.assert_allclose(loaded.predict(frame).iloc[:, 1:].to_numpy(),
                               clf.predict_proba(X), rtol=1e-12)


def test_params_clone_and_random_state():
    clf = RNNClassifier(hidden_size=8, random_state=3)
    assert tuple(clf.get_params()) == tuple(sorted(CLASSIFIER_OPTIONS))
    assert tuple(RNNRegressor().get_params()) == tuple(sorted(REGRESSOR_OPTIONS))
    assert all(v is None for k, v in RNNRegressor().get_params().items())
    other = clone(clf).set_params(hidden_size=4)
    assert (other.hidden_size, clf.hidden_size, other.random_state) == (4, 8, 3)
    X, y = make_example_3d_numpy_list(n_cases=10, n_channels=2, random_state=3)
    a = RNNClassifier(**TEST_PARAMS, random_state=5).fit(X, y).predict_proba(X)
    b = RNNClassifier(**TEST_PARAMS, random_state=5).fit(X, y).predict_proba(X)
    c = RNNClassifier(**TEST_PARAMS, random_state=6).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_cross_validation():
    X, y = make_example_3d_numpy_list(n_cases=12, n_channels=2, random_state=4)
    scores = cross_val_score(RNNClassifier(**TEST_PARAMS), X, y, cv=3)
    assert scores.shape == (3,) and ((0 <= scores) & (scores <= 1)).all()


def test_import_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "aeon", None)    # as if aeon were not installed
    monkeypatch.delitem(sys.modules, "vlrnn.aeon")
    with pytest.raises(ImportError, match=r'pip install "vlrnn\[aeon\]"'):
        import vlrnn.aeon  # noqa: F401


def test_docstring_examples_run():
    import vlrnn.aeon as module

    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 10 and result.failed == 0


def test_reload_in_a_fresh_process(tmp_path):
    X, y = make_example_3d_numpy_list(n_cases=10, n_channels=2, random_state=5)
    clf = RNNClassifier(**TEST_PARAMS).fit(X, y)
    (tmp_path / "clf.pkl").write_bytes(pickle.dumps(clf))
    (tmp_path / "X.pkl").write_bytes(pickle.dumps(X))
    # the fresh process reads X in float64 as this one does (conftest): TrainedModel
    # builds its input tensors in torch's default dtype before casting to the model's
    code = ("import pickle, sys, numpy as np, torch; d = sys.argv[1]; "
            "torch.set_default_dtype(torch.float64); "
            "clf = pickle.load(open(d + '/clf.pkl', 'rb')); "
            "X = pickle.load(open(d + '/X.pkl', 'rb')); "
            "np.save(d + '/proba.npy', clf.predict_proba(X))")
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, timeout=300)
    np.testing.assert_array_equal(np.load(tmp_path / "proba.npy"), clf.predict_proba(X))
