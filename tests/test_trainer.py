"""Trainer: training loop, validation, checkpoints and resume, early stopping, predict."""
from __future__ import annotations

import copy
import io
import math
import os

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_sequence

import vlrnn
from vlrnn.data import SeriesDataset, make_loader
from vlrnn.models import StackedRNN, WithHead
from vlrnn.training import _checkpoint_files as ckpt_io
from vlrnn.training._trainer import HISTORY_COLUMNS, predict_blocks

MSE = nn.MSELoss(reduction="none")


# -- data and models ---------------------------------------------------------------------------
def series(n: int, lengths=(5, 30), seed: int = 0, sign: float = 1.0):
    """Ragged series: y_t = sign * (0.6 x_{t-1} + 0.4 x_t), one feature besides noise."""
    g = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    for _ in range(n):
        T = int(torch.randint(lengths[0], lengths[1] + 1, (1,), generator=g))
        x = torch.randn(T, 2, generator=g)
        prev = torch.cat([torch.zeros(1), x[:-1, 0]])
        ys.append(sign * (0.6 * prev + 0.4 * x[:, 0]).unsqueeze(1))
        xs.append(x)
    return xs, ys


def dataset(n: int, seed: int = 0, sign: float = 1.0) -> SeriesDataset:
    xs, ys = series(n, seed=seed, sign=sign)
    return SeriesDataset(xs, ys, ids=list(range(n)), feature_cols=["a", "b"], target_cols=["y"])


def batches(n_batches: int, per_batch: int = 3, seed: int = 0, sign: float = 1.0):
    """A plain list of packed (x, y) batches (input order unsorted)."""
    xs, ys = series(n_batches * per_batch, seed=seed, sign=sign)
    out = []
    for i in range(0, len(xs), per_batch):
        out.append((pack_sequence(xs[i:i + per_batch], enforce_sorted=False),
                    pack_sequence(ys[i:i + per_batch], enforce_sorted=False)))
    return out


def lstm_model(hidden: int = 6, layers: int = 1, dropout: float = 0.0, seed: int = 0) -> WithHead:
    torch.manual_seed(seed)
    return WithHead(nn.LSTM(2, hidden, num_layers=layers, dropout=dropout),
                    nn.Linear(hidden, 1))


def trainer(model, **kw) -> vlrnn.Trainer:
    kw.setdefault("progress", False)
    kw.setdefault("device", "cpu")  # results are compared with CPU computations
    kw.setdefault("block_len", 7)
    kw.setdefault("lr", 0.02)
    return vlrnn.Trainer(model, MSE, **kw)


def states_equal(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), f"{k} differs"


# -- training ----------------------------------------------------------------------------------
def test_loss_goes_down_and_history_columns():
    tr = trainer(lstm_model())
    hist = tr.fit(batches(4), batches(2, seed=1), epochs=8)
    assert list(hist.columns) == HISTORY_COLUMNS
    assert hist["epoch"].tolist() == list(range(1, 9))
    assert hist["train_loss"].iloc[-1] < 0.5 * hist["train_loss"].iloc[0]
    assert hist["val_loss"].iloc[-1] < hist["val_loss"].iloc[0]
    assert (hist["steps_per_s"] > 0).all() and (hist["seconds"] > 0).all()
    assert (hist["lr"] == 0.02).all()
    assert tr.history.equals(hist)


def test_validation_loss_is_the_row_weighted_mean():
    model = lstm_model()
    tr = trainer(model)
    val = batches(3, per_batch=2, seed=5)  # batches of different row counts
    got = tr.evaluate(val)
    with torch.no_grad():
        total = sum(float(vlrnn.full_loss(model, MSE, x, y, reduction="sum").loss)
                    for x, y in val)
    rows = sum(x.data.shape[0] for x, _ in val)
    assert math.isclose(got, total / rows, rel_tol=1e-9)
    assert model.training  # evaluate puts the train mode back


def test_no_validation_gives_nan_val_loss():
    hist = trainer(lstm_model()).fit(batches(2), epochs=2)
    assert hist["val_loss"].isna().all()


