"""Files that cannot attack or lie: nothing runs while a file loads, a file never picks the
code that builds its model, every file carries a checksum that each load verifies, resume
falls back to the newest intact checkpoint, and a full disk leaves the old file intact."""
from __future__ import annotations

import errno
import os
import struct
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_sequence

import vlrnn
from vlrnn import cli
from vlrnn.training import CheckpointError, TrainedModel
from vlrnn.training import _checkpoint_files as ckpt_io
from vlrnn.training import _integrity as integrity

OPTS = dict(id_col="id", time_col="t", target_cols="y", hidden_size=4, num_layers=1,
            block_len=8, batch_size=2, lr=0.03, progress=False, device="cpu", seed=0)
TRAIN = ["--id-col", "id", "--time-col", "t", "--target", "y", "--hidden-size", "4",
         "--num-layers", "1", "--block-len", "8", "--batch-size", "2", "--no-progress"]
MSE = nn.MSELoss(reduction="none")


def frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    parts = []
    for s, T in enumerate([7, 15, 4, 11, 9]):
        u = rng.normal(size=T)
        parts.append(pd.DataFrame({"id": s, "t": np.arange(T), "u": u, "y": np.r_[0.0, u[:-1]]}))
    return pd.concat(parts, ignore_index=True)


@pytest.fixture
def csv(tmp_path) -> Path:
    path = tmp_path / "d.csv"
    frame().to_csv(path, index=False)
    return path


