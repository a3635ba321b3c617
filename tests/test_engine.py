"""The block engine against plain BPTT (``full_backward``/``full_loss``) in float64."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as hs
from torch import nn

import vlrnn
from vlrnn.engine._schedules import SCHEDULES

from helpers import assert_close_grads, flat_state, ragged_batch, run_both, state_like

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


def make(kind="lstm", n_in=3, hidden=4, layers=1, n_out=2, **kw):
    torch.manual_seed(1)
    return CELLS[kind](n_in, hidden, num_layers=layers, **kw), nn.Linear(hidden, n_out)


def mse_head(head):
    return lambda out, tgt: (head(out) - tgt) ** 2  # a lambda capturing a module


# -- the core grid: packed, ragged, every cell, layers, reduction, block length --------
@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("sorted_", [True, False])
@pytest.mark.parametrize("reduction", ["sum", "mean", "seq_mean"])
@pytest.mark.parametrize("block_len", [1, 3, 13, 40])
def test_packed_grid(kind, layers, sorted_, reduction, block_len):
    model, head = make(kind, layers=layers)
    x, y = ragged_batch([7, 1, 13, 13, 4, 10], 3, 2, sorted_=sorted_)
    params = list(model.parameters()) + list(head.parameters())
    lf = mse_head(head)
    ref, got, r, o = run_both(
        params,
        lambda: vlrnn.full_backward(model, lf, x, y, reduction=reduction),
        lambda: vlrnn.block_backward(model, lf, x, y, block_len=block_len, reduction=reduction))
    assert_close_grads(ref, got)
    assert torch.allclose(r.loss, o.loss, rtol=1e-12, atol=0)
    for a, b in zip(flat_state(r.state), flat_state(o.state)):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)
    assert o.n_blocks == -(-13 // block_len)


@settings(max_examples=40, deadline=None)
@given(lengths=hs.lists(hs.integers(1, 30), min_size=1, max_size=6),
       block_len=hs.integers(1, 35), kind=hs.sampled_from(["lstm", "gru", "rnn"]),
       layers=hs.integers(1, 3), reduction=hs.sampled_from(["sum", "mean", "seq_mean"]),
       sorted_=hs.booleans(), with_state=hs.booleans(), x_grad=hs.booleans(),
       schedule=hs.sampled_from(sorted(SCHEDULES)))
def test_random_batches(lengths, block_len, kind, layers, reduction, sorted_, with_state, x_grad,
                        schedule):
    model, head = make(kind, layers=layers)
    x, y = ragged_batch(lengths, 3, 2, sorted_=sorted_)
    if x_grad:
        x.data.requires_grad_(True)
    if sorted_:
        lengths = sorted(lengths, reverse=True)
    h0 = state_like(kind, layers, len(lengths), 4) if with_state else None
    tensors = list(model.parameters()) + list(head.parameters())
    tensors += flat_state(h0) if with_state else []
    tensors += [x.data] if x_grad else []
    lf = mse_head(head)

    def loss_with_state(fn, **kw):
        out = fn(model, lf, x, y, state=h0, reduction=reduction, **kw)
        # a loss on the final state too: exact through the engine's Function
        total = out.loss + sum((s ** 2).sum() * 0.1 for s in flat_state(out.state))
        total.backward()
        return total.detach()

    ref, got, r, o = run_both(tensors, lambda: loss_with_state(vlrnn.full_loss),
                              lambda: loss_with_state(vlrnn.block_loss, block_len=block_len,
                                                      schedule=schedule))
    assert_close_grads(ref, got)
    assert torch.allclose(r, o, rtol=1e-12)


# -- dense input -------------------------------------------------------------------------
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("block_len", [1, 5, 17, 50])
def test_dense_with_state_and_input_grad(batch_first, kind, block_len):
    model, head = make(kind, layers=2, batch_first=batch_first)
    T, B = 17, 3
    shape = (B, T) if batch_first else (T, B)
    x = torch.randn(*shape, 3, requires_grad=True)
    y = torch.randn(*shape, 2)
    h0 = state_like(kind, 2, B, 4)
    tensors = list(model.parameters()) + list(head.parameters()) + flat_state(h0) + [x]
    lf = mse_head(head)
    for reduction in ("sum", "mean", "seq_mean"):
        ref, got, r, o = run_both(
            tensors,
            lambda: vlrnn.full_backward(model, lf, x, y, state=h0, reduction=reduction),  # noqa: B023 (run within this iteration)
            lambda: vlrnn.block_backward(model, lf, x, y, block_len=block_len, state=h0,
                                         reduction=reduction))  # noqa: B023 (run within this iteration)
        assert_close_grads(ref, got)
        assert torch.allclose(r.loss, o.loss, rtol=1e-12)


def test_dense_token_input_with_embedding_upstream():
    """x produced by an embedding outside the call (non-leaf) gets its gradient back."""
    torch.manual_seed(0)
    emb = nn.Embedding(11, 3)
    model, head = make("lstm")
    tokens = torch.randint(0, 11, (20, 2))
    y = torch.randint(0, 2, (20, 2))
    ce = nn.CrossEntropyLoss(reduction="none")
    tensors = list(emb.parameters()) + list(model.parameters()) + list(head.parameters())

    def run(fn, **kw):
        return fn(model, lambda o, t: ce(head(o), t), emb(tokens), y, **kw)

    ref, got, _, _ = run_both(tensors, lambda: run(vlrnn.full_backward),
                              lambda: run(vlrnn.block_backward, block_len=6))
    assert_close_grads(ref, got)


# -- what else takes part ----------------------------------------------------------------
class HeadLoss(nn.Module):
    """A loss_fn module with parameters of its own."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 2)

    def forward(self, out, tgt):
        return nn.functional.mse_loss(self.proj(out), tgt, reduction="none")


