"""Trainer(distributed=True): 2 gloo processes on this CPU against one process.

Why the comparisons are exact (up to float64 rounding): DDP averages the ranks'
gradients, g = (g_0 + g_1) / 2, where g_r is the gradient of rank r's batch loss.

- ``reduction="sum"``: one process on the union of the two batches computes
  g_0 + g_1, so SGD with ``lr / 2`` there takes the step SGD with ``lr`` takes under DDP
  (any batches, any row counts).
- ``reduction="mean"`` with the same number of rows ``N`` on both ranks at every step:
  the union's mean is (s_0 + s_1) / (2N) = (s_0 / N + s_1 / N) / 2, the DDP average, so
  the same optimizer (SGD with momentum here) with the same ``lr`` takes the same steps.

The union batches are built from the loader's epoch order as the Trainer splits it:
step j of rank r trains on batch ``j * 2 + r``, the list padded cyclically to an even
length (5 batches: steps (b0, b1), (b2, b3), (b4, b0)).
"""
from __future__ import annotations

import io
import os
import socket
import traceback
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.utils.rnn import pack_sequence
from torch.utils.data import DataLoader

import vlrnn
from vlrnn.data import LengthBucketSampler, SeriesDataset, collate_packed, make_loader
from vlrnn.models import WithHead
from vlrnn.training import _checkpoint_files as ckpt_io
from vlrnn.training import _distributed as dd
from vlrnn.training._tensorboard import tensorboard_available

from helpers import end_distributed_worker

WORLD = 2
MSE = nn.MSELoss(reduction="none")
RTOL = 1e-10

gloo = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                          reason="torch.distributed with gloo is not available")


