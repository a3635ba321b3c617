"""The scan-model benchmark scripts run end to end at tiny sizes and write tables of the
documented form with sane values (their full-size runs are the figures in
docs/benchmarks/scan-models.md)."""
from __future__ import annotations

import importlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def _rows(text: str, n_cols: int) -> list[list[str]]:
    """The body rows of the markdown table in ``text`` (header and rule dropped)."""
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    assert len(lines) >= 3, text
    assert set(lines[1]) <= set("|-: ") and "-" in lines[1], lines[1]
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]
    assert all(len(r) == n_cols for r in rows), rows
    return rows


def _speed(cell: str) -> float:
    m = re.fullmatch(r"(\d+\.\d\d)x", cell)
    assert m, cell
    return float(m.group(1))


@pytest.fixture(autouse=True)
def _threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_accuracy_recall_table(tmp_path):
    acc = _script("scan_models_accuracy")
    out = tmp_path / "recall.md"
    acc.main(["--task", "recall", "--seconds", "0.3", "--delay", "20", "--hidden", "8",
              "--batch", "4", "--n-val", "8", "--block", "16", "--models", "LSTM", "MinGRU",
              "LRU-half", "--out", str(out)])
    text = out.read_text()
    assert "recall across 20 steps (T = 30)" in text and "--task recall" in text
    rows = _rows(text, 4)
    assert [r[0] for r in rows] == ["LSTM", "MinGRU", "LRU-half"]
    for _, score, steps, seconds in rows:
        pct = re.fullmatch(r"(\d+\.\d)%", score)
        assert pct and 0.0 <= float(pct.group(1)) <= 100.0, score
        assert int(steps) >= 1
        assert 0 <= int(seconds) <= 5   # the budget (0.3 s), rounded, not the evaluation


def test_accuracy_bytes_table(tmp_path):
    acc = _script("scan_models_accuracy")
    out = tmp_path / "bytes.md"
    acc.main(["--task", "bytes", "--seconds", "0.3", "--hidden", "8", "--layers", "1",
              "--quick", "--file-bytes", "512", "--batch-bytes", "1024", "--models", "MinLSTM",
              "--out", str(out)])
    text = out.read_text()
    rows = _rows(text, 4)
    assert [r[0] for r in rows] == ["MinLSTM"]
    bits = float(rows[0][1])
    assert 0.5 < bits < 10.0            # bits per byte of a barely trained model: ~8
    unigram = float(re.search(r"unigram (\d+\.\d+) bits/byte", text).group(1))
    assert 0.5 < unigram < 8.0


@pytest.mark.skipif(shutil.which("git") is None or subprocess.run(
    ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True).returncode != 0,
    reason="needs a git checkout (it exports a committed revision)")
def test_before_after_table(tmp_path):
    ba = _script("scan_models_before_after")
    out = tmp_path / "ba.md"
    ba.main(["--rev", "HEAD", "--models", "MinGRU", "LRU", "--hidden", "8", "12",
             "--steps", "32", "--block", "16", "--batch", "2", "--repeats", "1",
             "--out", str(out)])
    text = out.read_text()
    assert "before = HEAD (" in text and "after = working tree" in text
    rows = _rows(text, 7)
    assert [(r[0], r[1]) for r in rows] == [("8", "MinGRU"), ("8", "LRU"), ("12", "MinGRU"),
                                            ("12", "LRU")]
    for _, _, before, after, lstm, s_before, s_after in rows:
        assert int(before) >= 0 and int(after) >= 0 and int(lstm) > 0
        for cell in (s_before, s_after):
            assert 0.01 < _speed(cell) < 100.0


def test_floor_table_and_the_identity_patches_are_undone(tmp_path):
    floor = _script("scan_models_floor")
    from vlrnn.models import _lru, _mamba, _min_rnn_layer
    before = (_lru.lti_scan_last, _mamba.selective_scan, _min_rnn_layer.lerp_scan)
    out = tmp_path / "floor.md"
    floor.main(["--hidden", "8", "--steps", "32", "--block", "16", "--batch", "2",
                "--repeats", "1", "--warmup", "0", "--out", str(out)])
    assert (_lru.lti_scan_last, _mamba.selective_scan, _min_rnn_layer.lerp_scan) == before
    rows = _rows(out.read_text(), 10)
    assert [r[1] for r in rows] == list(floor.MODELS)
    for r in rows:
        assert all(int(c) >= 0 for c in r[2:6])
        assert all(0.01 < _speed(c) < 100.0 for c in r[6:9])


def test_floor_identity_replaces_the_recurrence():
    """The "no scan" variant really runs without the recurrence: its output is the
    model's with the scan an identity (different from the real model's)."""
    floor = _script("scan_models_floor")
    from vlrnn.models import LRU
    torch.manual_seed(0)
    m = LRU(3, 8, 1)
    x = torch.randn(20, 2, 3)
    y, _ = m(x)
    with floor.patched(floor.NO_SCAN["LRU"]):
        y_id, _ = m(x)
    assert not torch.allclose(y, y_id)
    torch.testing.assert_close(m(x)[0], y)


def test_speed_table_reads_back_for_plotting(tmp_path):
    speed = _script("scan_models_speed")
    out = tmp_path / "speed.md"
    speed.main(["--hidden", "8", "--steps", "32", "48", "--block", "16", "--batch", "2",
                "--repeats", "1", "--warmup", "0", "--models", "MinGRU", "LRU-half",
                "--out", str(out)])
    rows = speed.read_table(out)
    assert [(r["T"], r["model"]) for r in rows] == [(32, "MinGRU"), (32, "LRU-half"),
                                                    (48, "MinGRU"), (48, "LRU-half")]
    for r in rows:
        assert r["ms"] >= 0 and r["lstm_ms"] > 0 and 0.01 < r["speed"] < 100.0
    pytest.importorskip("matplotlib")
    png = tmp_path / "speed.png"
    speed.main(["--plot", str(png), "--from-tables", str(out), str(out)])
    assert png.stat().st_size > 1000
