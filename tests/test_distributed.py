"""block_loss under DistributedDataParallel (gloo, 2 processes on this CPU).

Ranks get ragged batches with different numbers of blocks; the gradients after the
all-reduce must equal the mean of the single-process gradients, and nothing may hang.
"""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_sequence

import vlrnn
from helpers import end_distributed_worker

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")

LENGTHS = {0: [30, 7, 19], 1: [50, 3]}  # 8 and 13 blocks of 4 steps
mse = nn.MSELoss(reduction="none")


class Model(nn.Module):
    state_batch_dim = 1

    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(3, 4, num_layers=2)
        self.head = nn.Linear(4, 2)

    def forward(self, x, h):
        out, h = self.rnn(x, h)
        return PackedSequence(self.head(out.data), out.batch_sizes, out.sorted_indices,
                              out.unsorted_indices), h


def build_model():
    """The same initial weights in every process (init draws depend on the dtype)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        torch.manual_seed(0)
        return Model().double()
    finally:
        torch.set_default_dtype(old)


def rank_data(rank):
    g = torch.Generator().manual_seed(100 + rank)
    lens = LENGTHS[rank]
    xs = [torch.randn(n, 3, generator=g, dtype=torch.float64) for n in lens]
    ys = [torch.randn(n, 2, generator=g, dtype=torch.float64) for n in lens]
    return pack_sequence(xs, enforce_sorted=False), pack_sequence(ys, enforce_sorted=False)


def _worker(rank, world, port, queue):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = build_model()
        ddp = nn.parallel.DistributedDataParallel(model)
        x, y = rank_data(rank)
        for _ in range(2):  # two backward passes: gradient accumulation across calls
            out = vlrnn.block_loss(ddp, mse, x, y, block_len=4, reduction="sum")
            out.loss.backward()
        queue.put((rank, [p.grad.tolist() for p in model.parameters()]))
    finally:
        end_distributed_worker()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_matches_single_process_mean():
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_worker, args=(r, 2, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    try:
        results = dict(queue.get(timeout=120) for _ in procs)
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    assert all(p.exitcode == 0 for p in procs)

    model = build_model()
    for rank in range(2):
        x, y = rank_data(rank)
        for _ in range(2):
            vlrnn.full_backward(model, mse, x, y, reduction="sum")
    ref = [p.grad / 2 for p in model.parameters()]  # DDP averages over ranks
    for rank in range(2):
        for a, b in zip(ref, results[rank]):
            b = torch.tensor(b, dtype=a.dtype)
            assert ((a - b).abs().max() / a.abs().max()).item() < 1e-7