def test_dense_batches_train():
    x = torch.randn(12, 3, 2)
    y = x[..., :1].cumsum(0) * 0.1
    hist = trainer(lstm_model()).fit([(x, y)], [(x, y)], epochs=5)
    assert hist["train_loss"].iloc[-1] < hist["train_loss"].iloc[0]


def test_nan_loss_raises_naming_epoch_and_batch():
    data = batches(2)
    x, y = data[1]
    data[1] = (x, PackedSequence(y.data.clone().fill_(float("nan")), y.batch_sizes,
                                 y.sorted_indices, y.unsorted_indices))
    model = lstm_model()
    tr = trainer(model)
    with pytest.raises(FloatingPointError, match=r"nan at epoch 1, batch 1"):
        tr.fit(data, epochs=3)


def test_nan_loss_raises_before_the_step():
    data = batches(1)
    x, y = data[0]
    data[0] = (x, y._replace(data=y.data * float("inf")))
    model = lstm_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(FloatingPointError, match="epoch 1, batch 0"):
        trainer(model).fit(data, epochs=1)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_clip_grad_norm_is_applied(monkeypatch):
    calls = []
    real = torch.nn.utils.clip_grad_norm_

    def spy(params, max_norm, *a, **kw):
        calls.append(max_norm)
        return real(params, max_norm, *a, **kw)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    trainer(lstm_model(), clip_grad_norm=0.5).fit(batches(3), epochs=1)
    assert calls == [0.5, 0.5, 0.5]


def test_scheduler_callable_and_plateau():
    tr = trainer(lstm_model(),
                 scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5))
    hist = tr.fit(batches(1), epochs=3)
    assert hist["lr"].tolist() == pytest.approx([0.02, 0.01, 0.005])
    model = lstm_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0, factor=0.1)
    seen = []
    real_step = plateau.step
    plateau.step = lambda metric: (seen.append(metric), real_step(metric))
    hist = trainer(model, optimizer=opt, scheduler=plateau).fit(batches(1), batches(1, seed=9),
                                                                 epochs=3)
    assert seen == hist["val_loss"].tolist()  # stepped with the validation loss
    with pytest.raises(ValueError, match="another optimizer"):
        trainer(lstm_model(), scheduler=plateau)


def test_progress_bar_only_on_a_terminal(monkeypatch, capsys):
    trainer(lstm_model(), progress=True).fit(batches(1), epochs=1)
    assert capsys.readouterr().err == ""  # pytest's stderr is not a TTY: bar is off

    class Tty(io.StringIO):
        def isatty(self):
            return True

    fake = Tty()
    monkeypatch.setattr("sys.stderr", fake)
    trainer(lstm_model(), progress=True).fit(batches(1), epochs=1)
    assert "epoch 1" in fake.getvalue() and "loss=" in fake.getvalue()
    fake2 = Tty()
    monkeypatch.setattr("sys.stderr", fake2)
    trainer(lstm_model(), progress=False).fit(batches(1), epochs=1)
    assert fake2.getvalue() == ""


# -- checkpoints and resume --------------------------------------------------------------------
def _loaders(bucket: bool):
    ds, val = dataset(9, seed=2), dataset(4, seed=3)
    return (make_loader(ds, batch_size=3, shuffle=True, seed=11, bucket=bucket),
            make_loader(val, batch_size=2, shuffle=False))


@pytest.mark.parametrize("bucket", [True, False], ids=["length-buckets", "torch-generator"])
def test_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path, bucket):
    # dropout (torch RNG) + shuffled batches: both must be restored for equality
    full_model = lstm_model(layers=2, dropout=0.3)
    tr_full = trainer(full_model, seed=5, checkpoint_dir=tmp_path / "full")
    hist_full = tr_full.fit(*_loaders(bucket), epochs=4)

    trainer(lstm_model(layers=2, dropout=0.3), seed=5,
            checkpoint_dir=tmp_path / "cut").fit(*_loaders(bucket), epochs=2)
    # a new process: fresh model (other init), fresh loaders, the RNG moved on meanwhile
    torch.randn(100)
    resumed = lstm_model(layers=2, dropout=0.3, seed=123)
    tr = trainer(resumed, seed=5, checkpoint_dir=tmp_path / "cut")
    hist = tr.fit(*_loaders(bucket), epochs=4, resume=tmp_path / "cut")
    states_equal(resumed, full_model)
    assert hist["epoch"].tolist() == [1, 2, 3, 4]
    assert hist["train_loss"].tolist() == hist_full["train_loss"].tolist()
    assert hist["val_loss"].tolist() == hist_full["val_loss"].tolist()


