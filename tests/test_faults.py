"""Faults: a run killed (SIGKILL) mid-epoch or mid-checkpoint resumes to the weights of an
uninterrupted run; NaN/inf losses and gradients stop or skip cleanly; out-of-memory
errors say what to change.

The killed runs are real processes (forked from a server that imported torch once, so
that each start is cheap); the tests start them, kill them with SIGKILL and resume.
"""
from __future__ import annotations

import os
import random
import signal
import time
import traceback
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_sequence

import vlrnn
from vlrnn.data import SeriesDataset, make_loader
from vlrnn.models import WithHead
from vlrnn.training import _checkpoint_files as ckpt_io

HERE = Path(__file__).resolve()
EPOCHS = 3
KILLS = 4  # random kills of one run before it may finish
BATCHES_PER_EPOCH = 2  # 8 series in batches of 4
MSE = nn.MSELoss(reduction="none")
posix_only = pytest.mark.skipif(os.name != "posix", reason="needs SIGKILL")


# -- the training run (the same in the test process and in the killed ones) ---------------------
def build_model() -> nn.Module:
    """Same initial weights in every process, whatever the default dtype."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        torch.manual_seed(0)
        return WithHead(nn.LSTM(2, 6, num_layers=2, dropout=0.3), nn.Linear(6, 1)).double()
    finally:
        torch.set_default_dtype(old)


def dataset(n: int, seed: int) -> SeriesDataset:
    g = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    for _ in range(n):
        T = int(torch.randint(5, 21, (1,), generator=g))
        x = torch.randn(T, 2, generator=g, dtype=torch.float64)
        xs.append(x)
        ys.append(0.6 * x[:, :1] + 0.4 * torch.randn(T, 1, generator=g, dtype=torch.float64))
    return SeriesDataset(xs, ys, ids=list(range(n)), feature_cols=["a", "b"], target_cols=["y"])


def run(ckpt, model=None):
    """(trainer, train loader, val loader). Dropout (torch RNG) and shuffled length
    buckets: resume must restore both."""
    model = build_model() if model is None else model
    train = make_loader(dataset(8, 2), batch_size=4, shuffle=True, seed=11)
    val = make_loader(dataset(3, 3), batch_size=3, shuffle=False)
    tr = vlrnn.Trainer(model, MSE, block_len=7, lr=0.02, seed=5, progress=False,
                       device="cpu", checkpoint_dir=ckpt)
    return tr, train, val


class _SlowFile:
    """A file whose writes take a while (about 30 ms per checkpoint), so random kills
    land inside ``torch.save`` too."""

    def __init__(self, f):
        self._f, self._n = f, 0

    def write(self, b):
        self._n += 1
        if self._n % 20 == 0:  # torch.save writes a checkpoint in ~300 small pieces
            time.sleep(0.002)
        return self._f.write(b)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._f.__exit__(*exc)

    def __getattr__(self, name):
        return getattr(self._f, name)


class _OsShim:
    """``os`` as vlrnn.training._checkpoint_files sees it in a child: pauses before the N-th rename of
    last.pt, slows writes and fsyncs, and reports each completed last.pt."""

    def __init__(self, events: str, pause_at: int, slow: bool):
        self.events, self.pause_at, self.slow, self.renames = events, pause_at, slow, 0

    def __getattr__(self, name):
        return getattr(os, name)

    def fdopen(self, fd, *a, **kw):
        f = os.fdopen(fd, *a, **kw)
        return _SlowFile(f) if self.slow else f

    def fsync(self, fd):
        # SIGKILL ends the process, not the OS: what it wrote stays in the page cache,
        # so these tests need no real fsync (slow on a busy disk); slow mode stands in
        # for one, to widen the window between the temporary file and the rename
        if self.slow:
            time.sleep(0.02)

    def replace(self, src, dst):
        last = Path(dst).name == ckpt_io.LAST
        if last:
            self.renames += 1
            if self.renames == self.pause_at:
                event(self.events, f"PAUSED {src}")
                time.sleep(120)  # killed here
        os.replace(src, dst)
        if last:
            event(self.events, f"SAVED {self.renames}")


def event(path: str, text: str) -> None:
    """Append one line to the events file (one small O_APPEND write: whole or absent)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (text + "\n").encode())
    finally:
        os.close(fd)