# -- data and models (the same in every process) ---------------------------------------------
def build_model(dropout: float = 0.0) -> nn.Module:
    """Same initial weights in every process (init draws depend on the default dtype)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        torch.manual_seed(0)
        return WithHead(nn.LSTM(2, 4, num_layers=2 if dropout else 1, dropout=dropout),
                        nn.Linear(4, 1)).double()
    finally:
        torch.set_default_dtype(old)


def series_dataset(n: int, seed: int) -> SeriesDataset:
    g = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    for _ in range(n):
        T = int(torch.randint(3, 15, (1,), generator=g))
        x = torch.randn(T, 2, generator=g, dtype=torch.float64)
        xs.append(x)
        ys.append(x[:, :1].cumsum(0) * 0.3 + 0.1 * torch.randn(T, 1, generator=g,
                                                                 dtype=torch.float64))
    return SeriesDataset(xs, ys, ids=list(range(n)), feature_cols=["a", "b"], target_cols=["y"])


TRAIN_DS, VAL_DS = series_dataset(9, 1), series_dataset(5, 2)


def train_loader() -> DataLoader:
    # 9 series in batches of 2: 5 batches, an odd number, so the Trainer pads
    return make_loader(TRAIN_DS, batch_size=2, shuffle=True, seed=3)


def val_loader() -> DataLoader:
    return make_loader(VAL_DS, batch_size=2, shuffle=False)  # 3 batches: 2 + 1 per rank


EQUAL_ROWS = [(10, 4), (7, 7), (3, 5, 6), (9, 5)]  # 14 rows each; 4 and 3 blocks of 3


def equal_row_batches(nan_in: int = -1):
    g = torch.Generator().manual_seed(7)
    out = []
    for j, lengths in enumerate(EQUAL_ROWS):
        xs = [torch.randn(n, 2, generator=g, dtype=torch.float64) for n in lengths]
        ys = [torch.randn(n, 1, generator=g, dtype=torch.float64) for n in lengths]
        if j == nan_in:
            ys[0][1, 0] = float("nan")
        out.append([(a, b) for a, b in zip(xs, ys)])
    return out


def packed(items):
    return collate_packed(items)


# -- the 2-process run -----------------------------------------------------------------------
def _trainer(model, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("device", "cpu")
    kw.setdefault("block_len", 3)
    return vlrnn.Trainer(model, MSE, **kw)


def _result(model, hist):
    return {k: v.clone() for k, v in model.state_dict().items()}, hist.to_dict("records")


def _logged_steps(log_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return [e.step for e in acc.Scalars("step/train_loss")]


def _worker(rank, world, port, tmp, queue):
    try:
        os.environ["MASTER_ADDR"] = "127.0.0.1"
        os.environ["MASTER_PORT"] = str(port)
        torch.set_num_threads(1)
        dist.init_process_group("gloo", rank=rank, world_size=world,
                                timeout=timedelta(seconds=60))
        tmp = Path(tmp)
        saves = []
        real_save = ckpt_io.save_atomic

        def counting_save(obj, path):
            saves.append(Path(path).name)
            return real_save(obj, path)

        ckpt_io.save_atomic = counting_save
        res = {}
        # 1. "sum", length-bucketed loader split by the Trainer (padded), validation,
        #    checkpoints
        m = build_model()
        tr = _trainer(m, optimizer=torch.optim.SGD(m.parameters(), lr=0.02), reduction="sum",
                      distributed=True, checkpoint_dir=tmp / "sum",
                      log_dir=tmp / "tb" if tensorboard_available() else None)
        res["sum"] = _result(m, tr.fit(train_loader(), val_loader(), epochs=2))
        dist.barrier()  # both ranks done: then the TensorBoard folder is complete
        res["tb_files"] = sorted(p.name for p in (tmp / "tb").glob("events.out.tfevents.*"))
        res["tb_steps"] = _logged_steps(tmp / "tb") if res["tb_files"] else []
        res["saves"] = list(saves)
        res["ddp"] = isinstance(tr._train_model, nn.parallel.DistributedDataParallel)
        # 2. "mean", equal rows per rank, a plain list of batches; distributed found alone
        m = build_model()
        tr = _trainer(m, optimizer=torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9))
        res["auto"] = tr.distributed
        res["mean"] = _result(m, tr.fit([packed(b) for b in equal_row_batches()], epochs=2))
        # 3. a NaN on rank 1 only: with skip_nonfinite both ranks skip that step
        m = build_model()
        tr = _trainer(m, optimizer=torch.optim.SGD(m.parameters(), lr=0.05),
                      skip_nonfinite=True)
        res["skip"] = _result(m, tr.fit([packed(b) for b in equal_row_batches(nan_in=3)],
                                        epochs=2))
        # 4. dropout: resume continues every rank's own random stream
        full = build_model(0.3)
        _trainer(full, seed=4, lr=0.01).fit(train_loader(), epochs=3)
        _trainer(build_model(0.3), seed=4, lr=0.01,
                 checkpoint_dir=tmp / "cut").fit(train_loader(), epochs=2)
        torch.randn(50)  # the random stream moves on, as in a new process
        resumed = build_model(0.3)
        _trainer(resumed, seed=4, lr=0.01).fit(train_loader(), epochs=3, resume=tmp / "cut")
        res["resume_equal"] = all(torch.equal(a, b) for a, b in
                                  zip(full.state_dict().values(), resumed.state_dict().values()))
        res["rng_ranks"] = len(ckpt_io.load(tmp / "cut")["rng_ranks"])
        buf = io.BytesIO()
        torch.save(res, buf)
        queue.put((rank, buf.getvalue()))
    except BaseException:
        queue.put((rank, traceback.format_exc()))
        raise
    finally:
        end_distributed_worker()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """Results of the 2-process run, by rank."""
    tmp = tmp_path_factory.mktemp("ddp")
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_worker, args=(r, WORLD, port, str(tmp), queue))
             for r in range(WORLD)]
    for p in procs:
        p.start()
    try:
        got = dict(queue.get(timeout=150) for _ in procs)
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    for r, v in got.items():
        assert not isinstance(v, str), f"rank {r} failed:\n{v}"
    assert all(p.exitcode == 0 for p in procs)
    return {r: torch.load(io.BytesIO(v), weights_only=False) for r, v in got.items()}


def union_batches(epoch: int):
    """The 1-process batches: step j = union of the batches ranks 0 and 1 train on."""
    ref = make_loader(TRAIN_DS, batch_size=2, shuffle=True, seed=3).batch_sampler
    assert isinstance(ref, LengthBucketSampler)
    order = ref.batches(epoch)
    order = order + order[:(-len(order)) % WORLD]  # cyclic padding
    return [packed([TRAIN_DS[i] for i in order[j] + order[j + 1]])
            for j in range(0, len(order), WORLD)]


class UnionLoader:
    def __init__(self):
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        return iter(union_batches(self.epoch))


def assert_close_states(a, b, rtol=RTOL):
    assert a.keys() == b.keys()
    for k in a:
        err = ((a[k] - b[k]).abs().max() / b[k].abs().max().clamp_min(1e-30)).item()
        assert err <= rtol, f"{k}: relative error {err:.2e}"


def assert_same_on_both_ranks(ranks, key):
    (s0, h0), (s1, h1) = ranks[0][key], ranks[1][key]
    for k in s0:
        assert torch.equal(s0[k], s1[k]), f"{key}: {k} differs between ranks"
    for r0, r1 in zip(h0, h1):  # the same history on every rank (all-reduced losses)
        for k in ("epoch", "train_loss", "val_loss", "lr", "skipped"):
            assert r0[k] == r1[k] or (r0[k] != r0[k] and r1[k] != r1[k]), (k, r0, r1)


def compare_history(hist, ref):
    assert [r["epoch"] for r in hist] == ref["epoch"].tolist()
    for col in ("train_loss", "val_loss"):
        got, want = [r[col] for r in hist], ref[col].tolist()
        for g, w in zip(got, want):
            assert (g != g and w != w) or abs(g - w) <= RTOL * abs(w), (col, got, want)


@gloo
def test_sum_reduction_with_padding_equals_one_process_on_the_union(ranks):
    assert ranks[0]["ddp"] and ranks[1]["ddp"]
    assert_same_on_both_ranks(ranks, "sum")
    m = build_model()
    ref = _trainer(m, optimizer=torch.optim.SGD(m.parameters(), lr=0.02 / WORLD),
                   reduction="sum")
    hist = ref.fit(UnionLoader(), val_loader(), epochs=2)
    state, dist_hist = ranks[0]["sum"]
    compare_history(dist_hist, hist)  # train and validation losses over all ranks
    assert_close_states(state, m.state_dict())  # train and validation losses over all ranks


@gloo
def test_mean_reduction_with_equal_rows_equals_one_process_on_the_union(ranks):
    assert ranks[0]["auto"] and ranks[1]["auto"]  # found the process group alone
    assert_same_on_both_ranks(ranks, "mean")
    batches = equal_row_batches()
    union = [packed(batches[j] + batches[j + 1]) for j in range(0, len(batches), WORLD)]
    m = build_model()
    ref = _trainer(m, optimizer=torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9))
    hist = ref.fit(union, epochs=2)
    state, dist_hist = ranks[0]["mean"]
    assert_close_states(state, m.state_dict())
    compare_history(dist_hist, hist)
    # the comparison can fail: the union of other pairs of batches trains otherwise
    m2 = build_model()
    _trainer(m2, optimizer=torch.optim.SGD(m2.parameters(), lr=0.05, momentum=0.9)).fit(
        [packed(batches[0] + batches[2]), packed(batches[1] + batches[3])], epochs=2)
    with pytest.raises(AssertionError):
        assert_close_states(state, m2.state_dict())


@gloo
def test_nonfinite_loss_on_one_rank_skips_the_step_on_all(ranks):
    assert_same_on_both_ranks(ranks, "skip")
    batches = equal_row_batches(nan_in=3)
    union = [packed(batches[j] + batches[j + 1]) for j in range(0, len(batches), WORLD)]
    m = build_model()
    ref = _trainer(m, optimizer=torch.optim.SGD(m.parameters(), lr=0.05), skip_nonfinite=True)
    hist = ref.fit(union, epochs=2)
    state, dist_hist = ranks[0]["skip"]
    assert [r["skipped"] for r in dist_hist] == [1, 1] == hist["skipped"].tolist()
    assert_close_states(state, m.state_dict())
    compare_history(dist_hist, hist)


@gloo
def test_only_rank_0_writes_checkpoints_and_resume_is_exact(ranks):
    assert ranks[1]["saves"] == []
    # epoch 1 improves the validation loss (best.pt, then last.pt), epoch 2 at least last
    assert ranks[0]["saves"][:2] == ["best.pt", "last.pt"]
    assert ranks[0]["saves"].count("last.pt") == 2
    assert ranks[0]["rng_ranks"] == WORLD
    assert ranks[0]["resume_equal"] and ranks[1]["resume_equal"]


@gloo
def test_only_rank_0_writes_tensorboard_logs(ranks):
    if not tensorboard_available():
        pytest.skip("tensorboard is not installed (the test extra has it)")
    # one writer for the run (rank 0's); rank 1 opened none, so no second event file
    assert len(ranks[0]["tb_files"]) == 1 and ranks[1]["tb_files"] == ranks[0]["tb_files"]
    # 5 batches padded to 6: 3 steps per rank and epoch, numbered on through 2 epochs
    assert ranks[0]["tb_steps"] == [1, 2, 3, 4, 5, 6]


# -- splitting batches (no processes needed) ------------------------------------------------
@pytest.mark.parametrize("w", [1, 2, 3])
@pytest.mark.parametrize("n", [0, 1, 2, 5, 6, 7])
def test_rank_share(n, w):
    pad = [dd.rank_share(n, w, r, "pad") for r in range(w)]
    drop = [dd.rank_share(n, w, r, "drop") for r in range(w)]
    uneven = [dd.rank_share(n, w, r, None) for r in range(w)]
    assert {len(p) for p in pad} == {-(-n // w)}
    assert {len(d) for d in drop} == {n // w}
    assert sorted(i for u in uneven for i in u) == list(range(n))  # each batch once
    assert set(i for p in pad for i in p) == set(range(n))  # padding only repeats
    assert sorted(i for d in drop for i in d) == list(range(n - n % w))
    with pytest.raises(ValueError, match="even must be"):
        dd.rank_share(n, w, 0, "repeat")


@pytest.mark.parametrize("even", ["pad", "drop", None])
def test_stream_shard_equals_sequence_shard(even):
    items = list(range(7))
    for r in range(3):
        seq = list(dd.shard_loader(items, 3, r, even))
        stream = list(dd.shard_loader(iter(items), 3, r, even))  # no len: streamed
        assert stream == seq == [items[i] for i in dd.rank_share(7, 3, r, even)]


def test_batch_sampler_split_keeps_length_groups_and_follows_the_epoch():
    sampler = LengthBucketSampler(TRAIN_DS.lengths, batch_size=2, shuffle=True, seed=3)
    for epoch in (0, 1):
        want = sampler.batches(epoch)
        got = []
        for r in range(WORLD):
            part = dd.DistributedBatchSampler(sampler, WORLD, r)
            part.set_epoch(epoch)
            assert len(part) == 3
            got.append(list(part))
        assert got[0] == [want[0], want[2], want[4]]
        assert got[1] == [want[1], want[3], want[0]]  # padded with the epoch's first batch


def test_shard_loader_wraps_a_dataloader_and_refuses_unseeded_shuffling():
    loader = train_loader()
    part = dd.shard_loader(loader, WORLD, 1)
    assert isinstance(part, DataLoader) and part.collate_fn is loader.collate_fn
    loader.batch_sampler.set_epoch(0)
    want = loader.batch_sampler.batches(0)
    xs = [x for x, _ in part]
    assert len(xs) == 3
    for x, idx in zip(xs, [want[1], want[3], want[0]]):
        ref = pack_sequence([TRAIN_DS[i][0] for i in idx], enforce_sorted=False)
        assert torch.equal(x.data, ref.data)
    with pytest.raises(ValueError, match="no generator"):
        dd.shard_loader(DataLoader(TRAIN_DS, batch_size=2, shuffle=True,
                                   collate_fn=collate_packed), WORLD, 0)


def test_distributed_true_without_a_process_group_is_a_clear_error(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(RuntimeError, match="torchrun"):
        _trainer(build_model(), distributed=True)
    assert not _trainer(build_model()).distributed  # default: off without a group
