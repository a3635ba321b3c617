"""vlrnn.data: StandardScaler and train/validation splits."""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import torch
from torch.nn.utils.rnn import pack_sequence

from vlrnn.data import StandardScaler, from_dataframe, split_series, split_time


def dataset(n_series=8, seed=0):
    """Series whose levels differ a lot, so a train-only mean differs from the full mean."""
    rng = np.random.default_rng(seed)
    parts = []
    for i in range(n_series):
        T = int(rng.integers(2, 15))
        parts.append(pd.DataFrame({"id": i, "t": np.arange(T),
                                   "a": rng.normal(10 * i, 1 + i, size=T),
                                   "b": rng.normal(-3, 0.5, size=T),
                                   "const": 4.0,
                                   "y": rng.normal(5 * i, 2, size=T)}))
    df = pd.concat(parts, ignore_index=True)
    df = df.iloc[rng.permutation(len(df))]
    return df, from_dataframe(df, id_col="id", time_col="t", target_cols="y",
                              dtype=torch.float64)


# --- scaler ---------------------------------------------------------------------------

def test_scaler_fitted_on_train_only():
    df, ds = dataset()
    train, val = split_series(ds, 0.25, seed=0)
    sc = StandardScaler().fit(train)
    rows = df[df["id"].isin(train.ids)][["a", "b", "const"]].to_numpy()
    assert torch.allclose(sc.mean, torch.tensor(rows.mean(0)), rtol=1e-12)
    assert torch.allclose(sc.std[:2], torch.tensor(rows.std(0)[:2]), rtol=1e-12)
    full = df[["a", "b", "const"]].to_numpy().mean(0)
    assert abs(sc.mean[0].item() - full[0]) > 0.1         # a full-data fit would fail here
    assert sc.std[2] == 1.0                                   # constant column: std 0 -> 1
    assert sc.columns == ["a", "b", "const"]
    # The scaled training features have mean 0 and std 1 (constant column: 0).
    z = torch.cat(StandardScaler().fit(train).transform(train).xs)
    assert torch.allclose(z.mean(0), torch.zeros(3), atol=1e-12)
    assert torch.allclose(z[:, :2].std(0, unbiased=False), torch.ones(2), atol=1e-12)
    assert torch.equal(z[:, 2], torch.zeros(len(z)))


def test_scaler_transform_does_not_mutate_and_round_trips():
    _, ds = dataset()
    before = [x.clone() for x in ds.xs]
    sc = StandardScaler().fit(ds)
    scaled = sc.transform(ds)
    assert scaled is not ds
    assert all(torch.equal(a, b) for a, b in zip(ds.xs, before))
    assert all(torch.equal(a, b) for a, b in zip(scaled.ys, ds.ys))     # targets untouched
    assert scaled.ids == ds.ids and scaled.lengths == ds.lengths
    back = sc.inverse_transform(scaled)
    assert all(torch.allclose(a, b, rtol=1e-12, atol=1e-12) for a, b in zip(back.xs, ds.xs))
    # Lists, plain tensors and PackedSequence give the same numbers.
    lst = sc.transform(ds.xs)
    assert all(torch.equal(a, b) for a, b in zip(lst, scaled.xs))
    packed = sc.transform(pack_sequence(ds.xs, enforce_sorted=False))
    assert torch.equal(packed.data, pack_sequence(scaled.xs, enforce_sorted=False).data)


def test_target_scaler_separate():
    _, ds = dataset()
    ysc = StandardScaler(targets=True).fit(ds)
    assert ysc.columns == ["y"]
    scaled = ysc.transform(ds)
    assert all(torch.equal(a, b) for a, b in zip(scaled.xs, ds.xs))
    y = torch.cat(scaled.ys)
    assert abs(y.mean().item()) < 1e-12
    pred = pack_sequence(scaled.ys, enforce_sorted=False)
    back = ysc.inverse_transform(pred)
    assert torch.allclose(back.data, pack_sequence(ds.ys, enforce_sorted=False).data)


