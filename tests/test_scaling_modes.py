"""scale='global'|'series'|None: per-series scaling never reads a later row (per-step
tasks and forecasts), puts the level back on output, and travels with save/load; forecast
MASE/sMAPE and the drift baseline against hand-computed values."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import vlrnn
from vlrnn.data._series_scaling import causal_diff_scale, causal_stats, series_stats
from vlrnn.training._forecast_metrics import drift_forecasts, naive_scale, scaled_scores
from vlrnn.training._pipeline import TrainedModel

OPTS = {"id_col": "id", "time_col": "t", "hidden_size": 8, "num_layers": 1, "block_len": 8,
        "batch_size": 4, "progress": False, "device": "cpu", "epochs": 2}


def frame(n_series: int = 8, seed: int = 0) -> pd.DataFrame:
    """Ragged series of very different levels; y follows u with one step of delay."""
    rng = np.random.default_rng(seed)
    parts = []
    for s in range(n_series):
        T = int(rng.integers(10, 30))
        level = 10.0 ** (s % 4)
        u = level * (1 + 0.1 * rng.normal(size=T).cumsum())
        parts.append(pd.DataFrame({"id": f"s{s}", "t": np.arange(T), "u": u,
                                   "y": np.r_[u[0], u[:-1]],
                                   "state": np.where(np.diff(u, prepend=u[0]) > 0, "up",
                                                     "down")}))
    return pd.concat(parts, ignore_index=True)


def test_causal_stats_read_only_the_past():
    x = torch.randn(20, 3, dtype=torch.float64) * 5 + 100
    loc, scale = causal_stats(x)
    for t in (0, 1, 7, 19):
        past = x[:t + 1]
        assert torch.allclose(loc[t], past.mean(0))
        if t > 0:
            assert torch.allclose(scale[t], past.std(0, unbiased=False))
    later = x.clone()
    later[10:] = -1e6
    loc2, scale2 = causal_stats(later)
    assert torch.equal(loc2[:10], loc[:10]) and torch.equal(scale2[:10], scale[:10])
    d = causal_diff_scale(x)
    assert torch.allclose(d[5], (x[1:6] - x[:5]).abs().mean(0))
    assert torch.allclose(d[0], 0.1 * x[0].abs())     # no change yet: 0.1 |level|
    mean, std = series_stats(torch.full((4, 1), 3.0))
    assert mean.item() == 3.0 and std.item() == pytest.approx(0.3)  # constant: the floor


@pytest.mark.parametrize("target,extra", [("y", {}), ("y", {"horizon": 3}),
                                          ("state", {})])
@pytest.mark.parametrize("scale", ["series", "global", None])
def test_prediction_never_depends_on_a_later_row(target, extra, scale):
    cols = ["id", "t", "u", target] if target == "state" or extra else ["id", "t", "u", "y"]
    df = frame()[cols]
    res = vlrnn.pack_and_train(df, target_cols=target, scale=scale, **extra, **OPTS)
    assert res.config["scale"] == scale
    base = res.predict(df)
    later = df.copy()
    cut = (later["id"] == "s2") & (later["t"] >= 6)
    later.loc[cut, "u"] = 1e4
    if extra:
        later.loc[cut, "y"] = -1e4
    changed = res.predict(later)
    early = (df["id"] == "s2") & (df["t"] < 6)
    pd.testing.assert_frame_equal(changed[early], base[early])
    assert not changed[cut].equals(base[cut])


def test_series_scaled_forecast_puts_the_level_back(tmp_path):
    df = frame()[["id", "t", "u", "y"]]
    res = vlrnn.pack_and_train(df, target_cols="y", horizon=2, scale="series", **OPTS)
    big = df.copy()
    big[["u", "y"]] *= 1000.0           # every series 1000 times larger
    # same seed on the larger panel: every scaled input and target is the same, so the
    # forecasts are 1000 times larger (the level and scale put back on output)
    res_big = vlrnn.pack_and_train(big, target_cols="y", horizon=2, scale="series", **OPTS)
    fc, fc_big = res.forecast(df), res_big.forecast(big)
    np.testing.assert_allclose(fc_big["y"], 1000.0 * fc["y"], rtol=1e-3)
    # inputs: the causal z-scores of u and y beside their global z-scores, and y's change
    assert res.config["n_features"] == 2 * 2 + 1
    loaded = TrainedModel.load(res.save(tmp_path / "m.pt"))
    assert loaded.config["scale"] == "series" and loaded.scaler.mode == "series"
    pd.testing.assert_frame_equal(loaded.forecast(df), fc)


def test_series_scale_for_series_tasks_ignores_each_series_level():
    df = frame()[["id", "t", "u"]]
    labels = pd.Series({f"s{s}": "ab"[s % 2] for s in range(8)})
    res = vlrnn.pack_and_train(df, series_target=labels, scale="series", **OPTS)
    shifted = df.assign(u=df["u"] * 3.0 + 7.0)   # each series' z-scores unchanged
    pd.testing.assert_frame_equal(res.predict(shifted), res.predict(df), atol=1e-5)


def test_scale_true_is_the_task_default_and_bad_values_are_refused():
    df = frame()[["id", "t", "u", "y"]]
    assert vlrnn.pack_and_train(df, target_cols="y", horizon=2, **OPTS
                                ).config["scale"] == "series"
    assert vlrnn.pack_and_train(df, target_cols="y", **OPTS).config["scale"] == "global"
    with pytest.raises(ValueError, match="scale must be 'global', 'series', None"):
        vlrnn.pack_and_train(df, target_cols="y", scale="per-series", **OPTS)


def test_mase_smape_and_drift_by_hand():
    y = np.array([[1.0], [3.0], [2.0], [6.0]])
    assert naive_scale(y).tolist() == [(2 + 1 + 4) / 3]
    assert np.isnan(naive_scale(np.ones((5, 1))))[0]           # never changes: undefined
    drift = drift_forecasts(np.array([[1.0], [3.0], [5.0]]), 2)
    np.testing.assert_allclose(drift, [[1, 1], [5, 7], [7, 9]])
    pred = [np.array([[2.0, 4.0]]), np.array([[10.0, 0.0]])]
    true = [np.array([[1.0, np.nan]]), np.array([[10.0, 1.0]])]
    scores = scaled_scores(pred, true, [np.array([2.0, 2.0]), np.array([1.0, 1.0])], "x_")
    assert scores["x_mase"] == pytest.approx(np.mean([0.5, 0.5]))
    assert scores["x_smape"] == pytest.approx(np.mean([200 / 3, (0 + 200) / 2]))


def test_evaluate_persistence_mase_matches_its_definition():
    df = frame()[["id", "t", "u", "y"]]
    res = vlrnn.pack_and_train(df, target_cols="y", horizon=1, **OPTS)
    scores = res.evaluate(df)
    per = []
    for _, part in df.groupby("id"):
        y = part["y"].to_numpy()
        per.append(np.mean(np.abs(y[1:] - y[:-1])) / np.mean(np.abs(np.diff(y))))
    assert scores["persistence_mase"] == pytest.approx(np.mean(per))  # = 1 by definition
    assert scores["persistence_mase"] == pytest.approx(1.0)


def test_series_scaled_forecasts_read_the_change_and_train_on_the_scaled_absolute_error():
    from vlrnn.training._losses import masked_l1, masked_mse, task_losses
    df = frame()[["id", "t", "u", "y"]]
    res = vlrnn.pack_and_train(df, target_cols="y", horizon=2, scale="series", **OPTS)
    ds, _ = vlrnn.training._frames.task_dataset(df, res.task, with_targets=False)
    seen = res.scaler.inputs(ds, res.task)
    assert seen.feature_cols[-1] == "y@change"
    y = ds.xs[0][:, -1:].double()                        # the raw y of the first series
    want = torch.zeros_like(y)
    want[1:] = (y[1:] - y[:-1]) / causal_diff_scale(y)[1:]
    torch.testing.assert_close(seen.xs[0][:, -1:].double(), want, rtol=1e-5, atol=1e-6)
    assert task_losses(res.model, res.task, None)[0] is masked_l1
    glob = vlrnn.pack_and_train(df, target_cols="y", horizon=2, scale="global", **OPTS)
    assert task_losses(glob.model, glob.task, None)[0] is masked_mse
    assert glob.config["n_features"] == 2
    out = torch.tensor([[1.0, 2.0]], requires_grad=True)
    loss = masked_l1(out, torch.tensor([[3.0, float("nan")]]))
    loss.sum().backward()
    assert loss.tolist() == [[2.0, 0.0]] and out.grad.tolist() == [[-1.0, 0.0]]