def train_child(ckpt: str, out: str, events: str, kill_after_steps: int = 0,
                pause_at: int = 0, slow: bool = False) -> None:
    """The training run the tests kill (in its own process). ``kill_after_steps``: it
    kills itself with SIGKILL after that many optimizer steps; ``pause_at``: it stops
    before the N-th rename of last.pt; ``slow``: checkpoint writes take a while. Resumes
    from ``ckpt`` if it holds a checkpoint; writes the final weights to ``out``."""
    try:
        torch.set_num_threads(1)  # as in the test process: same kernels, same bits
        ckpt_io.os = _OsShim(events, pause_at, slow)
        resume = ckpt if (Path(ckpt) / ckpt_io.LAST).exists() else None
        tr, train, val = run(ckpt)
        if kill_after_steps:
            steps = [0]

            def hook(opt, a, kw):
                steps[0] += 1
                if steps[0] == kill_after_steps:
                    os.kill(os.getpid(), signal.SIGKILL)

            tr.optimizer.register_step_post_hook(hook)
        event(events, "START")
        hist = tr.fit(train, val, epochs=EPOCHS, resume=resume)
        torch.save({"model": tr.model.state_dict(), "history": hist.to_dict("records")}, out)
        event(events, "DONE")
    except BaseException:
        event(events, "ERROR " + traceback.format_exc().replace("\n", " | "))
        raise


# -- helpers for the tests ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def reference():
    """Weights and history of an uninterrupted run (in this process)."""
    tr, train, val = run(None)
    hist = tr.fit(train, val, epochs=EPOCHS)
    return tr.model.state_dict(), hist


@pytest.fixture(scope="module")
def procs():
    """Processes forked from a server that has imported torch and vlrnn once: each
    killed run is a real process of its own, without paying the imports again."""
    ctx = mp.get_context("forkserver")
    # (torch._dynamo: building the first optimizer imports it, seconds on a busy machine)
    ctx.set_forkserver_preload(["torch", "torch._dynamo", "vlrnn", HERE.stem])
    return ctx


class Child:
    """A training run in a process of its own; its progress read from an events file."""

    def __init__(self, ctx, tmp: Path, **options):
        self.out, self.events = tmp / "final.pt", tmp / "events.log"
        self.events.write_text("")
        self.proc = ctx.Process(target=train_child, args=(str(tmp / "ckpt"), str(self.out),
                                                         str(self.events)), kwargs=options)
        self.proc.start()

    @property
    def seen(self) -> list:
        return self.events.read_text().splitlines()

    def wait_for(self, prefix: str, timeout: float = 60) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for line in self.seen:
                if line.startswith(prefix):
                    return line
                assert not line.startswith("ERROR"), line
            time.sleep(0.01)
        self.kill()
        raise AssertionError(f"no {prefix!r} from the run; events {self.seen}")

    def kill(self) -> None:
        if self.proc.exitcode is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.join(timeout=30)

    def finish(self, timeout: float = 90) -> dict:
        self.proc.join(timeout=timeout)
        if self.proc.exitcode is None:
            self.kill()
        assert self.proc.exitcode == 0, self.seen
        return torch.load(self.out, weights_only=True)

    def saved(self) -> int:
        """Epochs whose last.pt the run reported complete."""
        return max([int(s.split()[1]) for s in self.seen if s.startswith("SAVED")], default=0)


def assert_equal_run(final: dict, reference) -> None:
    state, hist = reference
    for k, v in state.items():
        assert torch.equal(final["model"][k], v), f"{k} differs from the uninterrupted run"
    assert [r["train_loss"] for r in final["history"]] == hist["train_loss"].tolist()
    assert [r["val_loss"] for r in final["history"]] == hist["val_loss"].tolist()


