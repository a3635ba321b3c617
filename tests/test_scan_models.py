"""Scan models (MinGRU, MinLSTM, LRU, Mamba) under the engine, float64: block_loss,
block_outputs and Blockwise equal plain autograd through the same model (packed sorted
and unsorted, dense time-major and batch-first, 1-3 layers, sequences ending mid-block,
state gradients, dropout replayed); state continuation; long float32 runs.

The step-loop references of each recurrence are in test_scan_models_reference.py."""
from __future__ import annotations

import doctest

import pytest
import torch
from test_block_outputs import N_CLS, N_IN, batch, coupled_loss, inputs_of
from torch import nn
from torch.nn.utils.rnn import PackedSequence

import vlrnn
from vlrnn.models import LRU, Mamba, MinGRU, MinLSTM

from helpers import assert_close_grads, flat_state, ragged_batch, run_both, seeded_total

N_HID = 4
LAYOUTS = ["packed_sorted", "packed_unsorted", "time_major", "batch_first"]
MAKERS = {
    "mingru": lambda layers, **kw: MinGRU(N_IN, N_HID, layers, **kw),
    "minlstm": lambda layers, **kw: MinLSTM(N_IN, N_HID, layers, **kw),
    "minlstm_norm_res": lambda layers, **kw: MinLSTM(N_IN, N_HID, layers, layer_norm=True,
                                                     residual=layers > 1, **kw),
    "lru": lambda layers, **kw: LRU(N_IN, N_HID, layers, state_size=3, **kw),
    "mamba": lambda layers, **kw: Mamba(N_IN, N_HID, layers, state_size=3, conv_size=3,
                                        **kw),
}
KINDS = sorted(MAKERS)


def random_state(model, n_batch: int = 4, seed: int = 3):
    """A random initial state of the model's own format, requiring grad."""
    g = torch.Generator().manual_seed(seed)
    zeros = model.initial_state(n_batch)
    leaves = [torch.randn(t.shape, generator=g).requires_grad_() for t in flat_state(zeros)]
    return leaves[0] if isinstance(zeros, torch.Tensor) else tuple(leaves)


def lossy(head):
    return lambda out, tgt: (head(out) - tgt) ** 2


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_block_loss_equals_one_plain_call(kind, layout):
    """Evaluation mode: block_backward (blocks of 3; sequences end mid-block) against
    full_backward, one plain call on the whole batch; grads of parameters, x, state."""
    torch.manual_seed(1)
    bf = layout == "batch_first"
    model = MAKERS[kind](2, batch_first=bf).eval()
    head = nn.Linear(N_HID, 2)
    x = batch(layout)
    data = inputs_of(x)
    y = (x._replace(data=torch.randn(data.shape[0], 2)) if isinstance(x, PackedSequence)
         else torch.randn(*data.shape[:2], 2))
    h0 = random_state(model)
    tensors = [*model.parameters(), *head.parameters(), data, *flat_state(h0)]

    def go(fn, **kw):
        def run():
            out = fn(model, lossy(head), x, y, state=h0, reduction="sum", **kw)
            total = out.loss + sum((s ** 2).sum() for s in flat_state(out.state))
            total.backward()
            return out
        return run

    r, g, ro, go_ = run_both(tensors, go(vlrnn.full_loss), go(vlrnn.block_loss, block_len=3))
    torch.testing.assert_close(go_.loss, ro.loss, rtol=1e-12, atol=0)
    for a, b in zip(flat_state(ro.state), flat_state(go_.state)):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-13)
    assert_close_grads(r, g)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("layers", [1, 3])