def test_resume_without_restoring_would_differ(tmp_path):
    """The resume test above can fail: a fresh run from the epoch-2 weights alone does
    not reproduce the uninterrupted run (optimizer state, RNG and epoch order matter)."""
    full_model = lstm_model(layers=2, dropout=0.3)
    trainer(full_model, seed=5).fit(*_loaders(True), epochs=4)
    half = lstm_model(layers=2, dropout=0.3)
    trainer(half, seed=5).fit(*_loaders(True), epochs=2)
    trainer(half, seed=5).fit(*_loaders(True), epochs=2)
    assert not all(torch.equal(a, b) for a, b in
                   zip(half.state_dict().values(), full_model.state_dict().values()))


def test_resuming_a_finished_run_does_not_train(tmp_path):
    model = lstm_model()
    hist = trainer(model, checkpoint_dir=tmp_path).fit(batches(2), batches(1, seed=4), epochs=2)
    again = lstm_model(seed=7)
    hist2 = trainer(again, checkpoint_dir=tmp_path).fit(batches(2), batches(1, seed=4),
                                                        epochs=2, resume=tmp_path / "last.pt")
    states_equal(again, model)
    assert hist2.equals(hist)


def test_checkpoint_files_are_complete_and_no_temp_files_remain(tmp_path):
    cfg = {"hidden": 6, "cell": "lstm"}
    tr = trainer(lstm_model(), checkpoint_dir=tmp_path, config=cfg, scaler_state={"m": 1.5})
    tr.fit(batches(2), batches(1, seed=4), epochs=2)
    assert sorted(os.listdir(tmp_path)) == ["best.pt", "last.prev.pt", "last.pt"]
    data = ckpt_io.load(tmp_path)
    assert data["epoch"] == 2 and data["config"] == cfg and data["scaler_state"] == {"m": 1.5}
    assert data["vlrnn_version"] == vlrnn.__version__
    assert {"model", "optimizer", "scheduler", "history", "rng"} <= set(data)
    assert {"torch", "numpy", "python"} <= set(data["rng"])
    assert len(data["history"]) == 2
    # every value is a plain type or a tensor: loads without unpickling arbitrary objects
    torch.load(tmp_path / "last.pt", weights_only=True)


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    ckpt_io.save_atomic({"epoch": 1}, path)

    def broken(obj, f, *a, **kw):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        ckpt_io.save_atomic({"epoch": 2}, path)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["last.pt"]
    assert ckpt_io.load(path) == {"epoch": 1}


def test_resume_with_another_model_or_config_is_a_clear_error(tmp_path):
    trainer(lstm_model(), checkpoint_dir=tmp_path, config={"hidden": 6}).fit(batches(1), epochs=1)
    with pytest.raises(ValueError, match="does not match this model"):
        trainer(lstm_model(hidden=5)).fit(batches(1), epochs=2, resume=tmp_path)
    with pytest.raises(ValueError, match=r"hidden: checkpoint 6, now 8"):
        trainer(lstm_model(), config={"hidden": 8}).fit(batches(1), epochs=2, resume=tmp_path)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        trainer(lstm_model()).fit(batches(1), epochs=2, resume=tmp_path / "nothing")