def assert_final_folder(ckpt: Path, reference) -> None:
    """The finished run's folder: last.pt at the last epoch, last.prev.pt one epoch
    before it (rotation), best.pt at the best one, no temporary files left."""
    _, hist = reference
    assert sorted(p.name for p in ckpt.iterdir()) == ["best.pt", "last.prev.pt", "last.pt"]
    assert torch.load(ckpt / ckpt_io.LAST, weights_only=True)["epoch"] == EPOCHS
    assert torch.load(ckpt / ckpt_io.PREV, weights_only=True)["epoch"] == EPOCHS - 1
    best = torch.load(ckpt / ckpt_io.BEST, weights_only=True)
    assert best["epoch"] == int(hist["val_loss"].idxmin()) + 1


def check_folder(ckpt: Path, at_least: int) -> int:
    """Every checkpoint file on disk loads (with weights_only) and last.pt holds at least
    ``at_least`` finished epochs; returns its epoch (0: none yet)."""
    epoch = 0
    if (ckpt / ckpt_io.LAST).exists():
        data = torch.load(ckpt / ckpt_io.LAST, weights_only=True)
        epoch = data["epoch"]
        assert len(data["history"]) == epoch
    if (ckpt / ckpt_io.BEST).exists():
        best = torch.load(ckpt / ckpt_io.BEST, weights_only=True)
        assert 1 <= best["epoch"] <= max(epoch, 1) + 1
    assert epoch >= at_least, f"last.pt holds epoch {epoch}, but {at_least} were finished"
    return epoch


# -- (a) SIGKILL mid-epoch ---------------------------------------------------------------------
@posix_only
def test_sigkill_mid_epoch_then_resume_equals_uninterrupted_run(tmp_path, reference, procs):
    kill_at = BATCHES_PER_EPOCH + 1  # after the 1st of 2 steps of epoch 2
    child = Child(procs, tmp_path, kill_after_steps=kill_at)
    child.proc.join(timeout=90)
    assert child.proc.exitcode == -signal.SIGKILL, child.seen
    assert check_folder(tmp_path / "ckpt", 1) == 1  # epoch 1; epoch 2's first step is lost
    final = Child(procs, tmp_path).finish()
    assert_equal_run(final, reference)
    assert_final_folder(tmp_path / "ckpt", reference)


def test_the_resume_comparison_can_fail(tmp_path, reference):
    """Restarting from the epoch-2 weights without the optimizer, RNG and sampler
    state does not give the uninterrupted run's weights."""
    tr, train, val = run(None)
    tr.fit(train, val, epochs=2)
    tr2, train, val = run(None, model=tr.model)
    hist = tr2.fit(train, val, epochs=2)
    with pytest.raises(AssertionError):
        assert_equal_run({"model": tr2.model.state_dict(),
                          "history": hist.to_dict("records")}, reference)


# -- (b) SIGKILL during a checkpoint write -------------------------------------------------------
@posix_only
def test_sigkill_between_temp_write_and_rename_keeps_the_previous_checkpoint(
        tmp_path, reference, procs):
    ckpt = tmp_path / "ckpt"
    child = Child(procs, tmp_path, pause_at=2)  # epoch 2's last.pt written, not renamed
    tmp_file = Path(child.wait_for("PAUSED").split()[1])
    assert tmp_file.exists() and tmp_file.parent == ckpt
    child.kill()
    assert child.proc.exitcode == -signal.SIGKILL
    assert check_folder(ckpt, 1) == 1  # the previous complete checkpoint
    assert torch.load(tmp_file, weights_only=True)["epoch"] == 2  # the new one, unrenamed
    final = Child(procs, tmp_path).finish()
    assert_equal_run(final, reference)
    assert_final_folder(ckpt, reference)  # the stale temporary file is gone


@posix_only
def test_sigkill_at_random_moments_never_corrupts_or_loses_an_epoch(tmp_path, reference,
                                                                   procs):
    rng = random.Random(0)
    ckpt = tmp_path / "ckpt"
    done = 0
    for _ in range(KILLS):
        child = Child(procs, tmp_path, slow=True)
        child.wait_for("START")
        time.sleep(rng.uniform(0.0, 0.3))  # writes are slowed: kills often land in them
        child.kill()
        on_disk = check_folder(ckpt, max(done, child.saved()))
        assert on_disk <= max(done, child.saved()) + 1
        done = on_disk
    final = Child(procs, tmp_path, slow=True).finish()
    assert_equal_run(final, reference)
    assert_final_folder(ckpt, reference)