def test_loss_module_params_and_captured_nonleaf():
    model, head = make("gru", layers=2)
    loss_mod = HeadLoss()
    scale = torch.tensor(1.5, requires_grad=True)
    x, y = ragged_batch([9, 4, 12], 3, 2)
    y.data.requires_grad_(True)  # a target that requires grad gets its gradient too
    tensors = list(model.parameters()) + list(loss_mod.parameters()) + [scale, y.data]

    def run(fn, **kw):
        w = scale * 2  # computed outside the call: its graph is shared by every block
        return fn(model, lambda o, t: loss_mod(o, t) * w, x, y, **kw)

    ref, got, _, _ = run_both(tensors, lambda: run(vlrnn.full_backward),
                              lambda: run(vlrnn.block_backward, block_len=4))
    assert_close_grads(ref, got)


def test_final_state_only_loss_sequence_classification():
    """loss_fn=None: the only loss is on each sequence's final state (classification)."""
    model, _ = make("lstm", layers=2)
    clf = nn.Linear(4, 3)
    x, _ = ragged_batch([30, 5, 18, 1], 3, 1)
    labels = torch.tensor([0, 2, 1, 1])
    tensors = list(model.parameters()) + list(clf.parameters())

    def run(fn, **kw):
        out = fn(model, None, x, None, **kw)
        h_last = out.state[0][-1]  # (B, H), input batch order
        loss = nn.functional.cross_entropy(clf(h_last), labels)
        loss.backward()
        return loss.detach()

    ref, got, r, o = run_both(tensors, lambda: run(vlrnn.full_loss),
                              lambda: run(vlrnn.block_loss, block_len=4))
    assert_close_grads(ref, got)
    assert torch.allclose(r, o, rtol=1e-12)


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_dropout_is_replayed(schedule):
    model, head = make("lstm", layers=3, dropout=0.5)
    model.train()
    x, y = ragged_batch([25, 11, 19], 3, 2)
    tensors = list(model.parameters()) + list(head.parameters())
    lf = mse_head(head)

    def seeded(fn, **kw):
        torch.manual_seed(123)
        return fn(model, lf, x, y, block_len=2, **kw)  # 13 blocks

    ref, got, r, o = run_both(tensors, lambda: seeded(vlrnn.full_backward),
                              lambda: seeded(vlrnn.block_backward, schedule=schedule))
    assert_close_grads(ref, got)
    assert torch.allclose(r.loss, o.loss, rtol=1e-12)
    # and the draws mattered: another seed gives another loss
    torch.manual_seed(7)
    other = vlrnn.full_backward(model, lf, x, y, block_len=2)
    assert not torch.allclose(other.loss, r.loss)