def test_block_loss_training_dropout_replayed(kind, layers):
    """Training mode, dropout in 3 layers, block lengths 1 and 5: the engine replays the
    draws, so its gradient equals plain autograd through the same block-by-block calls."""
    torch.manual_seed(2)
    model = MAKERS[kind](layers, dropout=0.3 if layers > 1 else 0.0).train()
    head = nn.Linear(N_HID, 2)
    x, y = ragged_batch([9, 3, 14, 6, 14, 1], N_IN, 2)  # unsorted, ties, length 1
    x.data.requires_grad_(True)
    h0 = random_state(model, 6)
    tensors = [*model.parameters(), *head.parameters(), x.data, *flat_state(h0)]
    for block_len in (1, 5):
        def seeded(fn, seed=11, block_len=block_len):
            return seeded_total(fn, model, lossy(head), x, y, seed=seed, block_len=block_len,
                                state=h0, reduction="seq_mean")
        r, g, lr, lg = run_both(tensors, lambda: seeded(vlrnn.full_loss),
                                lambda: seeded(vlrnn.block_loss))
        assert_close_grads(r, g)
        torch.testing.assert_close(lg, lr, rtol=1e-12, atol=0)
    if layers > 1:  # the draws act: another seed gives another loss
        with torch.no_grad():
            losses = []
            for seed in (11, 12):
                torch.manual_seed(seed)
                losses.append(vlrnn.full_loss(model, lossy(head), x, y, block_len=5,
                                              state=h0).loss)
        assert not torch.allclose(losses[0], losses[1])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("layout", ["packed_unsorted", "batch_first"])
def test_block_outputs_any_loss_equals_plain(kind, layout):
    torch.manual_seed(3)
    bf = layout == "batch_first"
    model = MAKERS[kind](2, batch_first=bf).eval()
    x = batch(layout)
    h0 = random_state(model)
    proj = torch.randn(N_HID, N_CLS, requires_grad=True)
    tensors = [*model.parameters(), inputs_of(x), *flat_state(h0), proj]

    def go(fn):
        def run():
            y, s = fn(x, h0)
            coupled_loss(y, s, proj, bf).backward()
            return y, s
        return run

    r, g, (yr, sr), (yg, sg) = run_both(
        tensors, go(model), go(lambda x, s: vlrnn.block_outputs(model, x, block_len=3, state=s)))
    torch.testing.assert_close(inputs_of(yg), inputs_of(yr), rtol=1e-12, atol=1e-13)
    for a, b in zip(flat_state(sr), flat_state(sg)):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-13)
    assert_close_grads(r, g)


@pytest.mark.parametrize("kind", KINDS)
def test_blockwise_drop_in(kind):
    torch.manual_seed(4)
    model = MAKERS[kind](3).eval()
    x = batch("packed_unsorted")
    h0 = random_state(model)
    proj = torch.randn(N_HID, N_CLS)
    wrapped = vlrnn.Blockwise(model, block_len=4)
    assert wrapped.state_dict().keys() == model.state_dict().keys()
    tensors = [*model.parameters(), x.data, *flat_state(h0)]

    def go(m):
        def run():
            y, s = m(x, h0)
            coupled_loss(y, s, proj).backward()
            return y, s
        return run

    r, g, (yr, _), (yg, _) = run_both(tensors, go(model), go(wrapped))
    assert isinstance(yg, PackedSequence)
    torch.testing.assert_close(yg.data, yr.data, rtol=1e-12, atol=1e-13)
    assert_close_grads(r, g)


def _assert_blockwise_same_draws(model, x, proj):
    """Blockwise's block engine (dropout replayed) against its plain call, same seed:
    the same outputs and the same gradients of every parameter and of ``x``; returns the
    block engine's outputs."""
    tensors = [*model.parameters(), x.data]

    def go(plain: bool):
        def run():
            wrapped = vlrnn.Blockwise(model, block_len=3)
            wrapped.plain = plain
            torch.manual_seed(11)
            y, s = wrapped(x)
            coupled_loss(y, s, proj).backward()
            return y.data
        return run

    r, g, yr, yg = run_both(tensors, go(True), go(False))
    torch.testing.assert_close(yg, yr, rtol=1e-12, atol=1e-13)
    assert_close_grads(r, g)
    return yg


@pytest.mark.parametrize("kind", KINDS)
def test_blockwise_training_dropout_same_draws(kind):
    torch.manual_seed(5)
    model = MAKERS[kind](3, dropout=0.4).train()
    x = batch("packed_unsorted")
    proj = torch.randn(N_HID, N_CLS)
    yg = _assert_blockwise_same_draws(model, x, proj)
    model.eval()
    assert not torch.allclose(model(x)[0].data, yg.detach())


