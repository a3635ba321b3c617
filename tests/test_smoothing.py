"""The damped-trend smoothing anchor of forecasts (vlrnn.data._smoothing.causal_holt)."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

import vlrnn
from vlrnn import TrainedModel
from vlrnn.data._smoothing import GRID, causal_holt


def reference(y: np.ndarray, h: int) -> np.ndarray:
    """One column, plain loops: every setting run on its own, the best so far taken."""
    T = len(y)
    out = np.full((T, h), np.nan)
    states = []
    for a, b, p in GRID:
        level = trend = None
        err, rows = 0.0, []
        for t in range(T):
            v = y[t]
            if level is None:
                if math.isfinite(v):
                    level, trend = v, 0.0
            else:
                f = level + p * trend
                if math.isfinite(v):
                    err += abs(v - f)
                    new = a * v + (1 - a) * f
                    trend = b * (new - level) + (1 - b) * p * trend
                    level = new
                else:
                    level, trend = f, p * trend
            rows.append(None if level is None else
                        (err, [level + sum(p ** j for j in range(1, k + 1)) * trend
                               for k in range(1, h + 1)]))
        states.append(rows)
    for t in range(T):
        if states[0][t] is None:
            continue
        errs = [s[t][0] for s in states]
        lo = min(errs)
        g = next(i for i, e in enumerate(errs) if e <= lo * (1 + 1e-9))
        out[t] = states[g][t][1]
    return out


def series(seed, T, k=1, nan=()):
    rng = np.random.default_rng(seed)
    y = 50 + np.cumsum(rng.normal(0.3, 1.0, size=(T, k)), 0) + rng.normal(size=(T, k))
    for t in nan:
        y[t] = np.nan
    return torch.tensor(y)


@pytest.mark.parametrize("nan", [(), (0, 1), (5, 6, 7, 20)])
def test_matches_the_recursion_run_setting_by_setting(nan):
    ys = [series(0, 30, 2, nan), series(1, 12, 2)]
    out = causal_holt(ys, 3)
    for y, o in zip(ys, out):
        assert o.shape == (len(y), 3 * 2) and o.dtype == torch.float64
        for c in range(2):
            ref = reference(y[:, c].numpy(), 3)
            np.testing.assert_allclose(o[:, c::2].numpy(), ref, rtol=1e-12, atol=1e-9)


def test_a_row_reads_no_later_row():
    y = series(2, 40)
    base = causal_holt([y], 4)[0]
    later = y.clone()
    later[25:] = -1e6
    changed = causal_holt([later], 4)[0]
    torch.testing.assert_close(changed[:25], base[:25], rtol=0, atol=0)
    assert not torch.equal(changed[25:], base[25:])


def test_ragged_series_run_together_as_one_by_one():
    ys = [series(s, T) for s, T in enumerate([5, 40, 17])]
    together = causal_holt(ys, 2)
    for y, o in zip(ys, together):
        torch.testing.assert_close(o, causal_holt([y], 2)[0], rtol=0, atol=0)


def test_forecasts_scale_with_the_series():
    ys = [series(s, 30) for s in range(4)]
    small = causal_holt(ys, 3)
    big = causal_holt([1000.0 * y for y in ys], 3)
    for a, b in zip(small, big):
        torch.testing.assert_close(b, 1000.0 * a, rtol=1e-12, atol=0)


def test_persistence_at_the_first_step_a_constant_stays_and_a_line_goes_on():
    flat = torch.full((20, 1), 7.0)
    torch.testing.assert_close(causal_holt([flat], 3)[0], torch.full((20, 3), 7.0,
                                                                     dtype=torch.float64))
    line = torch.arange(60.0)[:, None] * 2.0 + 5.0
    out = causal_holt([line], 2)[0]
    assert out[0].tolist() == [5.0, 5.0]                 # step 0: the value itself
    assert abs(out[-1, 0] - 125.0) < 0.5 and abs(out[-1, 1] - 127.0) < 1.0
    assert out[-1, 1] > out[-1, 0] > line[-1, 0]         # it extrapolates the trend


def test_before_the_first_value_is_nan():
    y = series(3, 10, nan=(0, 1, 2))
    out = causal_holt([y], 2)[0]
    assert torch.isnan(out[:3]).all() and torch.isfinite(out[3:]).all()
    assert out[3].tolist() == [float(y[3, 0])] * 2


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="horizon must be >= 1"):
        causal_holt([series(0, 5)], 0)
    with pytest.raises(ValueError, match=r"2-D tensors \(T, K\); series 1 is shape \(5,\)"):
        causal_holt([series(0, 5), torch.zeros(5)], 2)
    with pytest.raises(ValueError, match="the same columns"):
        causal_holt([series(0, 5), series(0, 5, 2)], 2)
    assert causal_holt([], 3) == []


# -- the anchor in pack_and_train ----------------------------------------------------------
def panel(n=6, seed=0):
    rng = np.random.default_rng(seed)
    parts = []
    for s in range(n):
        T = int(rng.integers(20, 40))
        y = 10.0 ** (s % 3) * (5 + np.cumsum(rng.normal(0.2, 1.0, size=T)))
        parts.append(pd.DataFrame({"id": f"s{s}", "t": np.arange(T), "y": y}))
    return pd.concat(parts, ignore_index=True)


OPTS = dict(id_col="id", time_col="t", target_cols="y", horizon=3, hidden_size=8,
            num_layers=1, epochs=2, progress=False)


def test_default_anchor_is_holt_and_is_saved(tmp_path):
    df = panel()
    res = vlrnn.pack_and_train(df, **OPTS)
    assert res.scaler.anchor == "holt" and res.config["anchor"] == "holt"
    fc = res.forecast(df)
    assert np.isfinite(fc["y"]).all()
    loaded = TrainedModel.load(res.save(tmp_path / "m.pt"))
    assert loaded.scaler.anchor == "holt"
    pd.testing.assert_frame_equal(loaded.forecast(df), fc)


def test_anchors_give_different_targets_from_the_same_model():
    df = panel()
    holt = vlrnn.pack_and_train(df, **OPTS)
    last = vlrnn.pack_and_train(df, anchor="last", **OPTS)
    assert last.scaler.anchor == "last" and last.config["anchor"] == "last"
    # same seed, same inputs: only the anchor the outputs are added to differs
    assert not np.allclose(holt.forecast(df)["y"], last.forecast(df)["y"])


def test_anchor_outside_series_scaled_forecasts_is_refused():
    df = panel()
    with pytest.raises(ValueError, match="anchor must be one of"):
        vlrnn.pack_and_train(df, anchor="ets", **OPTS)
    with pytest.raises(ValueError, match="needs a forecast .* scale='series'"):
        vlrnn.pack_and_train(df, anchor="holt", scale="global", **OPTS)
    opts = {k: v for k, v in OPTS.items() if k != "horizon"}
    with pytest.raises(ValueError, match="needs a forecast"):   # a per-step regression
        vlrnn.pack_and_train(df.assign(u=2.0 * df["y"]), anchor="last", **opts)


def test_evaluate_scores_the_anchor_as_a_baseline():
    df = panel()
    res = vlrnn.pack_and_train(df, ensemble=1, **OPTS)
    scores = res.evaluate(df)
    assert np.isfinite(scores["holt_mase"]) and np.isfinite(scores["holt_smape"])
    assert scores["holt_mase"] != scores["mase"]
    # a network that outputs 0 forecasts the anchor itself: its scores are holt's
    with torch.no_grad():
        res.model.head.weight.zero_()
        res.model.head.bias.zero_()
    zero = res.evaluate(df)
    assert zero["mase"] == pytest.approx(scores["holt_mase"], rel=1e-9)
    assert zero["smape"] == pytest.approx(scores["holt_smape"], rel=1e-9)