def test_backward_leaves_the_rng_stream_alone():
    model, head = make("gru", layers=2, dropout=0.3)
    x, y = ragged_batch([12, 8], 3, 2)
    torch.manual_seed(5)
    out = vlrnn.block_loss(model, mse_head(head), x, y, block_len=3)
    after_forward = torch.get_rng_state()
    out.loss.backward()
    assert torch.equal(torch.get_rng_state(), after_forward)


# -- how the gradient is delivered ---------------------------------------------------------
def test_grad_written_once_per_backward_and_accumulates():
    model, head = make("lstm", layers=2)
    x, y = ragged_batch([20, 9], 3, 2)
    counts = {}
    for name, p in model.named_parameters():
        p.register_post_accumulate_grad_hook(
            lambda p, name=name: counts.__setitem__(name, counts.get(name, 0) + 1))
    lf = mse_head(head)
    ref = vlrnn.full_backward(model, lf, x, y)
    g1 = [p.grad.clone() for p in model.parameters()]
    counts.clear()
    model.zero_grad()
    vlrnn.block_backward(model, lf, x, y, block_len=3)  # 7 blocks
    assert counts and all(c == 1 for c in counts.values()), counts
    vlrnn.block_backward(model, lf, x, y, block_len=3)  # gradient accumulation
    for a, p in zip(g1, model.parameters()):
        assert torch.allclose(2 * a, p.grad, rtol=1e-9)
    assert ref.n_blocks == 1


def test_scaled_and_repeated_backward():
    """A scaled loss (as GradScaler does) scales the gradient; retain_graph works."""
    model, head = make("rnn", layers=2)
    x, y = ragged_batch([10, 6, 3], 3, 2)
    lf = mse_head(head)
    vlrnn.full_backward(model, lf, x, y)
    g = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    out = vlrnn.block_loss(model, lf, x, y, block_len=4)
    (out.loss * 8.0).backward(retain_graph=True)
    (out.loss * 8.0).backward()
    for a, p in zip(g, model.parameters()):
        assert torch.allclose(16 * a, p.grad, rtol=1e-9)


def test_no_grad_mode_streams_the_same_loss():
    model, head = make("lstm", layers=2)
    x, y = ragged_batch([15, 4, 9], 3, 2)
    with torch.no_grad():
        ref = vlrnn.full_loss(model, mse_head(head), x, y, reduction="seq_mean")
        out = vlrnn.block_loss(model, mse_head(head), x, y, block_len=4, reduction="seq_mean")
    assert not out.loss.requires_grad
    assert torch.allclose(ref.loss, out.loss, rtol=1e-12)
    for a, b in zip(flat_state(ref.state), flat_state(out.state)):
        assert torch.allclose(a, b, rtol=1e-12)


def test_frozen_model_gives_a_plain_loss():
    model, head = make("gru")
    for p in list(model.parameters()) + list(head.parameters()):
        p.requires_grad_(False)
    x, y = ragged_batch([6, 3], 3, 2)
    out = vlrnn.block_loss(model, mse_head(head), x, y, block_len=2)
    assert not out.loss.requires_grad
    assert torch.allclose(out.loss, vlrnn.full_loss(model, mse_head(head), x, y).loss)


# -- memory and work -----------------------------------------------------------------------
def saved_bytes(fn) -> int:
    """Bytes of tensors autograd saved for backward while ``fn`` ran."""
    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total[0]


def test_saved_memory_does_not_grow_with_length():
    model, head = make("lstm", layers=2, hidden=8)
    lf = mse_head(nn.Linear(8, 2))

    def batch(T):
        return torch.randn(T, 4, 3), torch.randn(T, 4, 2)

    short, long = batch(200), batch(2000)
    eng_short = saved_bytes(lambda: vlrnn.block_loss(model, lf, *short, block_len=50))
    eng_long = saved_bytes(lambda: vlrnn.block_loss(model, lf, *long, block_len=50))
    full_long = saved_bytes(lambda: vlrnn.full_loss(model, lf, *long))
    assert eng_long <= 1.05 * eng_short  # flat in T
    assert full_long > 8 * eng_long  # plain BPTT keeps all 2000 steps


