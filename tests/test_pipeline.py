"""pack_and_train and TrainedModel: DataFrame in, trained model and aligned predictions out."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import vlrnn
from vlrnn.training._pipeline import TrainedModel


def ragged_frame(n_series: int = 8, seed: int = 0) -> pd.DataFrame:
    """Long-format frame; target y_t = 100 * (0.7 u_{t-1} + 0.3 v_t) + 1000."""
    rng = np.random.default_rng(seed)
    parts = []
    for s in range(n_series):
        T = int(rng.integers(6, 40))
        u, v = rng.normal(size=T), rng.normal(size=T)
        prev = np.r_[0.0, u[:-1]]
        parts.append(pd.DataFrame({"id": f"s{s}", "t": np.arange(T), "u": u, "v": v,
                                   "y": 100 * (0.7 * prev + 0.3 * v) + 1000}))
    return pd.concat(parts, ignore_index=True)


OPTS = dict(id_col="id", time_col="t", target_cols="y", hidden_size=8, num_layers=1,
            block_len=8, batch_size=3, lr=0.03, progress=False, device="cpu")


@pytest.fixture(scope="module")
def trained() -> TrainedModel:
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # the autouse fixture is function-scoped
    try:
        return vlrnn.pack_and_train(ragged_frame(), epochs=12, **OPTS)
    finally:
        torch.set_default_dtype(old)


def test_training_lowers_the_loss(trained):
    h = trained.history
    assert list(h["epoch"]) == list(range(1, 13))
    assert h["train_loss"].iloc[-1] < 0.5 * h["train_loss"].iloc[0]
    assert h["val_loss"].notna().all()
    assert trained.config["feature_cols"] == ["u", "v"]
    assert trained.scaler.features is not None and trained.scaler.targets is not None


def test_predict_one_row_per_input_row_aligned_with_the_index(trained):
    df = ragged_frame()
    shuffled = df.sample(frac=1.0, random_state=3)
    shuffled.index = [f"row{i}" for i in shuffled.index]  # any labels, any order
    pred = trained.predict(shuffled)
    assert list(pred.columns) == ["y_pred"]
    assert pred.index.equals(shuffled.index)
    assert pred["y_pred"].notna().all()
    ref = trained.predict(df)
    assert np.allclose(pred["y_pred"].to_numpy(),
                       ref.loc[[int(i[3:]) for i in shuffled.index], "y_pred"].to_numpy())
    # inverse-scaled: in target units, and the fit is far better than the mean
    err = ((ref["y_pred"] - df["y"]) ** 2).mean()
    assert err < 0.5 * df["y"].var()


def test_predict_matches_the_model_on_each_series(trained):
    df = ragged_frame()
    pred = trained.predict(df, block_len=5)
    fs, ts = trained.scaler.features, trained.scaler.targets
    for _sid, part in df.groupby("id"):
        x = fs.transform(torch.tensor(part[["u", "v"]].to_numpy()))
        with torch.no_grad():
            y, _ = trained.model(x.unsqueeze(1))  # (T, 1, F): one dense sequence
        want = ts.inverse_transform(y[:, 0]).squeeze(1).numpy()
        np.testing.assert_allclose(pred.loc[part.index, "y_pred"].to_numpy(), want,
                                   rtol=1e-9)


def test_predict_needs_no_targets_but_needs_features(trained):
    df = ragged_frame().drop(columns="y")
    assert len(trained.predict(df)) == len(df)
    with pytest.raises(ValueError, match=r"\['v'\]"):
        trained.predict(df.drop(columns="v"))


def test_save_load_round_trip(trained, tmp_path):
    path = trained.save(tmp_path / "model.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]
    loaded = TrainedModel.load(path)
    df = ragged_frame(seed=4)
    pd.testing.assert_frame_equal(loaded.predict(df), trained.predict(df))
    assert loaded.config == trained.config
    pd.testing.assert_frame_equal(loaded.history, trained.history)


def test_no_validation_custom_cell_and_unscaled():
    df = ragged_frame(4)
    res = vlrnn.pack_and_train(df, epochs=2, val_fraction=0, scale=False, cell=nn.GRUCell,
                               **OPTS)
    assert res.history["val_loss"].isna().all()
    assert isinstance(res.model.rnn, vlrnn.models.StackedRNN)
    assert res.config["cell"] == "torch.nn.modules.rnn:GRUCell"
    assert res.scaler.features is None
    assert len(res.predict(df)) == len(df)


def test_custom_cell_survives_save_load(tmp_path):
    df = ragged_frame(4)
    res = vlrnn.pack_and_train(df, epochs=1, val_fraction=0, cell=nn.RNNCell, **OPTS)
    loaded = TrainedModel.load(res.save(tmp_path / "m.pt"))
    pd.testing.assert_frame_equal(loaded.predict(df), res.predict(df))


def test_resume_checks_the_config(tmp_path):
    df = ragged_frame(4)
    vlrnn.pack_and_train(df, epochs=1, checkpoint_dir=tmp_path, **OPTS)
    opts = dict(OPTS, hidden_size=6)
    with pytest.raises(ValueError, match="hidden_size: checkpoint 8, now 6"):
        vlrnn.pack_and_train(df, epochs=2, resume=tmp_path, **opts)
    res = vlrnn.pack_and_train(df, epochs=2, resume=tmp_path, checkpoint_dir=tmp_path, **OPTS)
    assert res.history["epoch"].tolist() == [1, 2]


def test_bad_input_errors():
    df = ragged_frame(4)
    with pytest.raises(ValueError, match="nope"):
        vlrnn.pack_and_train(df, epochs=1, **dict(OPTS, target_cols="nope"))
    with pytest.raises(ValueError, match="unknown cell"):
        vlrnn.pack_and_train(df, epochs=1, cell="transformer", **OPTS)


def test_auto_epochs_aims_for_steps_within_a_row_budget():
    from vlrnn.training._pipeline import AUTO_ROWS, AUTO_STEPS, auto_epochs
    assert auto_epochs(AUTO_STEPS // 20, 100) == (20, False)   # ~AUTO_STEPS optimizer steps
    assert auto_epochs(10 * AUTO_STEPS, 100) == (10, False)    # at least 10 epochs
    assert auto_epochs(1, 100) == (100, False)                 # at most 100
    assert auto_epochs(6, AUTO_ROWS // 4) == (4, True)         # long epochs: the row budget
    assert auto_epochs(6, 10 * AUTO_ROWS) == (1, True)         # at least one epoch


def test_epochs_none_stops_at_the_row_budget_and_says_so(monkeypatch, capsys):
    import vlrnn.training._pipeline as pipeline
    df = ragged_frame(6)
    monkeypatch.setattr(pipeline, "AUTO_ROWS", 3 * len(df))   # > 3 epochs of training rows
    opts = {**OPTS, "progress": True}
    res = vlrnn.pack_and_train(df, epochs=None, val_fraction=0, **opts)
    n_rows = len(df)  # no validation split: every row trains
    assert len(res.history) == 3
    assert f"chose 3 epochs: {n_rows:,} training rows an epoch" in capsys.readouterr().err