@pytest.mark.parametrize("kind", KINDS)
def test_state_continues_exactly(kind):
    """Two calls, the state of the first passed to the second, equal one call; packed
    with sorted_indices: the state is in the caller's order."""
    torch.manual_seed(6)
    model = MAKERS[kind](2).eval()
    x = torch.randn(17, 5, N_IN)
    y_all, s_all = model(x)
    y1, s1 = model(x[:6])
    y2, s2 = model(x[6:], s1)
    torch.testing.assert_close(torch.cat([y1, y2]), y_all, rtol=1e-12, atol=1e-13)
    for a, b in zip(flat_state(s_all), flat_state(s2)):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-13)
    # ragged, unsorted: each sequence alone from its own state
    seqs = [torch.randn(n, N_IN) for n in (4, 9, 2, 7)]
    h0 = tuple(t.detach() for t in flat_state(random_state(model)))
    st = h0[0] if len(h0) == 1 else h0
    _, fin = model(nn.utils.rnn.pack_sequence(seqs, enforce_sorted=False), st)
    for j, s in enumerate(seqs):
        one = [t[:, j:j + 1] for t in h0]
        _, fin_j = model(s.unsqueeze(1), one[0] if len(one) == 1 else tuple(one))
        for a, b in zip(flat_state(fin_j), flat_state(fin)):
            torch.testing.assert_close(b[:, j:j + 1], a, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("kind", KINDS)
def test_long_float32_run_is_finite_and_close_to_float64(kind):
    """1e5 steps in one call, float32: finite and close to the same model in float64 (the
    scans' own float32 error against a float32 step loop: test_scan_models_reference)."""
    torch.manual_seed(7)
    model = MAKERS[kind](2).eval()
    x = torch.randn(100_000, 2, N_IN)
    with torch.no_grad():
        y64, s64 = model(x)
        model32 = MAKERS[kind](2).eval()
        model32.load_state_dict(model.state_dict())
        model32.float()
        y32, s32 = model32(x.float())
    assert torch.isfinite(y32).all()
    scale = y64.abs().max()
    assert (y32.double() - y64).abs().max() <= 2e-3 * scale
    for a, b in zip(flat_state(s64), flat_state(s32)):
        assert (b.double() - a).abs().max() <= 2e-3 * a.abs().max()


@pytest.mark.parametrize("cls", [MinGRU, MinLSTM, LRU, Mamba])
def test_docstring_example_runs(cls):
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
        for test in doctest.DocTestFinder().find(cls, cls.__name__, globs={}):
            if test.name == cls.__name__:
                runner.run(test)
        assert runner.tries > 0 and runner.failures == 0
    finally:
        torch.set_default_dtype(old)


@pytest.mark.parametrize("kind", KINDS)
def test_bad_input_and_state_named(kind):
    model = MAKERS[kind](2)
    with pytest.raises(ValueError, match=r"expected input_size=3, got 5 features"):
        model(torch.randn(4, 2, 5))
    with pytest.raises(ValueError, match=r"3-D"):
        model(torch.randn(4, N_IN))
    good = model.initial_state(2)
    bad = tuple(t[:1] for t in flat_state(good))
    with pytest.raises(ValueError, match=r"expected \(2, 2"):
        model(torch.randn(4, 2, N_IN), bad[0] if len(bad) == 1 else bad)
    with pytest.raises(ValueError, match=r"must be"):
        model(torch.randn(4, 2, N_IN), [1, 2, 3])
    with pytest.raises(ValueError, match=r"hidden_size must be >= 1"):
        type(model)(N_IN, 0)
    with pytest.raises(ValueError, match=r"dropout must be a probability"):
        type(model)(N_IN, N_HID, 2, dropout=1.5)


def test_mamba_engine_with_the_per_step_scan(monkeypatch):
    import vlrnn.models._selective_scan as sel
    monkeypatch.setattr(sel, "STEP_BYTES", 0)
    test_block_loss_equals_one_plain_call("mamba", "packed_unsorted")
    test_block_loss_training_dropout_replayed("mamba", 3)


# -- bidirectional MinGRU/MinLSTM under Blockwise (NOTE [direction views]) ------------------
@pytest.mark.parametrize("cls", [MinGRU, MinLSTM])
@pytest.mark.parametrize("layout", ["packed_unsorted", "batch_first"])
def test_bidirectional_blockwise_equals_plain(cls, layout):
    torch.manual_seed(9)
    bf = layout == "batch_first"
    model = cls(N_IN, N_HID, 2, bidirectional=True, batch_first=bf).eval()
    x = batch(layout)
    h0 = random_state(model)
    assert h0.shape == (4, 4, N_HID)
    proj = torch.randn(2 * N_HID, N_CLS)
    tensors = [*model.parameters(), inputs_of(x), h0]
    wrapped = vlrnn.Blockwise(model, block_len=3)

    def go(m):
        def run():
            y, s = m(x, h0)
            coupled_loss(y, s, proj, bf).backward()
            return y, s
        return run

    r, g, (yr, sr), (yg, sg) = run_both(tensors, go(model), go(wrapped))
    torch.testing.assert_close(inputs_of(yg), inputs_of(yr), rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(sg, sr, rtol=1e-12, atol=1e-13)
    assert_close_grads(r, g)


def test_bidirectional_dropout_same_draws_and_reverse_is_read_backwards():
    torch.manual_seed(10)
    model = MinLSTM(N_IN, N_HID, 3, dropout=0.4, bidirectional=True).train()
    x = batch("packed_unsorted")
    proj = torch.randn(2 * N_HID, N_CLS)
    _assert_blockwise_same_draws(model, x, proj)
    one = MinGRU(N_IN, N_HID, 1, bidirectional=True)
    xd = torch.randn(9, 2, N_IN)
    y, _ = one(xd)
    y_rev, _ = one.direction_view(0, reverse=True)(xd.flip(0))
    torch.testing.assert_close(y[..., N_HID:], y_rev.flip(0), rtol=1e-12, atol=1e-14)


def test_block_engine_refuses_a_bidirectional_model():
    model = MinGRU(N_IN, N_HID, 1, bidirectional=True)
    x = torch.randn(8, 2, N_IN)
    with pytest.raises(ValueError, match=r"MinGRU\(bidirectional=True\) cannot be run block by"):
        vlrnn.block_loss(model, None, x, None, block_len=4)
    with pytest.raises(ValueError, match="neither residual nor layer_norm"):
        MinGRU(N_IN, N_HID, 2, bidirectional=True, layer_norm=True)


# -- bidirectional LRU/Mamba: stacks of one-layer views (NOTE [scan direction stacks]) --------
BIDI = {
    "lru": lambda layers, **kw: LRU(N_IN, N_HID, layers, state_size=3, bidirectional=True,
                                    **kw),
    "mamba": lambda layers, **kw: Mamba(N_IN, N_HID, layers, state_size=3, conv_size=3,
                                        bidirectional=True, **kw),
}


@pytest.mark.parametrize("kind", sorted(BIDI))
@pytest.mark.parametrize("layout", ["packed_unsorted", "time_major", "batch_first"])
def test_bidirectional_scan_stack_blockwise_equals_plain(kind, layout):
    """Blockwise (blocks of 3, sequences ending mid-block) against one plain call of the
    bidirectional model: outputs, final states and the gradients of parameters, x and
    the initial state under a loss that couples all steps and both directions."""
    torch.manual_seed(12)
    bf = layout == "batch_first"
    model = BIDI[kind](2, batch_first=bf).eval()
    assert model.output_size == 2 * N_HID
    x = batch(layout)
    h0 = random_state(model)
    assert all(t.shape[0] == 4 for t in flat_state(h0))   # 2 layers x 2 directions
    proj = torch.randn(2 * N_HID, N_CLS)
    tensors = [*model.parameters(), inputs_of(x), *flat_state(h0)]
    wrapped = vlrnn.Blockwise(model, block_len=3)

    def go(m):
        def run():
            y, s = m(x, h0)
            coupled_loss(y, s, proj, bf).backward()
            return y, s
        return run

    r, g, (yr, sr), (yg, sg) = run_both(tensors, go(model), go(wrapped))
    torch.testing.assert_close(inputs_of(yg), inputs_of(yr), rtol=1e-12, atol=1e-13)
    for a, b in zip(flat_state(sr), flat_state(sg)):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-13)
    assert_close_grads(r, g)


@torch.no_grad()
def shift(params, direction, eps: float) -> None:
    for p, d in zip(params, direction):
        p.add_(d, alpha=eps)


@pytest.mark.parametrize("kind", sorted(BIDI))
def test_bidirectional_scan_stack_dropout_replayed_and_reverse_reads_backwards(kind):
    """Dropout inside both directions' blocks and between layers: with the generator
    seeded before each call, Blockwise's loss is a fixed function of the parameters, and
    its gradient equals that function's central differences along random directions.
    (Not compared with ``plain=True``: the joined run of both directions draws their
    masks in another order than two separate runs do.)"""
    torch.manual_seed(13)
    model = BIDI[kind](2, dropout=0.3).train()
    x = batch("packed_unsorted")
    proj = torch.randn(2 * N_HID, N_CLS)
    params = list(model.parameters())
    wrapped = vlrnn.Blockwise(model, block_len=3)

    def loss() -> torch.Tensor:
        torch.manual_seed(14)
        y, s = wrapped(x)
        return coupled_loss(y, s, proj)

    for p in params:
        p.grad = None
    loss().backward()
    grads = [p.grad.clone() for p in params]
    g = torch.Generator().manual_seed(15)
    for _ in range(3):
        v = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params]
        eps = 1e-6
        # the loss evaluated with grad mode on, as above: without a graph, Blockwise
        # streams each direction whole, which draws the masks in another order
        shift(params, v, eps)
        up = float(loss().detach())
        shift(params, v, -2 * eps)
        down = float(loss().detach())
        shift(params, v, eps)
        numeric = (up - down) / (2 * eps)
        analytic = float(sum((gr * d).sum() for gr, d in zip(grads, v)))
        assert abs(numeric - analytic) <= 1e-6 * max(1.0, abs(analytic)), (numeric, analytic)
    one = BIDI[kind](1).eval()
    xd = torch.randn(9, 2, N_IN)
    y, _ = one(xd)
    y_fwd, _ = one.direction_view(0)(xd)
    y_rev, _ = one.direction_view(0, reverse=True)(xd.flip(0))
    torch.testing.assert_close(y[..., :N_HID], y_fwd, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(y[..., N_HID:], y_rev.flip(0), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kind", sorted(BIDI))
def test_bidirectional_scan_stack_refused_by_the_block_engine(kind):
    model = BIDI[kind](1)
    x = torch.randn(8, 2, N_IN)
    name = type(model).__name__
    with pytest.raises(ValueError, match=rf"{name}\(bidirectional=True\) cannot be run block"):
        vlrnn.block_loss(model, None, x, None, block_len=4)
    with pytest.raises(ValueError, match="not bidirectional"):
        BIDI[kind](1).direction_view(0, reverse=True).direction_view(0)
    good = model.initial_state(2)
    bad = good[:1] if isinstance(good, torch.Tensor) else (good[0][:1], good[1])
    with pytest.raises(ValueError, match=r"expected \(2, 2,"):
        model(x, bad)


@pytest.mark.parametrize("train", [False, True])
def test_lru_no_graph_forward_equals_the_graph_one(train):
    """The engine's forward pass (no graph: LRULayer writes in place) gives exactly what
    the recomputed blocks give with a graph, dropout draws included."""
    torch.manual_seed(16)
    model = LRU(N_IN, N_HID, 2, dropout=0.3 if train else 0.0, state_size=3).train(train)
    x = batch("packed_unsorted")
    h0 = random_state(model).detach()
    torch.manual_seed(17)
    y_graph, s_graph = model(x, h0)
    torch.manual_seed(17)
    with torch.no_grad():
        y_plain, s_plain = model(x, h0)
    torch.testing.assert_close(y_plain.data, y_graph.data, rtol=0, atol=0)
    torch.testing.assert_close(s_plain, s_graph, rtol=0, atol=0)