def test_last_block_not_recomputed_and_one_call_per_block():
    model, head = make("lstm", layers=2)
    calls = []
    model.register_forward_hook(lambda m, i, o: calls.append(torch.is_grad_enabled()))
    x, y = ragged_batch([20, 9, 14], 3, 2)
    out = vlrnn.block_loss(model, mse_head(head), x, y, block_len=5)  # 4 blocks
    assert len(calls) == 4 and out.n_blocks == 4
    out.loss.backward()
    assert len(calls) == 4 + 3  # blocks 2, 1, 0 re-run; the last block's graph was kept


# -- split_packed ------------------------------------------------------------------------
def test_split_packed_fields():
    lengths = [5, 9, 2, 9, 1]
    x, _ = ragged_batch(lengths, 2, 1)
    blocks = vlrnn.split_packed(x, 4)
    assert [(b.start, b.stop) for b in blocks] == [(0, 4), (4, 8), (8, 9)]
    assert torch.equal(torch.cat([b.x.data for b in blocks]), x.data)
    assert blocks[0].rows == slice(0, sum(min(n, 4) for n in lengths))
    assert blocks[1].rows == slice(blocks[0].rows.stop, sum(min(n, 8) for n in lengths))
    assert [b.n_in for b in blocks] == [5, 3, 2] and [b.n_out for b in blocks] == [3, 2, 0]
    L = torch.tensor(lengths)
    for b in blocks:
        assert torch.equal(b.active, L > b.start)
        assert torch.equal(b.ends, (L > b.start) & (L <= b.stop))
        assert b.x.sorted_indices is None
        assert torch.equal(x.data[b.rows], b.x.data)
        assert torch.equal(b.x.batch_sizes, x.batch_sizes[b.start:b.stop])


# -- StackedRNN and a user's own cell ----------------------------------------------------
class ElmanCell(nn.Module):
    """A user's cell: h' = tanh(W x + U h)."""

    def __init__(self, n_in, hidden):
        super().__init__()
        self.w = nn.Linear(n_in, hidden)
        self.u = nn.Linear(hidden, hidden, bias=False)

    def forward(self, x, h):
        return torch.tanh(self.w(x) + self.u(h))


@pytest.mark.parametrize("cell", ["lstm", "gru", ElmanCell])
@pytest.mark.parametrize("block_len", [1, 4, 30])
def test_stacked_rnn_against_plain(cell, block_len):
    from vlrnn.models import StackedRNN
    torch.manual_seed(3)
    model = StackedRNN(3, 4, num_layers=2, cell=cell, dropout=0.25)
    head = nn.Linear(4, 2)
    x, y = ragged_batch([11, 3, 8, 1], 3, 2)
    tensors = list(model.parameters()) + list(head.parameters())
    lf = mse_head(head)

    def seeded(fn, **kw):
        torch.manual_seed(11)  # dropout between layers is replayed on recompute
        out = fn(model, lf, x, y, block_len=block_len, reduction="seq_mean", **kw)
        total = out.loss + sum(s.sum() for s in flat_state(out.state))
        total.backward()
        return total.detach()

    ref, got, r, o = run_both(tensors, lambda: seeded(vlrnn.full_loss),
                              lambda: seeded(vlrnn.block_loss))
    assert_close_grads(ref, got)
    assert torch.allclose(r, o, rtol=1e-12)
    model.eval()  # without dropout, also equal to one call on the whole batch
    ref, got, _, _ = run_both(tensors, lambda: vlrnn.full_backward(model, lf, x, y),
                              lambda: vlrnn.block_backward(model, lf, x, y, block_len=block_len))
    assert_close_grads(ref, got)


