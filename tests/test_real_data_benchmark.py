"""benchmarks/real_data.py: the rolling forecast origins and the peers' registry."""
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("statsmodels")   # the panels ship with it (the test extra)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import real_data  # noqa: E402
import real_sets  # noqa: E402


def _panel() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.concat([pd.DataFrame({"id": k, "t": np.arange(n), "y": rng.normal(size=n).cumsum()})
                      for k, n in (("a", 30), ("b", 24))], ignore_index=True)


def test_origin_zero_is_the_default_split_and_later_ones_step_back_h():
    panel = _panel()
    tr0, te0 = real_data._origin(panel, 4, 0)
    ref_tr, ref_te = real_sets.holdout(panel, 4)
    pd.testing.assert_frame_equal(tr0, ref_tr)
    pd.testing.assert_frame_equal(te0, ref_te)
    tr2, te2 = real_data._origin(panel, 4, 2)
    # series "a" (t 0..29): 8 values dropped, then t 18..21 held out
    assert te2[te2["id"] == "a"]["t"].tolist() == [18, 19, 20, 21]
    assert tr2[tr2["id"] == "a"]["t"].max() == 17
    assert te2[te2["id"] == "b"]["t"].tolist() == [12, 13, 14, 15]


def test_origin_too_far_back_says_so():
    with pytest.raises(ValueError, match="fewer than 2 h \\+ 2 = 10"):
        real_data._origin(_panel(), 4, 4)          # series "b" keeps 8 values
    real_data._origin(_panel(), 4, 3)              # "b" keeps 12: 8 to train on


def test_run_panel_averages_every_method_over_the_origins(monkeypatch):
    monkeypatch.setitem(real_data.PANELS, "toy", (_panel, 3, None))
    opts = {"epochs": 1, "hidden_size": 4, "num_layers": 1}
    one = [real_data.run_panel("toy", opts, 0, False, 1)]
    back = real_data._origin
    # the second origin alone: shift the panel so that its default split is origin 1
    monkeypatch.setattr(real_data, "_origin", lambda p, h, k: back(p, h, k + 1))
    one.append(real_data.run_panel("toy", opts, 0, False, 1))
    monkeypatch.setattr(real_data, "_origin", back)
    both = real_data.run_panel("toy", opts, 0, False, 2)
    assert [r["method"] for r in both] == ["vlrnn defaults", "persistence", "drift"]
    for i, row in enumerate(both):
        assert row["origins"] == 2 and row["n"] == 2 and row["h"] == 3
        assert row["mase"] == pytest.approx((one[0][i]["mase"] + one[1][i]["mase"]) / 2)
        assert np.isfinite(row["smape"])
    assert "origins" not in one[0][0]


def test_unknown_peer_is_refused():
    pytest.importorskip("aeon")
    with pytest.raises(ValueError, match="unknown peer 'ROCKET'"):
        real_data._peer_estimator("ROCKET", False, 0)
    assert {type(real_data._peer_estimator(p, r, 0)).__name__ for p in real_data.PEERS
            for r in (False, True)} >= {"RDSTClassifier", "Catch22Regressor"}
