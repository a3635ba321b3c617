"""Schedules: revolve's block forward calls are the binomial optimum, and every
schedule's gradient is exact."""
from __future__ import annotations

import math

import pytest
import torch
from checkpoint_schedules.multistage import optimal_extra_steps, optimal_steps_binomial
from torch import nn

import vlrnn
from vlrnn.engine._planner import choose
from vlrnn.engine._runner import BlockRunner
from vlrnn.engine._schedules import Revolve, extra_calls, get_schedule, revolve_calls, revolve_with

from helpers import assert_close_grads, flat_state, ragged_batch, run_both, seeded_total


def test_extra_calls_closed_form_is_the_recursion():
    for s in range(1, 12):
        for n in range(1, 150):
            if n == 1 or s <= n - 1:
                assert extra_calls(n, s) == optimal_extra_steps(n, s), (n, s)


def test_revolve_splits_are_optimal_on_long_runs():
    """The split rule's cost (its recursion followed through) is the closed-form
    optimum for up to 3,000 blocks: the engine tests below check the counts at small K."""
    from functools import lru_cache

    from vlrnn.engine._schedules import _advance

    @lru_cache(maxsize=None)
    def cost(n, s):
        if n == 1:
            return 0
        if s == 1:
            return n * (n - 1) // 2
        m = _advance(n, s)
        assert 1 <= m < n
        return m + cost(m, s) + cost(n - m, s - 1)

    for s in (2, 3, 5, 9, 17, 30):
        for n in list(range(2, 400)) + [997, 1000, 2048, 3000]:
            assert cost(n, min(s, n - 1)) == extra_calls(n, min(s, n - 1)), (n, s)


class _Tiny(nn.Module):
    """A cheap recurrent model, ``(T, B, 1)`` in, state ``(B, 1)``; counts its calls."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([0.9]))
        self.calls = self.no_grad_calls = 0

    def forward(self, x, h):
        self.calls += 1
        self.no_grad_calls += not torch.is_grad_enabled()
        h = torch.zeros_like(x[0]) if h is None else h
        ys = []
        for t in range(x.shape[0]):
            h = torch.tanh(self.w * h + x[t])
            ys.append(h)
        return torch.stack(ys), h


def _count(monkeypatch, n_blocks, schedule, **kw):
    """(model calls, of them without grad, most states held at once) of one
    block_backward over ``n_blocks`` one-step blocks."""
    model = _Tiny()
    held = [0]
    orig = BlockRunner.rebuild

    def rebuild(self, x_data, start, k, into):
        orig(self, x_data, start, k, into)
        held[0] = max(held[0], len(self.boundary) + len(into))

    monkeypatch.setattr(BlockRunner, "rebuild", rebuild)
    x, y = _batch(n_blocks)
    vlrnn.block_backward(model, _mse, x, y, block_len=1, schedule=schedule, **kw)
    return model.calls, model.no_grad_calls, held[0]


def _batch(n_steps):
    g = torch.Generator().manual_seed(n_steps)
    return torch.randn(n_steps, 2, 1, generator=g), torch.randn(n_steps, 2, 1, generator=g)


def _mse(o, t):
    return (o - t) ** 2


@pytest.mark.parametrize("n_blocks", [2, 3, 7, 20, 64, 150])
def test_revolve_calls_are_the_binomial_optimum(monkeypatch, n_blocks):
    """Every block forward call of the engine (forward pass, rebuilds, runs with a
    graph) counted: exactly optimal_steps_binomial(K, s), with s + 1 states at most."""
    default = math.ceil(math.log2(n_blocks)) + 2
    for s in sorted({1, 2, 3, default, n_blocks // 2, n_blocks - 1} - {0}):
        if n_blocks == 150 and s == 1:
            continue  # 11,325 calls: the quadratic case is covered at smaller K
        calls, no_grad, held = _count(monkeypatch, n_blocks, revolve_with(s))
        assert calls == optimal_steps_binomial(n_blocks, s) == revolve_calls(n_blocks, s), s
        assert no_grad == calls - n_blocks - 1  # all but block 0, K - 1 and the reverse runs
        assert held <= s + 1, (s, held)
    calls, _, held = _count(monkeypatch, n_blocks, "revolve")  # default s
    s = min(default, n_blocks - 1)
    assert calls == optimal_steps_binomial(n_blocks, s) and held <= s + 1


def test_revolve_beats_two_level_and_matches_flat(monkeypatch):
    """At two_level's states, revolve makes fewer calls; with K - 1 states it is flat."""
    K = 100
    flat, _, _ = _count(monkeypatch, K, "flat")
    two, _, two_held = _count(monkeypatch, K, "two_level")
    rev, _, rev_held = _count(monkeypatch, K, revolve_with(two_held - 1))
    assert rev < two and rev_held <= two_held
    assert _count(monkeypatch, K, revolve_with(K - 1))[0] == flat == 2 * K - 1