# -- schedules: memory and recompute ----------------------------------------------------
@pytest.mark.parametrize("schedule,max_states,max_calls", [
    ("flat", 64, 2 * 64 - 1),
    ("two_level", 2 * 8 + 2, 3 * 64),
    ("revolve", 8 + 1, 201),  # s = log2(64) + 2; 201 = the binomial optimum for 8 states
])
def test_schedule_states_and_recompute(monkeypatch, schedule, max_states, max_calls):
    """64 blocks: states held at once and model calls stay within each schedule's
    promise, and the gradient is still exact."""
    from vlrnn.engine._runner import BlockRunner
    model, head = make("gru")
    x, y = torch.randn(64, 2, 3), torch.randn(64, 2, 2)
    lf = mse_head(head)
    calls, held = [0], [0]
    model.register_forward_hook(lambda m, i, o: calls.__setitem__(0, calls[0] + 1))
    orig = BlockRunner.rebuild

    def rebuild(self, x_data, start, k, into):
        orig(self, x_data, start, k, into)
        held[0] = max(held[0], len(self.boundary) + len(into))

    monkeypatch.setattr(BlockRunner, "rebuild", rebuild)
    ref, got, _, _ = run_both(
        list(model.parameters()),
        lambda: vlrnn.full_backward(model, lf, x, y),
        lambda: vlrnn.block_backward(model, lf, x, y, block_len=1, schedule=schedule))
    assert_close_grads(ref, got)
    calls[0] -= 1  # the reference's one call
    assert calls[0] <= max_calls, calls[0]
    assert held[0] <= max_states, held[0]
    if schedule != "flat":
        assert calls[0] > 2 * 64 - 1  # it did rebuild boundaries


# -- offload ---------------------------------------------------------------------------------
@pytest.mark.parametrize("schedule", ["flat", "two_level", "revolve"])
def test_offload_cpu_is_exact(schedule):
    model, head = make("lstm", layers=2)
    x, y = ragged_batch([17, 4, 12], 3, 2)
    lf = mse_head(head)
    ref, got, _, _ = run_both(
        list(model.parameters()),
        lambda: vlrnn.full_backward(model, lf, x, y),
        lambda: vlrnn.block_backward(model, lf, x, y, block_len=3, schedule=schedule,
                                     offload="cpu"))
    assert_close_grads(ref, got)
    with pytest.raises(ValueError, match="unknown offload 'disk'"):
        vlrnn.block_loss(model, lf, x, y, offload="disk")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_offload_keeps_boundaries_on_the_host(monkeypatch):
    from vlrnn.engine._runner import BlockRunner
    model, head = make("gru", layers=2)
    model, head = model.cuda(), head.cuda()
    x, y = ragged_batch([40, 9, 33], 3, 2)
    x, y = x.to("cuda"), y.to("cuda")
    lf = mse_head(head)
    kept = []
    orig = BlockRunner.stash
    monkeypatch.setattr(BlockRunner, "stash",
                        lambda self, s, k=None: kept.append(r := orig(self, s, k)) or r)
    ref, got, _, _ = run_both(
        list(model.parameters()),
        lambda: vlrnn.full_backward(model, lf, x, y),
        lambda: vlrnn.block_backward(model, lf, x, y, block_len=4, offload="cpu"))
    assert_close_grads(ref, got, rtol=1e-6)
    assert kept and all(t.device.type == "cpu" for s in kept if s for t in s)


# -- kept states: preallocated, not one allocation per block ---------------------------------
def _storages(states) -> set:
    """Distinct storages behind a list of flat states (``None`` entries skipped)."""
    return {t.untyped_storage().data_ptr() for s in states if s is not None for t in s}


