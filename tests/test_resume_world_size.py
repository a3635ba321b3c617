"""Resume on another number of processes: a run checkpointed by 2 processes continues on 1,
and one checkpointed by 1 continues on 2; weights, optimizer state (momentum), epoch and
data order carry on, and both equal an uninterrupted run with the same global batch."""
from __future__ import annotations

import io
import os
import traceback
import warnings
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from helpers import end_distributed_worker
from test_trainer_distributed import (
    WORLD,
    _result,
    _trainer,
    assert_close_states,
    build_model,
    compare_history,
    equal_row_batches,
    free_port,
    packed,
)

gloo = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                          reason="torch.distributed with gloo is not available")
EPOCHS = 3


def rank_batches():
    """What every rank's loader gives: 4 batches; rank r trains on batches r, r + 2."""
    return [packed(b) for b in equal_row_batches()]


def union_batches():
    """The same global batches for one process: batches 0+1, then 2+3."""
    b = equal_row_batches()
    return [packed(b[j] + b[j + 1]) for j in range(0, len(b), WORLD)]


def fit(batches, epochs, ckpt=None, resume=None):
    torch.manual_seed(0)
    m = build_model()
    tr = _trainer(m, optimizer=torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9),
                  checkpoint_dir=ckpt, distributed=None)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        hist = tr.fit(batches, epochs=epochs, resume=resume)
    return _result(m, hist), [str(w.message) for w in seen]


def _worker(rank, port, tmp, queue):
    try:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        torch.set_num_threads(1)
        torch.set_default_dtype(torch.float64)
        dist.init_process_group("gloo", rank=rank, world_size=WORLD,
                                timeout=timedelta(seconds=60))
        tmp = Path(tmp)
        res = {"two_then_one": fit(rank_batches(), 1, ckpt=tmp / "by_two"),
               "one_then_two": fit(rank_batches(), EPOCHS, resume=tmp / "by_one")}
        buf = io.BytesIO()
        torch.save(res, buf)
        queue.put((rank, buf.getvalue()))
    except BaseException:
        queue.put((rank, traceback.format_exc()))
        raise
    finally:
        end_distributed_worker()


@gloo
def test_resume_two_processes_to_one_and_one_to_two(tmp_path):
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        (ref_state, ref_hist), _ = fit(union_batches(), EPOCHS)
        fit(union_batches(), 1, ckpt=tmp_path / "by_one")  # 1 process, epoch 1
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        port = free_port()
        procs = [ctx.Process(target=_worker, args=(r, port, str(tmp_path), queue))
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
        ranks = {r: torch.load(io.BytesIO(v), weights_only=False) for r, v in got.items()}

        # 1 -> 2: both ranks continue the one-process run and end where it ends
        for r in range(WORLD):
            (state, hist), seen = ranks[r]["one_then_two"]
            assert [h["epoch"] for h in hist] == list(range(1, EPOCHS + 1))
            assert any("1 process(es), this one has 2" in w for w in seen), seen
            assert_close_states(state, ref_state)
            compare_history(hist, pd.DataFrame(ref_hist))
        # 2 -> 1: one process continues the two-process run from its epoch 1
        (state, hist), seen = fit(union_batches(), EPOCHS, resume=tmp_path / "by_two")
        assert any("2 process(es), this one has 1" in w for w in seen), seen
        assert [h["epoch"] for h in hist] == list(range(1, EPOCHS + 1))
        assert_close_states(state, ref_state)
        compare_history(hist, pd.DataFrame(ref_hist))
        # the comparison can fail: without the optimizer's momentum the run goes elsewhere
        ckpt = torch.load(tmp_path / "by_two" / "last.pt", weights_only=True)
        torch.manual_seed(0)
        m = build_model()
        m.load_state_dict(ckpt["model"])
        tr = _trainer(m, optimizer=torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9))
        tr.fit(union_batches(), epochs=EPOCHS - 1)
        with pytest.raises(AssertionError):
            assert_close_states(m.state_dict(), ref_state)
    finally:
        torch.set_default_dtype(old)
