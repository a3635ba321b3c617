"""The forecast's validation split: the last ``horizon`` steps of every series."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

import vlrnn
from vlrnn.data import SeriesDataset
from vlrnn.training._forecast_split import last_window_split


def _future(values: torch.Tensor, h: int) -> torch.Tensor:
    """``(T, K)`` -> ``(T, h K)``: row t holds rows t+1..t+h (NaN past the end)."""
    T, K = values.shape
    pad = torch.cat([values, values.new_full((h, K), math.nan)])
    return torch.cat([pad[k:k + T] for k in range(1, h + 1)], 1)


def _dataset(lengths=(12, 4, 9), h=2, K=2) -> SeriesDataset:
    xs = [torch.arange(T * K, dtype=torch.float64).view(T, K) + 100 * i
          for i, T in enumerate(lengths)]
    return SeriesDataset(xs, [_future(x, h) for x in xs],
                         ids=[f"s{i}" for i in range(len(lengths))],
                         feature_cols=[f"u{k}" for k in range(K)],
                         target_cols=[f"y{j}" for j in range(h * K)])


def test_train_never_reads_the_held_out_window_and_val_scores_only_it():
    h, K = 2, 2
    ds = _dataset(h=h, K=K)
    train, val = last_window_split(ds, h, K)
    assert train.lengths == [10, 4, 7]        # s1 (4 steps <= 2 h) stays whole in train
    assert val.ids == ["s0", "s2"] and val.lengths == [12, 9]
    for x, y, full_x in zip(train.xs, train.ys, ds.xs):
        c = x.shape[0]
        seen = y[torch.isfinite(y)]
        # every finite training target is a value from before the cut
        assert set(seen.tolist()) <= set(full_x[:c].flatten().tolist())
    # s0: row 9's targets are both steps of the window; row 8 keeps only its first step
    y0 = train.ys[0]
    assert torch.isnan(y0[9]).all() and torch.isfinite(y0[8, :K]).all()
    assert torch.isnan(y0[8, K:]).all()
    for y, full_y, c in zip(val.ys, (ds.ys[0], ds.ys[2]), (10, 7)):
        rows = torch.isfinite(y).any(1).nonzero().flatten().tolist()
        assert rows == [c - 1]
        assert torch.equal(y[c - 1], full_y[c - 1])       # the h held-out steps


def test_no_series_long_enough_gives_no_validation_and_bad_shapes_are_refused():
    ds = _dataset(lengths=(4, 3), h=2, K=2)
    train, val = last_window_split(ds, 2, 2)
    assert val is None and train.lengths == [4, 3]
    with pytest.raises(ValueError, match="expected targets of 3 x 2 = 6 columns, got 4"):
        last_window_split(ds, 3, 2)
    with pytest.raises(ValueError, match="horizon and n_targets must be >= 1"):
        last_window_split(ds, 0, 2)


def test_pack_and_train_forecasts_validate_on_the_last_window():
    rng = np.random.default_rng(0)
    df = pd.concat([pd.DataFrame({"id": k, "t": np.arange(30),
                                  "y": rng.normal(size=30).cumsum() * (k + 1)})
                    for k in range(3)], ignore_index=True)
    opts = dict(id_col="id", time_col="t", target_cols="y", horizon=3, hidden_size=4,
                num_layers=1, block_len=8, progress=False)
    res = vlrnn.pack_and_train(df, epochs=2, **opts)
    assert res.config["val_fraction"] == "last window"
    assert res.history["val_loss"].notna().all()              # all 3 series validate
    by_series = vlrnn.pack_and_train(df, epochs=2, val_fraction=0.34, **opts)
    assert by_series.config["val_fraction"] == 0.34