@posix_only
def test_checkpoint_files_get_the_permissions_of_any_new_file(tmp_path):
    """(mkstemp alone makes them readable by their owner only)"""
    ckpt_io.save_atomic({"epoch": 1}, tmp_path / "last.pt")
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    assert (tmp_path / "last.pt").stat().st_mode & 0o777 == plain.stat().st_mode & 0o777


def test_remove_stale_temp_only_touches_checkpoint_temporaries(tmp_path):
    for name in (".last.pt.abc.tmp", ".best.pt.x1.tmp", "last.pt", ".other.tmp", "notes.txt"):
        (tmp_path / name).write_text("x")
    removed = ckpt_io.remove_stale_temp(tmp_path)
    assert sorted(p.name for p in removed) == [".best.pt.x1.tmp", ".last.pt.abc.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.tmp", "last.pt", "notes.txt"]
    assert ckpt_io.remove_stale_temp(tmp_path / "missing") == []


# -- (c) NaN / inf in the loss or the gradients -----------------------------------------------
class _BadGrad(torch.autograd.Function):
    """Identity forward; NaN (or inf) gradient backward."""

    @staticmethod
    def forward(ctx, x, value):
        ctx.value = value
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * ctx.value, None


class Flaky(nn.Module):
    """LSTM + head; while ``poison`` is set the output is finite but its gradient not."""

    state_batch_dim = 1

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.rnn = nn.LSTM(2, 5)
        self.head = nn.Linear(5, 1)
        self.poison = None

    def forward(self, x, h):
        out, h = self.rnn(x, h)
        y = self.head(out.data)
        if self.poison is not None:
            y = _BadGrad.apply(y, self.poison)
        return PackedSequence(y, out.batch_sizes, out.sorted_indices, out.unsorted_indices), h