def test_revolve_defaults_and_the_retired_name():
    s = get_schedule("revolve", 1000)
    assert isinstance(s, Revolve) and s.states == 12  # ceil(log2 1000) + 2
    with pytest.raises(ValueError, match="unknown schedule 'recursive'; expected one of "
                                         "'flat', 'two_level', 'revolve'"):
        get_schedule("recursive", 10)
    assert get_schedule(revolve_with(5), 1000).states == 5
    with pytest.raises(ValueError, match="states >= 1"):
        revolve_with(0)
    with pytest.raises(TypeError, match="must return a vlrnn.engine.Schedule"):
        get_schedule(lambda k: "flat", 10)
    with pytest.raises(ValueError, match="unknown schedule 'bisect'"):
        get_schedule("bisect", 10)


def _lstm(dropout=0.0, layers=2):
    torch.manual_seed(0)
    return nn.LSTM(3, 4, num_layers=layers, dropout=dropout), nn.Linear(4, 2)


@pytest.mark.parametrize("s", [1, 2, 4])
@pytest.mark.parametrize("packed", [True, False])
def test_revolve_gradient_is_exact(s, packed):
    """Ragged packed (unsorted, sequences ending mid-block) and dense, with dropout
    replayed, an initial state and a loss on the final state."""
    model, head = _lstm(dropout=0.3)
    model.train()
    if packed:
        x, y = ragged_batch([29, 6, 17, 23], 3, 2)
    else:
        x, y = torch.randn(29, 3, 3), torch.randn(29, 3, 2)
    B = 4 if packed else 3
    h0 = (torch.randn(2, B, 4, requires_grad=True), torch.randn(2, B, 4, requires_grad=True))
    lf = lambda o, t: (head(o) - t) ** 2  # noqa: E731
    tensors = list(model.parameters()) + list(head.parameters()) + flat_state(h0)
    ref, got, r, o = run_both(
        tensors,
        lambda: seeded_total(vlrnn.full_loss, model, lf, x, y, seed=3, state=h0, block_len=3),
        lambda: seeded_total(vlrnn.block_loss, model, lf, x, y, seed=3, state=h0,
                             block_len=3, schedule=revolve_with(s)))
    assert_close_grads(ref, got)
    assert torch.allclose(r, o, rtol=1e-12)


def test_revolve_backward_twice():
    """retain_graph: a second backward rebuilds the dropped kept states from the first."""
    model, head = _lstm()
    x, y = ragged_batch([20, 9, 14], 3, 2)
    lf = lambda o, t: (head(o) - t) ** 2  # noqa: E731
    tensors = list(model.parameters()) + list(head.parameters())
    ref, got, _, _ = run_both(
        tensors, lambda: vlrnn.full_backward(model, lf, x, y),
        lambda: vlrnn.block_loss(model, lf, x, y, block_len=2,
                                 schedule=revolve_with(3)).loss.backward())
    out = vlrnn.block_loss(model, lf, x, y, block_len=2, schedule=revolve_with(3))
    out.loss.backward(retain_graph=True)
    out.loss.backward()
    assert_close_grads([2 * g for g in ref], [t.grad for t in tensors])


def test_planner_picks_revolve_and_counts_its_calls_exactly(monkeypatch):
    """A budget that holds a few states: the plan is revolve, and its predicted
    recompute factor is the engine's block forward calls per block, counted."""
    kw = dict(n_steps=10_000, n_rows=160_000, n_batch=16, bytes_per_row=10_000,
              state_bytes=32_768, draws_random=False)
    p = choose(budget=12 * 2**20, **kw)
    assert p.schedule == "revolve" and 1 <= p.states < p.n_blocks - 1
    assert p.predicted_bytes <= p.budget and "recompute factor" in str(p)
    # exact time model: the plan's factor is what the engine does, kept graphs included
    K, model = 60, _Tiny()
    x, y = _batch(K)
    kw = dict(loss_fn=_mse, target=y, schedule=revolve_with(3), block_len=1)
    probe = vlrnn.plan(model, x, memory_budget="1GB", **kw)
    block = probe.bytes_per_row * 2  # one step of the batch's 2 rows
    fixed = probe.state_bytes * (1 + 3 + 1)  # final, s = 3, the differentiated block's
    for m in (1, 5, 30):
        budget = int(fixed + (m + 1.5) * block)
        p = vlrnn.plan(model, x, memory_budget=budget, **kw)
        assert (p.schedule, p.states, p.keep_last) == ("revolve", 3, m)
        calls, _, held = _count(monkeypatch, K, revolve_with(3), memory_budget=budget)
        calls -= 1  # the planner's probe of the first block
        assert calls == round(p.forward_passes * K), (m, calls, p.forward_passes * K)
        assert held <= 3 + 1
