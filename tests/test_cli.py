"""The ``vlrnn`` command line, run as ``python -m vlrnn`` in a subprocess (and in-process)."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from vlrnn import cli
from vlrnn.training._pipeline import TrainedModel

TRAIN = ["--id-col", "id", "--time-col", "t", "--target", "y", "--hidden-size", "4",
         "--num-layers", "1", "--block-len", "8", "--batch-size", "2", "--no-progress"]


def vlrnn_cmd(*args: str, cwd) -> subprocess.CompletedProcess:
    # one thread: tiny ops on a busy 2-core machine are much slower with two
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "vlrnn", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def csv(tmp_path):
    rng = np.random.default_rng(0)
    parts = []
    for s, T in enumerate([7, 15, 4, 11, 9]):
        u = rng.normal(size=T)
        parts.append(pd.DataFrame({"id": s, "t": np.arange(T), "u": u,
                                   "y": np.r_[0.0, u[:-1]]}))
    path = tmp_path / "sensors.csv"
    pd.concat(parts).to_csv(path, index=False)
    return path


def test_help_lists_the_subcommands(tmp_path):
    r = vlrnn_cmd("--help", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "train" in r.stdout and "demo" in r.stdout and "examples:" in r.stdout
    r = vlrnn_cmd("train", "--help", cwd=tmp_path)
    assert r.returncode == 0 and "--id-col" in r.stdout and "--resume" in r.stdout


def test_train_writes_model_and_history(csv, tmp_path):
    r = vlrnn_cmd("train", str(csv), *TRAIN, "--epochs", "2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "runs" / "sensors"  # default --out: runs/<data file stem>
    assert {"model.pt", "history.csv", "last.pt", "best.pt"} <= {p.name for p in out.iterdir()}
    hist = pd.read_csv(out / "history.csv")
    assert hist["epoch"].tolist() == [1, 2]
    assert list(hist.columns) == ["epoch", "train_loss", "val_loss", "seconds", "steps_per_s",
                                  "lr", "skipped", "val_mae", "val_rmse"]
    assert "model.pt" in r.stdout and "validation loss" in r.stdout
    pred = TrainedModel.load(out / "model.pt").predict(pd.read_csv(csv))
    assert len(pred) == len(pd.read_csv(csv))


def test_missing_column_is_one_line_exit_2(csv, tmp_path):
    args = ["train", str(csv), *TRAIN]
    args[args.index("y")] = "load"
    r = vlrnn_cmd(*args, cwd=tmp_path)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vlrnn: error:") and "'load'" in lines[0]


def test_missing_file_and_debug_traceback(tmp_path, capsys):
    # in-process: the same main() the console script runs
    assert cli.main(["train", str(tmp_path / "none.csv"), *TRAIN]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vlrnn: error: data file") and "Traceback" not in err
    assert cli.main(["train", str(tmp_path / "none.csv"), *TRAIN, "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_bad_suffix_and_bad_numbers(tmp_path, capsys):
    p = tmp_path / "data.txt"
    p.write_text("a,b\n")
    assert cli.main(["train", str(p), *TRAIN]) == 2
    assert "expected .csv or .parquet" in capsys.readouterr().err
    assert cli.main(["train", str(p), *TRAIN, "--block-len", "0"]) == 2
    assert "--block-len must be >= 1" in capsys.readouterr().err


def test_resume_continues_the_run(csv, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", str(csv), *TRAIN, "--epochs", "1", "--out", str(out)]) == 0
    assert cli.main(["train", str(csv), *TRAIN, "--epochs", "2", "--out", str(out),
                     "--resume"]) == 0
    assert pd.read_csv(out / "history.csv")["epoch"].tolist() == [1, 2]
    capsys.readouterr()
    assert cli.main(["train", str(csv), *TRAIN, "--out", str(tmp_path / "new"),
                     "--resume"]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_series_target_then_predict_and_evaluate(csv, tmp_path, capsys):
    df = pd.read_csv(csv)
    csv = tmp_path / "labelled.csv"
    df.assign(kind=np.where(df["id"] % 2, "b", "a")).to_csv(csv, index=False)
    out = tmp_path / "run"
    args = ["train", str(csv), *TRAIN, "--epochs", "1", "--out", str(out), "--features", "u",
            "--bidirectional"]
    args[args.index("--target"):args.index("--target") + 2] = ["--series-target", "kind"]
    assert cli.main(args) == 0
    assert "series classification" in capsys.readouterr().out
    assert TrainedModel.load(out / "model.pt").config["bidirectional"] is True
    pred_path = tmp_path / "p.csv"
    assert cli.main(["predict", str(out / "model.pt"), str(csv), "--out", str(pred_path),
                     "--evaluate"]) == 0
    assert "majority_accuracy" in capsys.readouterr().out
    pred = pd.read_csv(pred_path)
    assert list(pred.columns) == ["id", "prediction", "prob_a", "prob_b"] and len(pred) == 5


def test_horizon_then_forecast_and_per_step_predict(csv, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", str(csv), *TRAIN, "--epochs", "1", "--out", str(out),
                     "--features", "u", "--horizon", "2", "--season", "3"]) == 0
    assert TrainedModel.load(out / "model.pt").task.season == 3
    fc_path, pred_path = tmp_path / "fc.csv", tmp_path / "pred.csv"
    assert cli.main(["predict", str(out / "model.pt"), str(csv), "--forecast",
                     "--out", str(fc_path)]) == 0
    fc = pd.read_csv(fc_path)
    assert list(fc.columns) == ["id", "t", "y"] and len(fc) == 2 * 5
    assert cli.main(["predict", str(out / "model.pt"), str(csv), "--out", str(pred_path)]) == 0
    pred = pd.read_csv(pred_path)
    assert list(pred.columns) == ["id", "t", "y_h1", "y_h2"]
    assert len(pred) == len(pd.read_csv(csv))


def test_predict_and_task_errors_are_one_line(csv, tmp_path, capsys):
    args = ["train", str(csv), *TRAIN]
    i = args.index("--target")
    del args[i:i + 2]
    assert cli.main(args) == 2
    assert "--target COL" in capsys.readouterr().err
    assert cli.main(["predict", str(tmp_path / "none.pt"), str(csv)]) == 2
    assert "model file" in capsys.readouterr().err


def test_train_scale_option_is_saved_with_the_model(csv, tmp_path):
    from vlrnn import TrainedModel
    for flag, want in (("series", "series"), ("none", None), ("global", "global")):
        out = tmp_path / f"run_{flag}"
        assert cli.main(["train", str(csv), *TRAIN, "--epochs", "1", "--out", str(out),
                         "--features", "u", "--horizon", "2", "--scale", flag]) == 0
        loaded = TrainedModel.load(out / "model.pt")
        assert loaded.config["scale"] == want and loaded.scaler.mode == want


def test_train_anchor_option_is_saved_with_the_model(csv, tmp_path, capsys):
    from vlrnn import TrainedModel
    for flag, want in (("default", "holt"), ("last", "last")):
        out = tmp_path / f"run_{flag}"
        assert cli.main(["train", str(csv), *TRAIN, "--epochs", "1", "--out", str(out),
                         "--features", "u", "--horizon", "2", "--anchor", flag]) == 0
        assert TrainedModel.load(out / "model.pt").config["anchor"] == want
    out = tmp_path / "run_one"
    assert cli.main(["train", str(csv), *TRAIN, "--epochs", "1", "--out", str(out),
                     "--features", "u", "--horizon", "2", "--ensemble", "1"]) == 0
    assert TrainedModel.load(out / "model.pt").config["ensemble"] == 1
    assert TrainedModel.load(tmp_path / "run_last" / "model.pt").config["ensemble"] == 3
    assert (tmp_path / "run_last" / "member2" / "last.pt").is_file()   # one folder a member
    # an anchor without a forecast is refused in one line
    assert cli.main(["train", str(csv), *TRAIN, "--epochs", "1", "--features", "u",
                     "--out", str(tmp_path / "bad"), "--anchor", "holt"]) == 2
    assert "needs a forecast" in capsys.readouterr().err


CELL_FILE = '''from torch import nn


class HalfCell(nn.RNNCell):
    """A custom cell: an RNN cell whose new state is half the plain one."""

    def forward(self, x, h=None):
        return 0.5 * super().forward(x, h)
'''


def test_predict_loads_a_custom_cell_with_cell_class(csv, tmp_path, capsys):
    import vlrnn
    from vlrnn.cli._cell_class import load_cell_class

    cells = tmp_path / "cells.py"
    cells.write_text(CELL_FILE)
    half = load_cell_class(f"{cells}:HalfCell")
    assert half.__qualname__ == "HalfCell" and half.__module__ != "torch.nn.modules.rnn"
    df = pd.read_csv(csv)
    res = vlrnn.pack_and_train(df, id_col="id", time_col="t", target_cols="y", cell=half,
                               hidden_size=4, num_layers=1, block_len=8, batch_size=2,
                               epochs=1, val_fraction=0, progress=False, device="cpu")
    path = res.save(tmp_path / "model.pt")
    pred_path = tmp_path / "pred.csv"
    predict = ["predict", str(path), str(csv), "--out", str(pred_path)]
    # without the class: the error names the option, and nothing is written
    assert cli.main(predict) == 2
    err = capsys.readouterr().err
    assert "custom cell" in err and "--cell-class" in err and not pred_path.exists()
    # the caller's class: the same predictions as the model in memory
    assert cli.main([*predict, "--cell-class", f"{cells}:HalfCell"]) == 0
    got = pd.read_csv(pred_path)
    np.testing.assert_allclose(got["y_pred"], res.predict(df)["y_pred"], rtol=1e-6)
    # another class than the file records, and specs that name no class: one-line errors
    for spec, msg in [("torch.nn:RNNCell", "records the cell"),
                      (str(cells), "FILE.py:CLASS"),
                      (f"{cells}:NoSuchCell", "defines no 'NoSuchCell'"),
                      (f"{tmp_path / 'none.py'}:HalfCell", "no file"),
                      ("torch.nn:functional", "not an nn.Module class")]:
        assert cli.main([*predict, "--cell-class", spec]) == 2, spec
        assert msg in capsys.readouterr().err, spec