def test_scaler_state_dict_round_trip_through_torch_save():
    _, ds = dataset()
    sc = StandardScaler().fit(ds)
    buf = io.BytesIO()
    torch.save({"scaler": sc.state_dict()}, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)["scaler"]
    sc2 = StandardScaler().load_state_dict(state)
    assert torch.equal(sc2.mean, sc.mean) and torch.equal(sc2.std, sc.std)
    assert sc2.columns == sc.columns and sc2.targets is False
    assert all(torch.equal(a, b) for a, b in zip(sc2.transform(ds).xs, sc.transform(ds).xs))


def test_scaler_errors():
    _, ds = dataset()
    with pytest.raises(RuntimeError, match="not fitted"):
        StandardScaler().transform(ds)
    sc = StandardScaler().fit(ds)
    with pytest.raises(ValueError, match="fitted on 3 columns"):
        sc.transform(torch.zeros(5, 2))
    other = ds.replace(xs=ds.xs)
    other.feature_cols = ["b", "a", "const"]
    with pytest.raises(ValueError, match=r"fitted on columns \['a', 'b', 'const'\]"):
        sc.transform(other)
    with pytest.raises(ValueError, match="missing key"):
        StandardScaler().load_state_dict({"mean": torch.zeros(3)})


# --- splits ---------------------------------------------------------------------------

def test_split_series_disjoint_complete_deterministic():
    _, ds = dataset(10)
    train, val = split_series(ds, 0.3, seed=4)
    assert len(val) == 3 and len(train) == 7
    assert set(train.ids).isdisjoint(val.ids)
    assert sorted(train.ids + val.ids) == sorted(ds.ids)
    for part in (train, val):
        for j, sid in enumerate(part.ids):
            i = ds.ids.index(sid)
            assert torch.equal(part[j][0], ds[i][0]) and torch.equal(part[j][1], ds[i][1])
            assert list(part.index[j]) == list(ds.index[i])
            assert list(part.times[j]) == list(ds.times[i])
    assert split_series(ds, 0.3, seed=4)[1].ids == val.ids
    assert {tuple(split_series(ds, 0.3, seed=s)[1].ids) for s in range(5)} != {tuple(val.ids)}


def test_split_series_keeps_one_in_each():
    _, ds = dataset(2)
    for f in (0.01, 0.99):
        train, val = split_series(ds, f)
        assert len(train) == 1 and len(val) == 1


def test_split_series_one_series_suggests_split_time():
    _, ds = dataset(1)
    with pytest.raises(ValueError, match="split_time"):
        split_series(ds)


def test_split_bad_fraction():
    _, ds = dataset(3)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        split_series(ds, 1.0)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        split_time(ds, 0.0)


def test_split_time_holds_out_the_end():
    _, ds = dataset(6)
    train, val = split_time(ds, 0.25)
    assert train.ids == val.ids == ds.ids
    for i, T in enumerate(ds.lengths):
        v = val.lengths[i]
        assert 1 <= v <= T - 1 and train.lengths[i] + v == T
        assert v == min(max(int(np.floor(T * 0.25 + 0.5)), 1), T - 1)
        assert torch.equal(torch.cat([train[i][0], val[i][0]]), ds[i][0])
        assert torch.equal(torch.cat([train[i][1], val[i][1]]), ds[i][1])
        assert list(train.index[i]) + list(val.index[i]) == list(ds.index[i])
        assert list(train.times[i]) + list(val.times[i]) == list(ds.times[i])
        assert max(train.times[i]) < min(val.times[i])


def test_split_time_single_step_series_raises():
    df = pd.DataFrame({"id": [1, 2, 2], "t": [0, 0, 1], "a": 1.0, "y": 0.0})
    ds = from_dataframe(df, id_col="id", time_col="t", target_cols="y", min_length=1)
    with pytest.raises(ValueError, match=r"single step.*id\(s\) 1"):
        split_time(ds)