@pytest.mark.parametrize("schedule", ["flat", "two_level"])
@pytest.mark.parametrize("offload", [None, "cpu"])
def test_kept_states_share_one_buffer_per_leaf(monkeypatch, schedule, offload):
    """The boundary states the forward pass keeps and the final states share one buffer
    per state leaf allocated up front, however many blocks there are: cloned one per
    block, they could pin memory among the blocks' activations, and glibc's heap grew
    by megabytes per block on ragged CPU batches. The gradient stays exact."""
    from vlrnn.engine._runner import BlockRunner
    runners = []
    orig = BlockRunner.advance
    monkeypatch.setattr(BlockRunner, "advance",
                        lambda self, k, s: runners.append(self) or orig(self, k, s))
    model, head = make("lstm", layers=2)
    lf = mse_head(head)
    x, y = ragged_batch([40, 17, 33, 5, 40], 3, 2)
    params = list(model.parameters()) + list(head.parameters())
    stats = {}
    for block_len in (8, 1):  # 5 blocks, then 40
        ref, got, r, o = run_both(
            params,
            lambda: vlrnn.full_backward(model, lf, x, y),
            lambda: vlrnn.block_backward(model, lf, x, y, block_len=block_len,  # noqa: B023 (run within this iteration)
                                         schedule=schedule, offload=offload))
        assert_close_grads(ref, got)
        for a, b in zip(flat_state(r.state), flat_state(o.state)):
            assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)
        runner = runners[-1]
        kept = [runner.boundary[k] for k in runner.boundary if k > 0]
        enders = [e for e in runner.enders if e is not None]
        stats[block_len] = dict(kept=len(kept), kept_storages=len(_storages(kept)),
                                enders=len(enders), ender_storages=len(_storages(enders)))
    few, many = stats[8], stats[1]
    assert many["kept"] > few["kept"] >= 2 and many["enders"] > few["enders"] >= 2
    for s in (few, many):  # two buffers each (LSTM: h and c), whatever the number of blocks
        assert s["kept_storages"] == 2 and s["ender_storages"] == 2, s


def test_graphs_kept_from_the_forward_pass_survive_later_kept_states():
    """With a memory budget the forward pass keeps the graphs of its last blocks, whose
    input states are kept boundary states; writing later ones (into other slots of the
    same buffers) must not count as modifying them in place."""
    from vlrnn.models import StackedRNN  # unbinds its state per layer: views autograd checks
    torch.manual_seed(0)
    model, head = StackedRNN(3, 4, num_layers=2, cell="lstm"), nn.Linear(4, 2)
    lf = mse_head(head)
    x, y = ragged_batch([30, 11, 25, 4], 3, 2)
    params = list(model.parameters()) + list(head.parameters())
    ref, got, _, _ = run_both(
        params,
        lambda: vlrnn.full_backward(model, lf, x, y),
        lambda: vlrnn.block_backward(model, lf, x, y, block_len=4, memory_budget="1GB"))
    assert_close_grads(ref, got)


class _WidthChangingGRU(nn.Module):
    """``nn.GRU`` whose state also carries a column per call so far, up to two: its
    second state has another shape than its first, so it does not fit the slots made
    from the first and the engine keeps its own copies of it."""

    state_batch_dim = 1

    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(3, 4)

    def forward(self, x, state):
        y, h = self.gru(x, None if state is None else state[0])
        width = 1 if state is None else 2
        return y, (h, torch.full((1, x.shape[1], width), float(width)))


def test_state_unlike_the_first_is_kept_exactly():
    torch.manual_seed(0)
    model, head = _WidthChangingGRU(), nn.Linear(4, 2)
    lf = mse_head(head)
    x, y = torch.randn(9, 3, 3), torch.randn(9, 3, 2)
    params = list(model.parameters()) + list(head.parameters())
    for schedule in ("flat", "revolve"):
        ref, got, r, o = run_both(
            params,
            lambda: vlrnn.full_backward(model, lf, x, y, block_len=2),
            lambda: vlrnn.block_backward(model, lf, x, y, block_len=2, schedule=schedule))  # noqa: B023 (run within this iteration)
        assert_close_grads(ref, got)
        assert torch.allclose(r.state[0], o.state[0], rtol=1e-12, atol=1e-14)
        assert torch.equal(r.state[1], o.state[1]) and o.state[1].shape == (1, 3, 2)


# -- outputs streamed block by block ----------------------------------------------------------
@pytest.mark.parametrize("sorted_", [True, False])
def test_block_outputs_equal_one_call(sorted_):
    from vlrnn.engine._bptt import block_outputs
    model, _ = make("lstm", layers=2)
    x, _ = ragged_batch([7, 1, 13, 5], 3, 2, sorted_=sorted_)
    h0 = state_like("lstm", 2, 4, 4)
    ref_y, ref_state = model(x, h0)
    y, state = block_outputs(model, x, block_len=3, state=h0)
    assert torch.equal(y.batch_sizes, ref_y.batch_sizes)
    assert torch.allclose(y.data, ref_y.data, rtol=1e-12, atol=1e-14)
    for a, b in zip(flat_state(ref_state), flat_state(state)):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)
