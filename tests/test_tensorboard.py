"""Trainer(log_dir=...) and ``vlrnn train``: TensorBoard scalars, read back from the event
files."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_sequence

import vlrnn
from vlrnn import cli
from vlrnn.models import WithHead

pytest.importorskip("tensorboard")  # the "test" extra installs it
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

MSE = nn.MSELoss(reduction="none")
EPOCH_TAGS = {"epoch/train_loss", "epoch/val_loss", "epoch/val_mae", "epoch/lr",
              "epoch/steps_per_s", "epoch/seconds", "epoch/skipped", "memory/peak_rss_mb"}


def batches(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        xs = [torch.randn(int(T), 2, generator=g) for T in torch.randint(3, 12, (2,),
                                                                       generator=g)]
        ys = [x[:, :1].cumsum(0) * 0.3 for x in xs]
        out.append((pack_sequence(xs, enforce_sorted=False),
                    pack_sequence(ys, enforce_sorted=False)))
    return out


def model() -> nn.Module:
    torch.manual_seed(0)
    return WithHead(nn.LSTM(2, 4), nn.Linear(4, 1))


@torch.no_grad()
def mae(m, val):
    err = [(m(x)[0].data - y.data).abs() for x, y in val]
    return {"mae": float(torch.cat(err).mean())}


def trainer(m, **kw) -> vlrnn.Trainer:
    return vlrnn.Trainer(m, MSE, block_len=4, progress=False, device="cpu", **kw)


def scalars(log_dir: Path):
    """{tag: [(step, value), ...]} over every event file of ``log_dir``, in write order;
    duplicates are kept (one accumulator per file, nothing purged)."""
    files = sorted(log_dir.glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime_ns)
    out = {}
    for f in files:
        acc = EventAccumulator(str(f), purge_orphaned_data=False)
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return out


def test_scalars_match_the_history_and_the_step_losses(tmp_path):
    train, val = batches(3, 0), batches(2, 1)
    tr = trainer(model(), metrics=mae, log_dir=tmp_path / "tb")
    hist = tr.fit(train, val, epochs=2)
    got = scalars(tmp_path / "tb")
    assert EPOCH_TAGS | {"step/train_loss"} == set(got)  # CPU: no CUDA memory tag
    for tag in EPOCH_TAGS - {"memory/peak_rss_mb"}:
        col = tag.split("/", 1)[1]
        assert [s for s, _ in got[tag]] == [1, 2]
        assert [v for _, v in got[tag]] == pytest.approx(hist[col].tolist(), rel=1e-6), tag
    assert all(v > 10 for _, v in got["memory/peak_rss_mb"])  # MiB of a torch process
    steps = got["step/train_loss"]
    assert [s for s, _ in steps] == [1, 2, 3, 4, 5, 6]
    # the epoch's loss is the row-weighted mean of its steps' losses
    rows = [x.data.shape[0] for x, _ in train]
    for e in range(2):
        vals = [v for _, v in steps[3 * e:3 * e + 3]]
        mean = sum(v * n for v, n in zip(vals, rows)) / sum(rows)
        assert mean == pytest.approx(hist["train_loss"][e], rel=1e-6)


def test_nan_columns_are_left_out(tmp_path):
    trainer(model(), log_dir=tmp_path).fit(batches(2, 0), epochs=1)
    got = scalars(tmp_path)
    assert "epoch/val_loss" not in got and "epoch/train_loss" in got


def test_resume_continues_the_step_numbering(tmp_path):
    train = batches(3, 0)
    trainer(model(), checkpoint_dir=tmp_path / "ck", log_dir=tmp_path / "tb").fit(train,
                                                                                   epochs=2)
    assert [s for s, _ in scalars(tmp_path / "tb")["step/train_loss"]] == list(range(1, 7))
    tr = trainer(model(), checkpoint_dir=tmp_path / "ck", log_dir=tmp_path / "tb")
    hist = tr.fit(train, epochs=4, resume=tmp_path / "ck")
    got = scalars(tmp_path / "tb")
    assert len(list((tmp_path / "tb").glob("events.out.tfevents.*"))) == 2
    assert [s for s, _ in got["step/train_loss"]] == list(range(1, 13))  # none twice
    assert [s for s, _ in got["epoch/train_loss"]] == [1, 2, 3, 4]
    assert [v for _, v in got["epoch/train_loss"]] == pytest.approx(
        hist["train_loss"].tolist(), rel=1e-6)
    # a finished run resumed again writes nothing new
    tr = trainer(model(), checkpoint_dir=tmp_path / "ck", log_dir=tmp_path / "tb")
    tr.fit(train, epochs=4, resume=tmp_path / "ck")
    assert scalars(tmp_path / "tb") == got


def test_missing_tensorboard_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    with pytest.raises(ImportError, match=r'pip install "vlrnn\[tensorboard\]"'):
        trainer(model(), log_dir=tmp_path)
    trainer(model())  # without log_dir nothing is needed
    assert not any(tmp_path.iterdir())


# -- the command line ------------------------------------------------------------------------
TRAIN = ["--id-col", "id", "--time-col", "t", "--target", "y", "--hidden-size", "4",
         "--num-layers", "1", "--block-len", "8", "--batch-size", "2", "--no-progress",
         "--epochs", "2"]


@pytest.fixture
def csv(tmp_path):
    rng = np.random.default_rng(0)
    parts = []
    for s, T in enumerate([7, 15, 4, 11, 9]):
        u = rng.normal(size=T)
        parts.append(pd.DataFrame({"id": s, "t": np.arange(T), "u": u, "y": np.r_[0.0, u[:-1]]}))
    path = tmp_path / "sensors.csv"
    pd.concat(parts).to_csv(path, index=False)
    return path


def test_cli_writes_logs_into_out_by_default(csv, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", str(csv), *TRAIN, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"tensorboard --logdir {out}" in printed
    got = scalars(out)
    assert {"epoch/train_loss", "epoch/val_loss", "epoch/val_mae", "step/train_loss"} <= set(got)
    hist = pd.read_csv(out / "history.csv")
    assert [v for _, v in got["epoch/val_mae"]] == pytest.approx(hist["val_mae"].tolist(),
                                                                 rel=1e-6)


def test_cli_no_tensorboard_and_missing_package(csv, tmp_path, capsys, monkeypatch):
    assert cli.main(["train", str(csv), *TRAIN, "--out", str(tmp_path / "a"),
                     "--no-tensorboard"]) == 0
    assert not list((tmp_path / "a").glob("events.out.tfevents.*"))
    assert "--logdir" not in capsys.readouterr().out
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    assert cli.main(["train", str(csv), *TRAIN, "--out", str(tmp_path / "b")]) == 0
    printed = capsys.readouterr().out
    assert "tensorboard is not installed" in printed and "vlrnn[tensorboard]" in printed
    assert (tmp_path / "b" / "model.pt").is_file()
    assert not list((tmp_path / "b").glob("events.out.tfevents.*"))


def test_cuda_peak_memory_is_logged_on_cuda(tmp_path, monkeypatch):
    # the logger's CUDA branch, on any machine: max_memory_allocated of the trainer's device
    from vlrnn.training._tensorboard import TensorBoardLogger

    asked = []
    monkeypatch.setattr(torch.cuda, "max_memory_allocated",
                        lambda device: asked.append(device) or 3 * 2**20)
    log = TensorBoardLogger(tmp_path)
    log.open()
    log.epoch({"epoch": 2, "train_loss": 0.5, "val_loss": float("nan")},
              torch.device("cuda", 1))
    log.close()
    got = scalars(tmp_path)
    assert got["memory/cuda_max_allocated_mb"] == [(2, 3.0)]
    assert asked == [torch.device("cuda", 1)]
    assert set(got) == {"epoch/train_loss", "memory/peak_rss_mb",
                        "memory/cuda_max_allocated_mb"}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_trainer_on_cuda_logs_cuda_memory(tmp_path):
    trainer_ = vlrnn.Trainer(model(), MSE, block_len=4, progress=False, device="cuda",
                             log_dir=tmp_path)
    trainer_.fit(batches(2, 0), epochs=1)
    assert scalars(tmp_path)["memory/cuda_max_allocated_mb"][0][1] > 0
