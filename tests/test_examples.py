"""The example scripts run as written (``--quick`` smoke runs) and print their results."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, *args: str, timeout: float = 150) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    res = subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True,
                         text=True, timeout=timeout, env=env)
    assert res.returncode == 0, (f"{name} {' '.join(args)} exited {res.returncode}\n"
                                 f"stdout:\n{res.stdout[-3000:]}\nstderr:\n{res.stderr[-3000:]}")
    return res.stdout


def test_pandas_ragged_quick():
    pytest.importorskip("statsmodels")   # the data set ships with it: pip install -e .[examples]
    out = run_example("pandas_ragged.py", "--quick")
    assert "gap-free stretches" in out
    assert "train_loss" in out and "val_loss" in out         # the per-epoch history
    assert "persistence (no change)" in out and "vlrnn LSTM" in out
    assert "change_4w_pred" in out                           # predict(df) joined to the frame
    assert "RESULT model RMSE" in out


def test_classify_long_series_quick():
    out = run_example("classify_long_series.py", "--quick")
    assert "held-out accuracy" in out
    assert "plain BPTT would need" in out
    assert "RESULT held-out accuracy" in out


def test_long_memory_quick(tmp_path):
    table = tmp_path / "table.md"
    out = run_example("long_memory.py", "--quick", "--out", str(table))
    header = "| cell | layers | method | held-out acc | s / epoch |"
    assert header in out
    for row in ("| LSTM | 1 | exact (vlrnn) |", "| GRU | 3 | truncated"):
        assert row in out
    assert "RESULT exact BPTT mean accuracy" in out
    assert header in table.read_text()


def test_compare_models_quick(tmp_path):
    tables = tmp_path / "tables.md"
    out = run_example("compare_models.py", "--quick", "--out", str(tables))
    header = "| cell | layers | params | held-out acc | s / epoch |"
    assert header in out and "| cell | layers | params | held-out bits/byte |" in out
    for cell in ("LSTM", "GRU", "QRNN"):
        for layers in (1, 4):
            assert f"| {cell} | {layers} |" in out
    assert "RESULT recall: best" in out and "RESULT bytes: best" in out
    assert header in tables.read_text()


def test_compare_models_refuses_unknown_cell():
    res = subprocess.run([sys.executable, str(EXAMPLES / "compare_models.py"), "--cells", "lstm,tcn"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "--cells takes a comma-separated list of lstm, gru, qrnn; " \
                                   "got 'lstm,tcn'" in res.stderr


def test_series_classification_quick():
    out = run_example("series_classification.py", "--quick")
    assert "JapaneseVowels: 270 training and 370 test series, 12 features, 7-29 steps, " \
           "9 classes" in out
    assert "RESULT JapaneseVowels test accuracy" in out and "majority baseline" in out


def test_forecasting_quick():
    pytest.importorskip("statsmodels")   # the data set ships with it: pip install -e .[examples]
    out = run_example("forecasting.py", "--quick")
    assert "fertility panel:" in out and "forecasting 2007-2011" in out
    for row in ("| vlrnn LSTM |", "| persistence (last value) |", "| drift (last 5 years' trend) |"):
        assert row in out
    assert "RESULT fertility 5-year forecast MAE" in out


def test_step_classification_quick():
    out = run_example("step_classification.py", "--quick")
    assert "standard library: 6 training and 3 test files" in out
    assert "RESULT token classes accuracy" in out and "context-free" in out


def test_series_classification_lowlevel_quick():
    # the same task written out with block_loss and a loss on out.state (lowlevel_tasks.py)
    out = run_example("series_classification.py", "--quick", "--api", "lowlevel")
    assert "with a loss on out.state" in out and "(lowlevel API, 3 epochs" in out


def test_lightning_ragged_quick():
    pytest.importorskip("lightning")   # pip install -e ".[test]" installs it
    out = run_example("lightning_ragged.py", "--quick")
    assert "epoch 1: held-out" in out                       # validation_step every epoch
    assert "held-out files, bits per byte (predict_step):" in out
    # predict_step's per-file values, weighted by bytes, give validation_step's figure
    m = re.search(r"bytes-weighted mean (\d+\.\d+) bits/byte \(validation_step: (\d+\.\d+)\)", out)
    assert m and abs(float(m.group(1)) - float(m.group(2))) <= 0.002, out[-2000:]
    assert "accumulate 2, clip 1.0" in out and "RESULT held-out" in out


def test_attention_pooling_quick():
    out = run_example("attention_pooling.py", "--quick")
    assert "| read-out | held-out accuracy | train time (s) |" in out
    assert "| attention |" in out and "| final |" in out
    assert "with Blockwise" in out and "plain" in out
    assert "RESULT attention accuracy" in out


def test_bidirectional_tagger_quick():
    out = run_example("bidirectional_tagger.py", "--quick")
    assert "standard library: 6 training and 3 test files" in out
    params = [int(n.replace(",", "")) for n in re.findall(r"([\d,]+) parameters;", out)]
    assert len(params) == 2 and abs(params[0] - params[1]) <= 0.05 * params[0], out
    m = re.search(r"RESULT bidirectional accuracy (\S+), unidirectional (\S+), majority (\S+), "
                  r"context-free (\S+); step memory Blockwise (\S+) MB, plain (\S+) MB", out)
    assert m, out[-2000:]
    accs = [float(v) for v in m.groups()[:4]]
    assert all(0.0 <= v <= 1.0 for v in accs), accs          # nan fails too
    assert f"| bidirectional LSTM | {m.group(1)} |" in out     # the table agrees
    mem_block, mem_plain = float(m.group(5)), float(m.group(6))
    assert 0 <= mem_block < mem_plain, (mem_block, mem_plain)  # 15 vs 164 MB when written
