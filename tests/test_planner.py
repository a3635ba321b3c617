"""The memory planner: parsing budgets, choosing plans, and block_len="auto"."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import vlrnn
from vlrnn.engine._planner import choose, parse_bytes

from helpers import assert_close_grads, ragged_batch, run_both


@pytest.mark.parametrize("text,n", [("2GB", 2 * 2**30), ("512 MiB", 512 * 2**20), ("1.5k", 1536),
                                    (1000, 1000), (2.5e3, 2500), ("64", 64)])
def test_parse_bytes(text, n):
    assert parse_bytes(text) == n


@pytest.mark.parametrize("bad", ["lots", "2 parsecs", "-1GB", 0, -5, True])
def test_parse_bytes_rejects(bad):
    with pytest.raises((ValueError, TypeError), match="memory_budget"):
        parse_bytes(bad)


def test_choose_degrades_smoothly_with_budget():
    """More budget never means more recompute; plain BPTT when it fits."""
    kw = dict(n_steps=10_000, n_rows=160_000, n_batch=16, bytes_per_row=10_000,
              state_bytes=32_768, draws_random=False)
    plain = 160_000 * 10_000
    budgets = [2**20 * m for m in (12, 20, 40, 80, 200, 800, 2000)] + [3 * plain]
    plans = [choose(budget=b, **kw) for b in budgets]
    passes = [p.forward_passes for p in plans]
    assert passes == sorted(passes, reverse=True), passes
    for p, b in zip(plans, budgets):
        assert p.predicted_bytes <= b
    assert plans[-1].n_blocks == 1 and plans[-1].forward_passes == 1.0
    assert plans[0].schedule != "flat"  # 12 MB cannot hold 10,000 / L states plus a block
    with pytest.raises(MemoryError, match="raise memory_budget"):
        choose(budget=2**20, **kw)


def _setup():
    torch.manual_seed(0)
    model, head = nn.LSTM(3, 6, num_layers=2), nn.Linear(6, 2)
    x, y = ragged_batch([300, 120, 260, 5], 3, 2)
    return model, head, x, y, (lambda o, t: (head(o) - t) ** 2)


def test_plan_measures_the_model():
    model, head, x, y, lf = _setup()
    p = vlrnn.plan(model, x, None, "4MB", loss_fn=lf, target=y)
    assert p.n_steps == 300 and p.budget == 4 * 2**20
    assert p.predicted_bytes <= p.budget
    assert p.bytes_per_row > 0 and p.state_bytes == 2 * 2 * 4 * 6 * 8  # (h, c), 2 layers, B=4, H=6, f64
    assert "block_len=" in str(p) and "predicted memory" in str(p)
    assert p.plain_bytes == pytest.approx(p.bytes_per_row * x.data.shape[0], abs=1)


@pytest.mark.parametrize("budget", ["160KB", "400KB", "1MB", "1GB"])
def test_auto_block_len_is_exact(budget):
    model, head, x, y, lf = _setup()
    params = list(model.parameters()) + list(head.parameters())
    ref, got, r, o = run_both(
        params,
        lambda: vlrnn.full_backward(model, lf, x, y),
        lambda: vlrnn.block_backward(model, lf, x, y, block_len="auto", memory_budget=budget))
    assert_close_grads(ref, got)
    p = vlrnn.plan(model, x, None, budget, loss_fn=lf, target=y)
    assert o.n_blocks == p.n_blocks


def test_budget_keeps_graphs_instead_of_recomputing():
    model, head, x, y, lf = _setup()
    calls = []
    model.register_forward_hook(lambda m, i, o: calls.append(1))
    big = vlrnn.plan(model, x, None, "1GB", loss_fn=lf, target=y, block_len=20)
    assert big.keep_last == big.n_blocks == 15  # everything fits: nothing recomputed
    calls.clear()
    out = vlrnn.block_backward(model, lf, x, y, block_len=20, memory_budget="1GB")
    assert out.n_blocks == 15 and len(calls) == 1 + 15  # the planner's probe, then 15 blocks
    calls.clear()
    vlrnn.block_backward(model, lf, x, y, block_len=20)  # no budget: recompute all but last
    assert len(calls) == 15 + 14


def test_huge_budget_is_plain_bptt():
    model, head, _, _, lf = _setup()
    x, y = torch.randn(300, 4, 3), torch.randn(300, 4, 2)  # dense: one call is fastest
    calls = []
    model.register_forward_hook(lambda m, i, o: calls.append(1))
    out = vlrnn.block_backward(model, lf, x, y, block_len="auto", memory_budget="4GB")
    assert out.n_blocks == 1 and len(calls) == 2  # probe + one call over everything


def test_ragged_batches_keep_blocks_short():
    """Long ragged packed blocks are slow in torch's CPU kernel: even with room for plain
    BPTT, a ragged batch is cut at 256 steps, every block kept (nothing recomputed)."""
    model, head, x, y, lf = _setup()
    calls = []
    model.register_forward_hook(lambda m, i, o: calls.append(1))
    out = vlrnn.block_backward(model, lf, x, y, block_len="auto", memory_budget="4GB")
    assert out.n_blocks == 2 and len(calls) == 1 + 2


def test_bad_auto_options():
    model, head, x, y, lf = _setup()
    with pytest.raises(ValueError, match="block_len must be a positive int or 'auto'"):
        vlrnn.block_loss(model, lf, x, y, block_len="big")
    with pytest.raises(ValueError, match="unknown schedule 'fast'"):
        vlrnn.block_loss(model, lf, x, y, block_len="auto", schedule="fast")
    with pytest.raises(MemoryError, match="no block length and schedule fit"):
        vlrnn.block_loss(model, lf, x, y, block_len="auto", memory_budget=100)
