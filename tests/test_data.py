"""vlrnn.data.from_dataframe: round trip and one test per kind of bad input."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch.nn.utils.rnn import pad_packed_sequence

from vlrnn.data import DataWarning, SeriesDataset, collate_packed, from_dataframe

LENGTHS = {"s3": 3, "s1": 6, "s2": 2, "s4": 9}


def ragged_frame(seed: int = 0) -> pd.DataFrame:
    """4 series of different lengths, rows shuffled, index labels that are not positions."""
    rng = np.random.default_rng(seed)
    parts = []
    for sid, T in LENGTHS.items():
        parts.append(pd.DataFrame({
            "id": sid,
            "t": np.arange(T) * 2 + 10,
            "a": rng.normal(size=T),
            "b": rng.integers(-5, 5, size=T),
            "flag": rng.random(T) > 0.5,
            "y": rng.normal(size=T),
            "y2": rng.normal(size=T),
        }))
    df = pd.concat(parts, ignore_index=True)
    df.index = 1000 + 7 * np.arange(len(df))
    return df.iloc[rng.permutation(len(df))]


def load(df, **kw):
    kw.setdefault("dtype", torch.float64)
    return from_dataframe(df, id_col="id", time_col="t", target_cols=["y", "y2"], **kw)


# --- round trip ---------------------------------------------------------------------

def test_round_trip_through_packing():
    df = ragged_frame()
    ds = load(df)
    assert isinstance(ds, SeriesDataset)
    assert ds.ids == sorted(LENGTHS)
    assert ds.feature_cols == ["a", "b", "flag"]           # inferred, frame order, bool kept
    assert ds.target_cols == ["y", "y2"]
    assert ds.lengths == [LENGTHS[i] for i in ds.ids]
    # Pack the series in a scrambled order and unpack them again.
    order = [2, 0, 3, 1]
    xp, yp = collate_packed([ds[i] for i in order])
    xpad, xlen = pad_packed_sequence(xp, batch_first=True)
    ypad, ylen = pad_packed_sequence(yp, batch_first=True)
    assert torch.equal(xlen, ylen)
    for b, i in enumerate(order):
        sid = ds.ids[i]
        rows = df[df["id"] == sid].sort_values("t")
        T = len(rows)
        assert int(xlen[b]) == T
        want_x = torch.tensor(rows[["a", "b", "flag"]].to_numpy(dtype=float))
        want_y = torch.tensor(rows[["y", "y2"]].to_numpy(dtype=float))
        assert torch.equal(xpad[b, :T], want_x)
        assert torch.equal(ypad[b, :T], want_y)
        # .index maps every step back to its row of the input frame; .times is time order.
        assert list(ds.index[i]) == list(rows.index)
        assert list(ds.times[i]) == list(rows["t"])
        assert torch.equal(ds[i][0], torch.tensor(
            df.loc[ds.index[i], ["a", "b", "flag"]].to_numpy(dtype=float)))


def test_to_frame_aligns_with_input():
    df = ragged_frame(1)
    ds = load(df)
    preds = [x[:, :1] * 3 for x, _ in ds]
    out = ds.to_frame(preds, ["p"])
    joined = df.join(out["p"])
    assert np.array_equal(joined["p"].to_numpy(), joined["a"].to_numpy() * 3)
    back = ds.to_frame()                                  # targets by default
    assert np.array_equal(back.loc[df.index, ["y", "y2"]].to_numpy(),
                          df[["y", "y2"]].to_numpy())
    assert (back.loc[df.index, "id"] == df["id"]).all()


def test_single_names_and_default_dtype():
    ds = from_dataframe(ragged_frame(), id_col="id", time_col="t", target_cols="y",
                        feature_cols="a")
    assert ds.feature_cols == ["a"] and ds.target_cols == ["y"]
    x, y = ds[0]
    assert x.dtype == torch.float32 and x.shape == (ds.lengths[0], 1) and y.shape[1] == 1


def test_explicit_feature_cols_skip_string_column():
    df = ragged_frame().assign(note="text")
    ds = load(df, feature_cols=["b", "a"])
    assert ds.feature_cols == ["b", "a"]


def test_datetime_time_column():
    df = ragged_frame()
    df["t"] = pd.Timestamp("2024-01-01") + pd.to_timedelta(df["t"], unit="h")
    ds = load(df, check_regular=True)
    assert ds.lengths == [LENGTHS[i] for i in ds.ids]
    assert all(t.is_monotonic_increasing for t in ds.times)


def test_numeric_ids_sorted_as_numbers():
    df = pd.DataFrame({"id": [10, 2, 10, 2, 2], "t": [1, 1, 0, 0, 2],
                       "a": [1., 2, 3, 4, 5], "y": [0., 0, 0, 0, 0]})
    ds = from_dataframe(df, id_col="id", time_col="t", target_cols="y")
    assert ds.ids == [2, 10] and type(ds.ids[0]) is int
    assert ds[0][0].flatten().tolist() == [4, 2, 5]


def test_categorical_one_hot():
    df = pd.DataFrame({"id": [1, 1, 1, 2, 2], "t": [0, 1, 2, 0, 1],
                       "a": [1., 2, 3, 4, 5], "k": ["u", "v", "u", "w", "v"], "y": 0.0})
    ds = from_dataframe(df, id_col="id", time_col="t", target_cols="y", categorical="k")
    assert ds.feature_cols == ["a", "k=u", "k=v", "k=w"]
    assert ds.categories == {"k": ["u", "v", "w"]}
    assert ds[1][0].tolist() == [[4, 0, 0, 1], [5, 0, 1, 0]]
    with pytest.raises(ValueError, match=r"'k'.*outside its categories"):
        from_dataframe(df, id_col="id", time_col="t", target_cols="y",
                       categorical={"k": ["u", "v"]})


# --- bad input: one test each ---------------------------------------------------------

def test_not_a_dataframe():
    with pytest.raises(TypeError, match="pandas DataFrame"):
        from_dataframe({"id": [1]}, id_col="id", time_col="t", target_cols="y")


def test_missing_columns_listed():
    with pytest.raises(ValueError, match=r"\['tt', 'z'\] not in the frame.*'id', 't', 'a'"):
        from_dataframe(ragged_frame(), id_col="id", time_col="tt", target_cols=["y", "z"])


def test_empty_frame():
    with pytest.raises(ValueError, match="empty"):
        load(ragged_frame().iloc[:0])


def test_nan_id():
    df = ragged_frame()
    df.loc[df.index[3], "id"] = None
    with pytest.raises(ValueError, match=rf"id column 'id' has 1 missing.*{df.index[3]}"):
        load(df)


def test_nan_time():
    df = ragged_frame().astype({"t": float})
    df.loc[df.index[0], "t"] = np.nan
    with pytest.raises(ValueError, match=rf"time column 't' has 1 missing.*'{df['id'].iloc[0]}'"):
        load(df)


def test_string_time_refused():
    df = ragged_frame().astype({"t": str})
    with pytest.raises(ValueError, match="time column 't' has dtype .*pd.to_datetime"):
        load(df)


def bad_cell(col, value, sid="s1", t=14):
    df = ragged_frame()
    df.loc[(df["id"] == sid) & (df["t"] == t), col] = value
    return df


def test_nan_feature_raises_naming_column_id_time():
    with pytest.raises(ValueError, match=r"column 'a': 1 row\(s\), first at id='s1', t=14.*"
                                         r"on_nonfinite='drop'"):
        load(bad_cell("a", np.nan))


def test_inf_target_raises():
    with pytest.raises(ValueError, match=r"column 'y2': 1 row\(s\), first at id='s4', t=10"):
        load(bad_cell("y2", -np.inf, sid="s4", t=10))


def test_nan_feature_drop_warns():
    df = bad_cell("a", np.nan)
    with pytest.warns(DataWarning, match=r"dropped 1 of 20 rows.*'a'"):
        ds = load(df, on_nonfinite="drop")
    i = ds.ids.index("s1")
    assert ds.lengths[i] == LENGTHS["s1"] - 1
    assert 14 not in list(ds.times[i])
    assert torch.isfinite(ds[i][0]).all()


def test_drop_warns_about_series_that_vanish():
    df = ragged_frame()
    df.loc[df["id"] == "s2", "y"] = np.nan
    with pytest.warns(DataWarning, match=r"1 series lost all their rows: id\(s\) 's2'"):
        ds = load(df, on_nonfinite="drop")
    assert "s2" not in ds.ids


def test_nan_feature_ffill():
    df = bad_cell("a", np.nan)
    with pytest.warns(DataWarning, match="forward-filled 1"):
        ds = load(df, on_nonfinite="ffill")
    i = ds.ids.index("s1")
    times = list(ds.times[i])
    k = times.index(14)
    assert ds[i][0][k, 0] == ds[i][0][k - 1, 0]
    assert ds.lengths[i] == LENGTHS["s1"]


def test_ffill_leading_nan_raises():
    with pytest.raises(ValueError, match=r"ffill.*column 'b'.*leading.*id='s3', t=10"):
        load(bad_cell("b", np.nan, sid="s3", t=10), on_nonfinite="ffill")


def test_ffill_does_not_cross_series():
    # s2's first row must not be filled from the end of s1 (the row just before it).
    with pytest.raises(ValueError, match="leading"):
        load(bad_cell("a", np.nan, sid="s2", t=10), on_nonfinite="ffill")


def test_duplicate_id_time():
    df = ragged_frame()
    extra = df[(df["id"] == "s3") & (df["t"] == 12)]
    df = pd.concat([df, extra.rename(index=lambda i: -1)])
    with pytest.raises(ValueError, match=r"2 rows share an \('id', 't'\) pair.*\('s3', 12\)"):
        load(df)


def test_short_series_raise():
    with pytest.raises(ValueError, match=r"fewer than min_length=3 rows: id 's2' \(2 rows\)"):
        load(ragged_frame(), min_length=3)


def test_short_series_drop_warns():
    with pytest.warns(DataWarning, match=r"dropped 2 series .*'s2'.*'s3'"):
        ds = load(ragged_frame(), min_length=4, short_series="drop")
    assert ds.ids == ["s1", "s4"]


def test_all_series_short():
    with pytest.raises(ValueError, match="every series"):
        load(ragged_frame(), min_length=50, short_series="drop")


def test_string_feature_refused():
    df = ragged_frame().assign(note="text")
    with pytest.raises(ValueError, match=r"feature column 'note' has non-numeric dtype "
                                         r"(object|str).*map it to numbers.*feature_cols"):
        load(df)


def test_pandas_categorical_feature_refused():
    df = ragged_frame().assign(k=pd.Categorical(["u"] * 20))
    with pytest.raises(ValueError, match=r"feature column 'k' has non-numeric dtype category"):
        load(df)


def test_string_target_refused():
    df = ragged_frame().assign(y2="x")
    with pytest.raises(ValueError, match=r"target column 'y2' has non-numeric dtype"):
        load(df)


def test_no_feature_columns():
    df = ragged_frame()[["id", "t", "y", "y2"]]
    with pytest.raises(ValueError, match="no feature columns"):
        load(df)


def test_target_as_feature_refused():
    with pytest.raises(ValueError, match=r"\['y'\] are both targets and features"):
        load(ragged_frame(), feature_cols=["a", "y"])


def test_bad_options():
    with pytest.raises(ValueError, match="on_nonfinite must be one of"):
        load(ragged_frame(), on_nonfinite="zero")
    with pytest.raises(ValueError, match="short_series must be one of"):
        load(ragged_frame(), short_series="keep")
    with pytest.raises(ValueError, match="min_length must be an int >= 1"):
        load(ragged_frame(), min_length=0)
    with pytest.raises(ValueError, match="floating torch dtype"):
        load(ragged_frame(), dtype=torch.int64)


def test_irregular_grid_detected_when_asked():
    df = ragged_frame()
    df = df[~((df["id"] == "s4") & df["t"].isin([14, 16]))]     # gap after t=12
    df = df[~((df["id"] == "s1") & (df["t"] == 18))]            # gap after t=16
    load(df)                                                    # not checked by default
    with pytest.raises(ValueError, match=r"not on a regular grid in 2 series.*"
                                         r"id 's1' \(step 2\): gaps start after t=16.*"
                                         r"id 's4' \(step 2\): gaps start after t=12"):
        load(df, check_regular=True)


def test_regular_float_grid_passes():
    # Steps of 0.1 carry rounding noise (0.30000000000000004 - 0.2 != 0.1): not a gap.
    df = pd.DataFrame({"id": 0, "t": np.arange(30) * 0.1 + 1e-3, "a": 1.0, "y": 0.0,
                       "y2": 0.0})
    assert load(df, check_regular=True).lengths == [30]
    with pytest.raises(ValueError, match="regular grid"):
        load(df.drop(index=7), check_regular=True)
