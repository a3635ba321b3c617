"""The scan models by name: pack_and_train(cell=...), save/load, and the CLI's --cell."""
from __future__ import annotations

import pandas as pd
import pytest
import torch
from test_pipeline import OPTS, ragged_frame

import vlrnn
from vlrnn.cli import _commands as commands
from vlrnn.models import MODELS, build_named_model
from vlrnn.training._pipeline import TrainedModel


def test_registry_names_and_errors():
    assert {"mingru", "minlstm", "lru", "mamba", "qrnn"} <= set(MODELS)
    m = build_named_model("MinGRU", 3, 5, num_layers=2)
    assert isinstance(m, vlrnn.models.MinGRU) and m.num_layers == 2
    with pytest.raises(ValueError, match=r"unknown model 'gru2'; expected one of"):
        build_named_model("gru2", 3, 5)
    # the CLI lists its choices without importing torch: the same names
    assert set(commands.CELLS) == {"lstm", "gru", "rnn"} | set(MODELS)


@pytest.mark.parametrize("cell", ["mingru", "minlstm", "lru", "mamba", "qrnn"])
def test_pack_and_train_by_name_then_save_and_load(cell, tmp_path):
    df = ragged_frame(4)
    torch.manual_seed(0)
    res = vlrnn.pack_and_train(df, epochs=2, val_fraction=0, cell=cell, **OPTS)
    assert isinstance(res.model.rnn, MODELS[cell])
    assert res.config["cell"] == cell
    assert res.history["train_loss"].notna().all()
    pred = res.predict(df)
    assert len(pred) == len(df) and pred.notna().all().all()
    loaded = TrainedModel.load(res.save(tmp_path / "m.pt"))  # no import, no trusted=
    pd.testing.assert_frame_equal(loaded.predict(df), pred)


def test_unknown_cell_names_the_models():
    with pytest.raises(ValueError, match=r"unknown cell 'mamba2'.*'mingru'"):
        vlrnn.pack_and_train(ragged_frame(2), epochs=1, cell="mamba2", **OPTS)


def test_cli_train_with_a_scan_model(tmp_path):
    from test_cli import TRAIN

    from vlrnn import cli
    csv = tmp_path / "d.csv"
    ragged_frame(4).rename(columns={"y": "target"}).to_csv(csv, index=False)
    args = [a if a != "y" else "target" for a in TRAIN]
    out = tmp_path / "run"
    assert cli.main(["train", str(csv), *args, "--epochs", "1", "--cell", "minlstm",
                     "--out", str(out)]) == 0
    loaded = TrainedModel.load(out / "model.pt")
    assert loaded.config["cell"] == "minlstm"
    assert isinstance(loaded.model.rnn, vlrnn.models.MinLSTM)


@pytest.mark.parametrize("cell", ["mingru", "lru", "mamba"])
def test_series_task_reads_the_last_output(cell):
    """A series task (pool last, mean, max): MinGRU's last output is its state; LRU's and
    Mamba's is carried by SequenceModel. The "last" feature equals the model's output at
    each sequence's last step, through the engine's blocks."""
    df = ragged_frame(5)
    labels = pd.Series(["a", "b", "a", "b", "a"], index=[f"s{i}" for i in range(5)])
    # front=None: the recurrent model itself reads the input (a conv front end, the
    # series default, would put its own features in front of it)
    res = vlrnn.pack_and_train(df, series_target=labels, epochs=1, val_fraction=0,
                               cell=cell, front=None, **{**OPTS, "target_cols": None})
    out = res.predict(df)
    assert len(out) == 5 and set(out["prediction"]) <= {"a", "b"}
    model = res.model
    n_in = model.rnn.input_size
    seqs = [torch.randn(n, n_in, dtype=torch.float64) for n in (9, 3, 14)]
    model.double()
    x = torch.nn.utils.rnn.pack_sequence(seqs, enforce_sorted=False)
    state = vlrnn.block_loss(model, None, x, None, block_len=4).state
    last = model.features(state)[:, :model.hidden_size]
    for j, s in enumerate(seqs):
        y, _ = model.rnn(s.unsqueeze(1))
        torch.testing.assert_close(last[j], y[-1, 0], rtol=1e-10, atol=1e-12)