def batches(n: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        lengths = [int(torch.randint(3, 15, (1,), generator=g)) for _ in range(3)]
        xs = [torch.randn(T, 2, generator=g) for T in lengths]
        ys = [torch.randn(T, 1, generator=g) for T in lengths]
        out.append((pack_sequence(xs, enforce_sorted=False),
                    pack_sequence(ys, enforce_sorted=False)))
    return out


def with_loss(batch, value: float):
    x, y = batch
    data = y.data.clone()
    data[2, 0] = value
    return x, y._replace(data=data)


class PoisonLoader:
    """Yields ``items`` each epoch; the model's gradient is poisoned during the steps
    numbered in ``bad`` (counted over all epochs, from 0)."""

    def __init__(self, model: Flaky, items, bad, value=float("nan")):
        self.model, self.items, self.bad, self.value = model, items, set(bad), value
        self.step = 0

    def __iter__(self):
        for b in self.items:
            self.model.poison = self.value if self.step in self.bad else None
            self.step += 1
            yield b
        self.model.poison = None


def flaky_trainer(model, **kw):
    return vlrnn.Trainer(model, MSE, block_len=4, lr=0.05, progress=False, device="cpu", **kw)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nonfinite_gradient_raises_naming_epoch_batch_and_parameter(value):
    model = Flaky()
    data = batches()
    with pytest.raises(FloatingPointError, match=r"gradient of rnn\.weight_ih_l0 is not "
                                                 r"finite \(NaN/inf\) at epoch 2, batch 1 "
                                                 r"\(0-based\).*skip_nonfinite=True"):
        flaky_trainer(model).fit(PoisonLoader(model, data, bad=[5], value=value), epochs=3)
    # no step was taken on the bad batch: the weights are those after 1 epoch + 1 batch
    ref = Flaky()
    flaky_trainer(ref).fit(data + data[:1], epochs=1)
    for a, b in zip(model.parameters(), ref.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("value,shown", [(float("nan"), "nan"), (float("inf"), "inf"),
                                         (-float("inf"), "inf")])  # squared: +inf
def test_nonfinite_loss_raises_naming_epoch_and_batch(value, shown):
    data = batches()
    data[2] = with_loss(data[2], value)
    with pytest.raises(FloatingPointError, match=rf"loss is {shown} at epoch 1, batch 2 "
                                                 r"\(0-based\).*skip_nonfinite=True"):
        flaky_trainer(Flaky()).fit(data, epochs=1)


def test_skip_nonfinite_leaves_weights_and_optimizer_state_unchanged():
    data = batches()
    data[3] = with_loss(data[3], float("nan"))  # a NaN loss
    model = Flaky()
    tr = flaky_trainer(model, skip_nonfinite=True)
    hist = tr.fit(PoisonLoader(model, data, bad=[1, 5]), epochs=2)  # and a NaN gradient
    assert hist["skipped"].tolist() == [2, 2]
    # equal to a run that never saw batches 1 and 3: Adam's state did not move either
    ref_model = Flaky()
    ref = flaky_trainer(ref_model)
    ref_hist = ref.fit([data[0], data[2]], epochs=2)
    assert ref_hist["skipped"].tolist() == [0, 0]
    for a, b in zip(model.parameters(), ref_model.parameters()):
        assert torch.equal(a, b)
    sa, sb = tr.optimizer.state_dict()["state"], ref.optimizer.state_dict()["state"]
    assert sa.keys() == sb.keys()
    for k in sa:
        for name in sa[k]:
            assert torch.equal(torch.as_tensor(sa[k][name]), torch.as_tensor(sb[k][name]))
    assert hist["train_loss"].tolist() == ref_hist["train_loss"].tolist()  # bad left out


def test_every_step_skipped_gives_nan_loss_not_an_error():
    data = [with_loss(b, float("inf")) for b in batches(2)]
    hist = flaky_trainer(Flaky(), skip_nonfinite=True).fit(data, epochs=1)
    assert hist["skipped"].tolist() == [2] and hist["train_loss"].isna().all()


# -- (d) out of memory -----------------------------------------------------------------------------
class Oom(nn.Module):
    """``Flaky`` that raises ``error`` on its ``fail_at``-th call."""

    state_batch_dim = 1

    def __init__(self, error: BaseException, fail_at: int):
        super().__init__()
        self.inner, self.error, self.fail_at, self.calls = Flaky(), error, fail_at, 0
        self.in_backward = None

    def forward(self, x, h):
        self.calls += 1
        if self.calls == self.fail_at:
            self.in_backward = torch._C._current_graph_task_id() != -1
            raise self.error
        return self.inner(x, h)


OOMS = {
    "cuda": lambda: torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB"),
    "cpu": lambda: RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: "
                                "not enough memory: you tried to allocate 8589934592 bytes."),
    "python": lambda: MemoryError(),
}


@pytest.mark.parametrize("kind", list(OOMS))
@pytest.mark.parametrize("where", ["first-block", "recompute-in-backward"])
def test_out_of_memory_names_the_block_and_suggests_auto(kind, where):
    err = OOMS[kind]()
    data = batches(1)
    n_blocks = -(-len(data[0][0].batch_sizes) // 4)
    assert n_blocks >= 2
    # the forward pass calls the model once per block; the backward recomputes from there
    fail_at = 1 if where == "first-block" else n_blocks + 1
    model = Oom(err, fail_at)
    with pytest.raises(type(err)) as info:
        flaky_trainer(model).fit(data, epochs=1)
    msg = str(info.value)
    assert "out of memory at epoch 1, batch 0 (block_len=4)" in msg
    assert "block_len='auto'" in msg and "memory_budget" in msg and "smaller block_len" in msg
    assert info.value.__cause__ is err
    assert model.in_backward == (fail_at > 1)
    with pytest.raises(type(err), match="out of memory evaluating batch 0"):
        flaky_trainer(Oom(OOMS[kind](), 1)).evaluate(data)


def test_other_errors_pass_through_unchanged():
    err = RuntimeError("mat1 and mat2 shapes cannot be multiplied")
    with pytest.raises(RuntimeError) as info:
        flaky_trainer(Oom(err, 1)).fit(batches(1), epochs=1)
    assert info.value is err