# -- files an attacker writes -----------------------------------------------------------------
class _CreatesFile:
    """Unpickling this creates ``path``: what a malicious model file does (any code could
    stand in for ``open``)."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def evil_file(path: Path, marker: Path, **fields) -> Path:
    torch.save({"format": "vlrnn.TrainedModel/1", **fields, "payload": _CreatesFile(marker)},
               path)
    return path


def test_the_malicious_file_really_runs_code_when_fully_unpickled(tmp_path):
    """The payload works: trusting the file runs it (so the refusals below mean something)."""
    marker = tmp_path / "PWNED"
    evil = evil_file(tmp_path / "evil.pt", marker)
    ckpt_io.load(evil, trusted=True)
    assert marker.exists()


def test_trained_model_load_refuses_a_malicious_pickle(tmp_path):
    marker = tmp_path / "PWNED"
    evil = evil_file(tmp_path / "evil.pt", marker)
    with pytest.raises(CheckpointError, match="refused.*can run any code.*trusted=True"):
        TrainedModel.load(evil)
    assert not marker.exists()


def test_resume_refuses_a_malicious_pickle_through_trainer_and_pack_and_train(tmp_path):
    marker = tmp_path / "PWNED"
    run = tmp_path / "run"
    run.mkdir()
    evil_file(run / "last.pt", marker, epoch=1)
    torch.manual_seed(0)
    model = vlrnn.models.WithHead(nn.LSTM(1, 3), nn.Linear(3, 1))
    tr = vlrnn.Trainer(model, MSE, block_len=4, progress=False, device="cpu")
    data = [(pack_sequence([torch.randn(5, 1)]), pack_sequence([torch.randn(5, 1)]))]
    with pytest.raises(CheckpointError, match="refused"):
        tr.fit(data, epochs=2, resume=run)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refused"):
        vlrnn.pack_and_train(frame(), epochs=2, val_fraction=0, resume=run, **OPTS)
    assert not marker.exists()


def test_cli_predict_and_train_resume_refuse_a_malicious_pickle(csv, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    evil = evil_file(tmp_path / "evil.pt", marker)
    assert cli.main(["predict", str(evil), str(csv)]) == 2
    assert "--trust-file" in capsys.readouterr().err
    run = tmp_path / "run"
    run.mkdir()
    evil_file(run / "last.pt", marker, epoch=1)
    assert cli.main(["train", str(csv), *TRAIN, "--epochs", "2", "--out", str(run),
                     "--resume"]) == 2
    assert "refused" in capsys.readouterr().err
    assert not marker.exists()


# -- a file that names the code to run ------------------------------------------------------------
MARKER_ENV = "VLRNN_TEST_CELL_MARKER"


class MarkerCell(nn.RNNCell):
    """A cell whose construction creates a file: stands in for any code a file could name."""

    def __init__(self, input_size: int, hidden_size: int):
        Path(os.environ[MARKER_ENV]).touch()
        super().__init__(input_size, hidden_size)


def test_a_file_never_chooses_the_code_that_builds_its_model(tmp_path, monkeypatch):
    marker = tmp_path / "CALLED"
    monkeypatch.setenv(MARKER_ENV, str(marker))
    res = vlrnn.pack_and_train(frame(), epochs=1, val_fraction=0, cell=MarkerCell, **OPTS)
    path = res.save(tmp_path / "m.pt")
    marker.unlink()
    with pytest.raises(ValueError, match="custom cell.*cell_class="):
        TrainedModel.load(path)
    assert not marker.exists()
    with pytest.raises(ValueError, match="records the cell"):
        TrainedModel.load(path, cell_class=nn.GRUCell)
    assert not marker.exists()
    # the caller's own class, or the name imported under the explicit trust opt-in
    loaded = TrainedModel.load(path, cell_class=MarkerCell)
    pd.testing.assert_frame_equal(loaded.predict(frame()), res.predict(frame()))
    marker.unlink()
    TrainedModel.load(path, trusted=True)
    assert marker.exists()


def test_a_file_naming_a_plain_callable_is_refused_even_when_trusted(tmp_path):
    res = vlrnn.pack_and_train(frame(), epochs=1, val_fraction=0, **OPTS)
    data = ckpt_io.load(res.save(tmp_path / "m.pt"))
    data["config"]["cell"] = "builtins:print"
    ckpt_io.save_atomic(data, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="custom cell 'builtins:print'"):
        TrainedModel.load(tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not an nn.Module class"):
        TrainedModel.load(tmp_path / "bad.pt", trusted=True)


# -- damaged, truncated, foreign and future files ---------------------------------------------
def flip_inside_largest_tensor(path: Path, n: int = 64) -> None:
    """Flip ``n`` bytes in the middle of the largest tensor record of a torch zip, leaving
    the archive readable (torch stores records uncompressed and does not check them)."""
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    with open(path, "r+b") as f:
        f.seek(info.header_offset)
        header = f.read(30)
        name_len, extra_len = struct.unpack("<HH", header[26:30])
        start = info.header_offset + 30 + name_len + extra_len + info.file_size // 2 - n // 2
        f.seek(start)
        chunk = f.read(n)
        f.seek(start)
        f.write(bytes(b ^ 0xFF for b in chunk))


@pytest.fixture
def saved_model(tmp_path) -> Path:
    res = vlrnn.pack_and_train(frame(), epochs=1, val_fraction=0,
                               **dict(OPTS, hidden_size=64))
    return res.save(tmp_path / "model.pt")


def test_damaged_bytes_inside_a_tensor_record_are_caught(saved_model, csv, capsys):
    before = torch.load(saved_model, weights_only=True)
    flip_inside_largest_tensor(saved_model)
    after = torch.load(saved_model, weights_only=True)  # torch itself notices nothing
    assert any(not torch.equal(before["model"][k], after["model"][k]) for k in before["model"])
    with pytest.raises(CheckpointError, match="damaged: checksum mismatch"):
        TrainedModel.load(saved_model)
    assert cli.main(["predict", str(saved_model), str(csv)]) == 2
    assert "checksum mismatch" in capsys.readouterr().err
    assert not (csv.parent / "predictions.csv").exists()


def test_truncated_empty_foreign_and_future_files(saved_model, tmp_path):
    raw = saved_model.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match=r"cut\.pt is truncated or damaged"):
        TrainedModel.load(cut)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty\.pt is empty \(0 bytes\)"):
        TrainedModel.load(empty)
    table = tmp_path / "table.pt"
    table.write_text("id,t,y\n1,2,3\n")
    with pytest.raises(CheckpointError, match=r"table\.pt is not a vlrnn file"):
        TrainedModel.load(table)
    plain = tmp_path / "plain.pt"
    torch.save({"format": "vlrnn.TrainedModel/1", "model": {}}, plain)
    with pytest.raises(CheckpointError, match=r"plain\.pt is not a vlrnn file"):
        TrainedModel.load(plain)
    body = {**torch.load(saved_model, weights_only=True), integrity.VERSION_KEY: 2}
    del body[integrity.CHECKSUM_KEY]
    future = tmp_path / "future.pt"
    torch.save({**body, integrity.CHECKSUM_KEY: integrity.digest(body)}, future)
    with pytest.raises(CheckpointError, match="unknown version of vlrnn.*upgrade"):
        TrainedModel.load(future)
    checkpoint = tmp_path / "run"
    vlrnn.pack_and_train(frame(), epochs=1, val_fraction=0, checkpoint_dir=checkpoint, **OPTS)
    with pytest.raises(CheckpointError, match="not a saved vlrnn TrainedModel"):
        TrainedModel.load(checkpoint / "last.pt")


def test_an_object_a_safe_load_could_not_read_back_is_refused_at_save(tmp_path):
    with pytest.raises(TypeError, match="cannot write a .*_CreatesFile"):
        ckpt_io.save_atomic({"x": _CreatesFile(tmp_path / "never")}, tmp_path / "f.pt")
    assert not (tmp_path / "f.pt").exists() and not (tmp_path / "never").exists()
    assert list(tmp_path.iterdir()) == []


# -- resume falls back to the newest intact checkpoint --------------------------------------------
def _run(tmp_path: Path, epochs: int, resume=None):
    torch.manual_seed(0)
    model = vlrnn.models.WithHead(nn.LSTM(2, 5), nn.Linear(5, 1))
    g = torch.Generator().manual_seed(3)
    data = []
    for _ in range(3):
        xs = [torch.randn(int(T), 2, generator=g) for T in (9, 4)]
        data.append((pack_sequence(xs, enforce_sorted=False),
                     pack_sequence([x[:, :1] * 0.5 for x in xs], enforce_sorted=False)))
    tr = vlrnn.Trainer(model, MSE, block_len=4, lr=0.02, seed=1, progress=False, device="cpu",
                       checkpoint_dir=tmp_path)
    hist = tr.fit(data, epochs=epochs, resume=resume)
    return model, hist


def test_a_damaged_last_checkpoint_falls_back_to_the_previous_one(tmp_path):
    ref_model, ref_hist = _run(tmp_path / "ref", 4)
    _run(tmp_path / "cut", 3)
    assert torch.load(tmp_path / "cut" / ckpt_io.PREV, weights_only=True)["epoch"] == 2
    flip_inside_largest_tensor(tmp_path / "cut" / ckpt_io.LAST)
    with pytest.warns(RuntimeWarning, match=r"resuming from .*last\.prev\.pt \(epoch 2\).*"
                                            "checksum mismatch"):
        model, hist = _run(tmp_path / "cut", 4, resume=tmp_path / "cut")
    assert hist["epoch"].tolist() == [1, 2, 3, 4]
    assert hist["train_loss"].tolist() == ref_hist["train_loss"].tolist()
    for a, b in zip(model.state_dict().values(), ref_model.state_dict().values()):
        assert torch.equal(a, b)  # the damaged weights never entered the run


def test_no_intact_checkpoint_is_an_error_listing_each_file(tmp_path):
    _run(tmp_path, 2)
    flip_inside_largest_tensor(tmp_path / ckpt_io.LAST)
    (tmp_path / ckpt_io.PREV).write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"no intact checkpoint.*last\.pt is damaged.*"
                                              r"last\.prev\.pt is empty"):
        _run(tmp_path, 3, resume=tmp_path)


def test_cli_resume_from_a_damaged_last_pt_warns_and_continues(csv, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", str(csv), *TRAIN, "--epochs", "2", "--out", str(out)]) == 0
    flip_inside_largest_tensor(out / "last.pt", n=16)
    with pytest.warns(RuntimeWarning, match="newest intact checkpoint"):
        assert cli.main(["train", str(csv), *TRAIN, "--epochs", "3", "--out", str(out),
                         "--resume"]) == 0
    assert pd.read_csv(out / "history.csv")["epoch"].tolist() == [1, 2, 3]


# -- a disk that fills during a write ----------------------------------------------------------------
class _FullDisk:
    """``os`` as checkpoint_files sees it: the file it opens runs out of space after a
    few writes, as a filling disk does in the middle of ``torch.save``."""

    def __getattr__(self, name):
        return getattr(os, name)

    def fdopen(self, fd, *a, **kw):
        f = os.fdopen(fd, *a, **kw)
        real_write, calls = f.write, [0]

        def write(b):
            calls[0] += 1
            if calls[0] > 3:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_write(b)

        f.write = write
        return f


def test_a_full_disk_mid_write_fails_clearly_and_keeps_the_previous_checkpoint(
        tmp_path, monkeypatch):
    _run(tmp_path, 1)
    before = ckpt_io.load(tmp_path)
    monkeypatch.setattr(ckpt_io, "os", _FullDisk())
    with pytest.raises(OSError, match=r"could not write .*last\.pt: no space left on device; "
                                      "the file that was there is unchanged") as err:
        _run(tmp_path, 2, resume=tmp_path)
    assert err.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.prev.pt", "last.pt"]  # no temp
    after = ckpt_io.load(tmp_path)
    assert after["epoch"] == before["epoch"] == 1
    assert all(torch.equal(a, b) for a, b in zip(before["model"].values(),
                                                 after["model"].values()))
    model, hist = _run(tmp_path, 2, resume=tmp_path)  # and the run carries on from it
    assert hist["epoch"].tolist() == [1, 2]
