"""vlrnn.data.from_arrays (list of (T_i, F) arrays -> long frame) and read_ts (.ts files)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from vlrnn.data import ArrayFrame, from_arrays, from_dataframe, read_ts

DATA = Path(__file__).resolve().parent.parent / "examples" / "data"


def ragged(seed: int = 0, lengths=(5, 2, 9), F: int = 3):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(T, F)) for T in lengths]


# --- round trip ---------------------------------------------------------------------

def test_round_trip_through_from_dataframe():
    X = ragged()
    out = from_arrays(X, ["a", "b", "a"])
    assert isinstance(out, ArrayFrame)
    frame, labels = out                       # unpacks as a pair
    assert list(frame.columns) == ["id", "t", "f0", "f1", "f2"]
    assert len(frame) == sum(len(x) for x in X)
    assert labels.index.name == "id" and labels.tolist() == ["a", "b", "a"]
    assert labels.index.tolist() == [0, 1, 2]
    # from_dataframe (the training path) recovers each array exactly, in order
    ds = from_dataframe(frame.assign(y=0.0), id_col="id", time_col="t", target_cols="y",
                        dtype=torch.float64, min_length=1)
    assert ds.ids == [0, 1, 2] and ds.feature_cols == ["f0", "f1", "f2"]
    for i, x in enumerate(X):
        assert torch.equal(ds[i][0], torch.from_numpy(x))
    kw = out.train_kwargs
    assert kw["series_target"] is labels and kw["feature_cols"] == ["f0", "f1", "f2"]
    assert (kw["id_col"], kw["time_col"]) == ("id", "t") and "target_cols" not in kw


def test_ids_names_targets_and_label_dtypes_kept():
    X = ragged(1, lengths=(3, 4))
    y = [np.arange(3.0), np.array([1.0, np.nan, 2.0, 3.0])]   # NaN = missing target
    out = from_arrays(X, np.array([True, False]), targets=y, ids=["u", "v"],
                      feature_names=["a", "b", "c"], target_names="load",
                      id_col="unit", time_col="step")
    frame, labels = out
    assert list(frame.columns) == ["unit", "step", "a", "b", "c", "load"]
    assert frame["unit"].tolist() == ["u"] * 3 + ["v"] * 4
    assert frame["step"].tolist() == [0, 1, 2, 0, 1, 2, 3]
    assert np.isnan(frame["load"].iloc[4]) and frame["load"].iloc[2] == 2.0
    assert labels.dtype == bool and labels.index.tolist() == ["u", "v"]
    assert out.target_cols == ["load"] and out.train_kwargs["target_cols"] == ["load"]
    assert from_arrays(X, [3, 7])[1].dtype.kind == "i"        # integers stay integers
    assert from_arrays(X)[1] is None


def test_labels_series_aligned_by_id_or_position():
    X = ragged(3)
    by_id = pd.Series({"c": "z", "a": "x", "b": "y"})            # other order than ids
    assert from_arrays(X, by_id, ids=["a", "b", "c"])[1].tolist() == ["x", "y", "z"]
    assert from_arrays(X, pd.Series(["x", "y", "z"]))[1].tolist() == ["x", "y", "z"]
    with pytest.raises(ValueError, match="neither the series ids"):
        from_arrays(X, pd.Series(["x", "y", "z"], index=[5, 9, 12]))


def test_univariate_3d_and_channels_first_inputs():
    uni = from_arrays([np.arange(4.0), np.arange(2.0)]).frame
    assert list(uni.columns) == ["id", "t", "f0"] and uni["f0"].tolist() == [0, 1, 2, 3, 0, 1]
    cube = np.arange(2 * 3 * 4, dtype=float).reshape(2, 3, 4)       # (N, T, F)
    a = from_arrays(cube).frame
    assert a.shape == (6, 6) and a[["f0", "f1", "f2", "f3"]].to_numpy().tolist() == \
        cube.reshape(6, 4).tolist()
    # aeon/sktime order (F, T_i): same frame with channels_first=True
    X = ragged(2)
    b = from_arrays([x.T for x in X], channels_first=True).frame
    pd.testing.assert_frame_equal(b, from_arrays(X).frame)


# --- bad input: one clear error each ---------------------------------------------------

@pytest.mark.parametrize("arrays, labels, kw, match", [
    ([], None, {}, "arrays is empty"),
    ("abc", None, {}, "list of per-series arrays"),
    (pd.DataFrame({"a": [1]}), None, {}, "use vlrnn.data.from_dataframe"),
    (np.zeros((3, 4)), None, {}, "must be 3-D"),
    ([np.zeros((3, 2)), np.zeros((0, 2))], None, {}, r"series 1 \(id 1\) has 0 time steps"),
    ([np.zeros((3, 2)), np.zeros((3, 2, 1))], None, {}, r"series 1 .*\(3-D\)"),
    ([np.zeros((3, 2)), np.zeros((4, 3))], None, {}, "same number of features F"),
    ([np.zeros((3, 2)), np.array([["x", "y"]] * 3)], None, {}, "dtype <U1; expected numbers"),
    ([np.zeros((3, 2)), np.array([[1.0, np.nan]] * 3)], None, {},
     r"series 1 \(id 1\) has 3 non-finite .* first at step 0, column 'f1'"),
    ([np.array([[1.0, np.inf]] * 3)], None, {"allow_nan": True}, "infinite"),
    (ragged(), ["a", "b"], {}, "labels has 2 entries for 3 series"),
    (ragged(), ["a", None, "b"], {}, r"1 series have no label .*series 1 \(id 1\)"),
    (ragged(), [["a", "b"]] * 3, {}, "labels must be 1-D"),
    (ragged(), None, {"ids": ["a", "b", "a"]}, r"ids must be unique .*'a'"),
    (ragged(), None, {"ids": ["a", "b"]}, "ids has 2 entries for 3 series"),
    (ragged(), None, {"feature_names": ["x", "y"]}, "feature_names has 2 names"),
    (ragged(), None, {"feature_names": ["t", "y", "z"]}, "is used twice"),
    (ragged(), None, {"targets": [np.zeros(5), np.zeros(2)]}, "targets has 2 entries"),
    (ragged(), None, {"targets": [np.zeros(5), np.zeros(3), np.zeros(9)]},
     r"series 1 \(id 1\) has 3 steps but its features have 2"),
    (ragged(), None, {"target_names": ["y"]}, "target_names given without targets"),
    (ragged(), None, {"id_col": "t"}, "two different column names"),
])
def test_bad_input_is_refused_with_a_clear_error(arrays, labels, kw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        from_arrays(arrays, labels, **kw)


def test_channels_first_hint_when_arrays_look_transposed():
    X = [np.zeros((12, T)) for T in (7, 9, 20)]       # (F, T_i) given as (T_i, F)
    with pytest.raises(ValueError, match="pass channels_first=True"):
        from_arrays(X)


def test_nan_kept_with_allow_nan_for_on_nonfinite():
    X = [np.array([[1.0], [np.nan], [3.0]]), np.array([[4.0], [5.0]])]
    frame = from_arrays(X, allow_nan=True).frame
    assert np.isnan(frame["f0"].iloc[1])
    with pytest.warns(UserWarning, match="forward-filled 1"):
        ds = from_dataframe(frame.assign(y=0.0), id_col="id", time_col="t", target_cols="y",
                            on_nonfinite="ffill", dtype=torch.float64)
    assert ds[0][0].flatten().tolist() == [1.0, 1.0, 3.0]


# --- .ts files ------------------------------------------------------------------------

def test_read_ts_japanese_vowels_matches_its_header():
    X, y, header = read_ts(DATA / "JapaneseVowels_TRAIN.ts")
    assert header["problemname"] == "JapaneseVowels" and header["dimensions"] == "12"
    assert len(X) == len(y) == 270                       # 30 utterances x 9 speakers
    assert sorted(set(y)) == [str(k) for k in range(1, 10)]
    assert all(x.shape[1] == 12 for x in X)
    lengths = [x.shape[0] for x in X]
    assert min(lengths) == 7 and max(lengths) == 26 and len(set(lengths)) > 10
    # first value of the first series, as written in the file
    assert X[0][0, 0] == pytest.approx(1.860936) and X[0][0, 1] == pytest.approx(-0.207383)


def test_read_ts_missing_values_and_errors(tmp_path):
    good = tmp_path / "a.ts"
    good.write_text("# comment\n@problemName toy\n@dimensions 2\n@classLabel true x y\n@data\n"
                    "1,2,3:4,?,6:x\n7,8:9,10:y\n")
    X, y, _ = read_ts(good)
    assert y.tolist() == ["x", "y"] and X[0].shape == (3, 2) and np.isnan(X[0][1, 1])
    cases = {
        "@problemName toy\n1,2:x\n": "header line",
        "@problemName toy\n": "no '@data' line",
        "@classLabel true x\n@data\n1,2:z\n": "line 3: class label 'z'",
        "@dimensions 2\n@classLabel true x\n@data\n1,2:x\n": "1 dimensions, but the header",
        "@classLabel true x\n@data\n1,2:3:x\n": "different lengths",
        "@classLabel false\n@data\n1,a\n": "values must be numbers",
        "@timeStamps true\n@data\n(0,1)\n": "time-stamped",
    }
    for text, match in cases.items():
        bad = tmp_path / "bad.ts"
        bad.write_text(text)
        with pytest.raises(ValueError, match=match):
            read_ts(bad)


def test_read_ts_regression_targets(tmp_path):
    f = tmp_path / "reg.ts"
    f.write_text("@problemName toyreg\n@univariate false\n@dimensions 2\n@targetLabel true\n"
                 "@data\n1,2,3:4,5,6:0.25\n7,8:9,?:-1.5e2\n")
    X, y, header = read_ts(f)
    assert y.dtype == np.float64 and y.tolist() == [0.25, -150.0]
    assert header["targetlabel"] == "true"
    assert X[0].shape == (3, 2) and X[1].shape == (2, 2) and np.isnan(X[1][1, 1])
    frame, labels = from_arrays(X, y, allow_nan=True)   # float targets go through as labels
    assert len(frame) == 5 and labels.dtype == np.float64
    cases = {
        "@targetLabel true\n@data\n1,2:abc\n": "target value must be a number",
        "@targetLabel true\n@data\n1,2\n": "found no ':'",
        "@classLabel true a\n@targetLabel true\n@data\n1:a\n": "both @classLabel",
    }
    for text, match in cases.items():
        bad = tmp_path / "bad.ts"
        bad.write_text(text)
        with pytest.raises(ValueError, match=match):
            read_ts(bad)