# -- early stopping ----------------------------------------------------------------------------
def test_early_stopping_stops_and_restores_the_best_weights(tmp_path):
    # validation targets are the negated training targets: learning the task makes the
    # validation loss rise, so it stops improving early
    model = lstm_model()
    tr = trainer(model, early_stopping_patience=2, checkpoint_dir=tmp_path, lr=0.05)
    hist = tr.fit(batches(3), batches(2, seed=1, sign=-1.0), epochs=30)
    assert tr.stopped_early
    assert len(hist) == tr.best_epoch + 2 < 30
    assert tr.best_epoch == int(hist["val_loss"].idxmin()) + 1
    best = ckpt_io.load(tmp_path, "best.pt")
    assert best["epoch"] == tr.best_epoch
    for k, v in model.state_dict().items():
        assert torch.equal(v, best["model"][k])
    last = ckpt_io.load(tmp_path)
    assert not all(torch.equal(v, last["model"][k]) for k, v in model.state_dict().items())


def test_early_stopping_needs_validation():
    with pytest.raises(ValueError, match="val_loader"):
        trainer(lstm_model(), early_stopping_patience=2).fit(batches(1), epochs=2)


# -- predict -----------------------------------------------------------------------------------
def _models():
    torch.manual_seed(0)
    return {
        "lstm2": WithHead(nn.LSTM(2, 5, num_layers=2), nn.Linear(5, 3)),
        "gru": nn.GRU(2, 4),
        "stacked": WithHead(StackedRNN(2, 4, num_layers=2, cell="lstm"), nn.Linear(4, 1)),
    }


