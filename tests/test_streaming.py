"""Dense input streamed block by block from numpy arrays and .npy memmaps."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import vlrnn
from vlrnn.engine._streaming import ArrayStream

from helpers import assert_close_grads, run_both


@pytest.fixture
def npy(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 3, 4))
    y = rng.standard_normal((50, 3, 2))
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    return x, y, np.load(tmp_path / "x.npy", mmap_mode="r"), np.load(tmp_path / "y.npy", mmap_mode="r")


def test_memmap_is_read_from_the_file_not_the_mapping(npy):
    x, _, xm, _ = npy
    s = ArrayStream(xm, batch_first=False, device=torch.device("cpu"))
    assert s._fd is not None  # os.pread, so mapped pages never count in RSS
    assert torch.equal(s.read(7, 19), torch.from_numpy(x[7:19]))
    sliced = ArrayStream(xm[5:], batch_first=False, device=torch.device("cpu"))
    assert sliced._fd is None  # a slice falls back to copying through numpy
    assert torch.equal(sliced.read(0, 3), torch.from_numpy(x[5:8]))


@pytest.mark.parametrize("schedule", ["flat", "two_level", "revolve"])
def test_streamed_gradients_equal_in_memory(npy, schedule):
    x, y, xm, ym = npy
    torch.manual_seed(0)
    model, head = nn.GRU(4, 5, num_layers=2), nn.Linear(5, 2)
    lf = lambda o, t: (head(o) - t) ** 2
    params = list(model.parameters()) + list(head.parameters())
    ref, got, r, o = run_both(
        params,
        lambda: vlrnn.full_backward(model, lf, torch.from_numpy(x), torch.from_numpy(y)),
        lambda: vlrnn.block_backward(model, lf, xm, ym, block_len=6, schedule=schedule))
    assert_close_grads(ref, got)
    assert torch.allclose(r.loss, o.loss)


def test_batch_first_numpy_array():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 40, 4))
    y = rng.standard_normal((3, 40, 2))
    torch.manual_seed(0)
    model, head = nn.LSTM(4, 5, batch_first=True), nn.Linear(5, 2)
    lf = lambda o, t: (head(o) - t) ** 2
    ref, got, _, _ = run_both(
        list(model.parameters()),
        lambda: vlrnn.full_backward(model, lf, torch.from_numpy(x), torch.from_numpy(y)),
        lambda: vlrnn.block_backward(model, lf, x, y, block_len=9))
    assert_close_grads(ref, got)


def test_nan_in_a_streamed_block_is_named(npy, tmp_path):
    x, y, _, _ = npy
    x = x.copy()
    x[33, 1, 2] = np.nan
    model = nn.GRU(4, 2)
    with pytest.raises(ValueError, match="x has a non-finite value .* at time step 33"):
        vlrnn.block_backward(model, lambda o, t: (o - t) ** 2, x, y, block_len=8)


def test_stream_shape_errors():
    model = nn.GRU(4, 2)
    with pytest.raises(ValueError, match="time and a batch dimension"):
        vlrnn.block_loss(model, None, np.zeros(5), None)
    with pytest.raises(ValueError, match=r"target's leading dims \(T, B\) must equal x's \(6, 2\)"):
        vlrnn.block_loss(model, lambda o, t: (o - t) ** 2, np.zeros((6, 2, 4)), np.zeros((5, 2, 2)))