@pytest.mark.parametrize("name", ["lstm2", "gru", "stacked"])
@pytest.mark.parametrize("with_state", [False, True])
def test_predict_packed_equals_one_model_call(name, with_state):
    model = _models()[name]
    lengths = [7, 12, 3, 12, 9]  # unsorted, ties, ends inside blocks of 4
    xs = [torch.randn(n, 2) for n in lengths]
    x = pack_sequence(xs, enforce_sorted=False)
    state = None
    if with_state:
        with torch.no_grad():
            _, state = model(pack_sequence([torch.randn(2, 2) for _ in lengths],
                                           enforce_sorted=False))
    ref_y, ref_state = model(x, state)
    tr = vlrnn.Trainer(model, MSE, block_len=4, progress=False, device="cpu")
    y, final = tr.predict(x, state)
    assert isinstance(y, PackedSequence)
    assert torch.equal(y.batch_sizes, x.batch_sizes)
    assert torch.equal(y.sorted_indices, x.sorted_indices)
    assert torch.equal(y.unsorted_indices, x.unsorted_indices)
    torch.testing.assert_close(y.data, ref_y.data, rtol=1e-10, atol=1e-12)
    for a, b in zip(vlrnn.engine._state.flatten(final)[0], vlrnn.engine._state.flatten(ref_state)[0]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("batch_first", [False, True])
def test_predict_dense_equals_one_model_call(batch_first):
    torch.manual_seed(1)
    model = WithHead(nn.LSTM(2, 4, num_layers=2, batch_first=batch_first), nn.Linear(4, 2))
    x = torch.randn(3, 10, 2) if batch_first else torch.randn(10, 3, 2)
    ref_y, (h, c) = model(x)
    y, (h2, c2) = predict_blocks(model, x, block_len=3)
    assert y.shape == ref_y.shape
    torch.testing.assert_close(y, ref_y, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(h2, h, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(c2, c, rtol=1e-10, atol=1e-12)


def test_predict_uses_eval_mode_and_restores_it():
    torch.manual_seed(2)
    model = WithHead(nn.LSTM(2, 4, num_layers=2, dropout=0.5), nn.Linear(4, 1))
    x = pack_sequence([torch.randn(6, 2), torch.randn(4, 2)], enforce_sorted=False)
    tr = vlrnn.Trainer(model, MSE, block_len=4, progress=False, device="cpu")
    model.eval()
    ref, _ = model(x)
    model.train()
    y, _ = tr.predict(x)
    torch.testing.assert_close(y.data, ref.data)
    assert model.training


# -- WithHead ------------------------------------------------------------------------------------
def test_with_head_forwards_layout_attributes():
    m = WithHead(nn.GRU(2, 3, batch_first=True), nn.Linear(3, 1))
    assert m.state_batch_dim == 1 and m.batch_first is True
    s = WithHead(StackedRNN(2, 3), nn.Linear(3, 1))
    assert s.state_batch_dim == 0 and s.batch_first is False
    x = pack_sequence([torch.randn(3, 2), torch.randn(5, 2)], enforce_sorted=False)
    y, _ = s(x)
    assert y.data.shape == (8, 1) and torch.equal(y.unsorted_indices, x.unsorted_indices)


def test_schedule_is_passed_to_the_engine(monkeypatch):
    import vlrnn.training._batch_loss as trainer_mod

    seen = []
    real = trainer_mod.block_loss

    def spy(*a, **kw):
        seen.append(kw.get("schedule"))
        return real(*a, **kw)

    monkeypatch.setattr(trainer_mod, "block_loss", spy)
    flat, rec = lstm_model(), lstm_model()
    trainer(flat).fit(batches(2), epochs=2)
    trainer(rec, schedule="revolve", block_len=3).fit(batches(2), epochs=2)
    assert seen == ["flat"] * 4 + ["revolve"] * 4
    for a, b in zip(flat.state_dict().values(), rec.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9)  # exact gradient either way
    with pytest.raises(ValueError, match="unknown schedule"):
        trainer(lstm_model(), schedule="fast")


def test_predict_streams_a_numpy_array():
    torch.manual_seed(3)
    model = WithHead(nn.GRU(2, 4), nn.Linear(4, 1))
    x = torch.randn(11, 2, 2)
    ref, h = model(x)
    y, h2 = predict_blocks(model, x.numpy(), block_len=4)
    torch.testing.assert_close(y, ref)
    torch.testing.assert_close(h2, h)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fit_and_predict():
    model = lstm_model()
    tr = vlrnn.Trainer(model, MSE, block_len=5, progress=False)  # device None: CUDA
    assert tr.device.type == "cuda"
    hist = tr.fit(batches(2), batches(1, seed=4), epochs=2)  # CPU batches are moved
    assert hist["val_loss"].notna().all()
    x = batches(1, seed=6)[0][0]
    y, _ = tr.predict(x)
    assert y.data.is_cuda
    cpu = copy.deepcopy(model).cpu()
    torch.testing.assert_close(y.data.cpu(), cpu(x)[0].data, rtol=1e-6, atol=1e-8)


def test_rng_state_round_trip(tmp_path):
    import random

    import numpy as np

    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    np.random.normal()  # a cached gaussian is part of numpy's state
    ckpt_io.save_atomic({"rng": ckpt_io.rng_state()}, tmp_path / "r.pt")
    first = (torch.rand(3), np.random.normal(size=3), random.random())
    ckpt_io.set_rng_state(ckpt_io.load(tmp_path / "r.pt")["rng"])
    again = (torch.rand(3), np.random.normal(size=3), random.random())
    assert torch.equal(first[0], again[0])
    assert np.array_equal(first[1], again[1]) and first[2] == again[2]


def test_predict_builds_no_graph_with_gradients_enabled():
    """Inference under grad mode keeps no graph: outputs and state need no grad, and the
    parameters get no gradient from them (the differentiable path would give both)."""
    torch.manual_seed(3)
    model = WithHead(nn.LSTM(2, 4), nn.Linear(4, 1))
    x = pack_sequence([torch.randn(9, 2), torch.randn(5, 2)], enforce_sorted=False)
    tr = vlrnn.Trainer(model, MSE, block_len=4, progress=False, device="cpu")
    assert torch.is_grad_enabled()
    y, (h, c) = tr.predict(x)
    assert not y.data.requires_grad and y.data.grad_fn is None
    assert not h.requires_grad and not c.requires_grad
    y2, _ = predict_blocks(model, x, block_len=4)
    assert not y2.data.requires_grad
    # the check can fail: the engine's differentiable path under grad mode keeps a graph
    y3, _ = vlrnn.block_outputs(model, x, block_len=4)
    assert y3.data.requires_grad
