"""Bad input, property-based: every random case either works exactly or raises the
documented clear error, never an exception from deep inside torch.

- ``vlrnn.block_loss``: random packed and dense batches, block lengths, targets, initial
  states, reductions and hand-built ``PackedSequence`` objects. "Works exactly": the
  loss and the gradient of every parameter (and of ``x`` and the state when they require
  grad) equal plain BPTT (``full_backward``) to 1e-7 relative, in float64, NaN/inf where
  it has them. "Clear error": ``ValueError``/``TypeError`` whose message names the
  argument at fault and what came.
- ``vlrnn.data.from_dataframe`` (extending tests/test_data_property.py, which covers
  NaN/inf cells and duplicates in float columns): random column dtypes (nullable,
  unsigned, bool, str, object, category, complex, datetime), huge and tiny values,
  single-row series with ``min_length``/``short_series``, every ``on_nonfinite`` mode,
  bad time columns, empty frames, float32 and float64 output; checked against a
  reference built with plain pandas.

Run with ``-s`` to see how many cases each property tried and how they ended.
"""
from __future__ import annotations

import re
import warnings
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_sequence

import vlrnn
from vlrnn.data import DataWarning, from_dataframe
from vlrnn.engine._blocks import input_order_lengths
from vlrnn.engine._schedules import revolve_with

EXAMPLES = 300
RTOL = 1e-7
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])
OUTCOMES: Counter = Counter()


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    for key in sorted(OUTCOMES):
        print(f"fuzz {key}: {OUTCOMES[key]}")


def sq(out, tgt):
    """Per-row squared error; rows (R, H) -> (R, H), trailing dims summed by vlrnn."""
    return (out - tgt) ** 2


# -- building blocks -------------------------------------------------------------------------------
@st.composite
def rnns(draw, bidirectional=False):
    kind = draw(st.sampled_from(["lstm", "gru", "rnn"]))
    hidden, n_in = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    kw = dict(num_layers=draw(st.integers(1, 2)), batch_first=draw(st.booleans()),
              bidirectional=bidirectional)
    if kind == "lstm" and hidden > 1 and draw(st.booleans()):
        kw["proj_size"] = draw(st.integers(1, hidden - 1))
    torch.manual_seed(draw(st.integers(0, 2 ** 16)))
    cls = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[kind]
    return cls(n_in, hidden, **kw)


def width(m: nn.RNNBase) -> int:
    return (getattr(m, "proj_size", 0) or m.hidden_size) * (2 if m.bidirectional else 1)


@st.composite
def batches(draw, model):
    """(x, target, kind) for ``model``: packed (sorted or not) or dense in its layout,
    values of a random scale, sometimes with a NaN or inf."""
    g = torch.Generator().manual_seed(draw(st.integers(0, 2 ** 16)))
    kind = draw(st.sampled_from(["packed", "packed_sorted", "dense"]))
    n_in, n_out = model.input_size, width(model)
    scale = draw(st.sampled_from([1.0, 1.0, 1.0, 1e-300, 1e-8, 1e3, 1e150]))
    if kind == "dense":
        T, B = draw(st.integers(1, 10)), draw(st.integers(1, 4))
        lead = (B, T) if model.batch_first else (T, B)
        x = torch.randn(*lead, n_in, generator=g) * scale
        y = torch.randn(*lead, n_out, generator=g)
    else:
        lengths = draw(st.lists(st.integers(1, 12), min_size=1, max_size=5))
        srt = kind == "packed_sorted"
        if srt:
            lengths = sorted(lengths, reverse=True)
        x = pack_sequence([torch.randn(n, n_in, generator=g) * scale for n in lengths],
                          enforce_sorted=srt)
        y = pack_sequence([torch.randn(n, n_out, generator=g) for n in lengths],
                          enforce_sorted=srt)
    bad = draw(st.sampled_from([None] * 8 + ["nan", "inf", "-inf"]))
    if bad is not None:
        data = x.data if isinstance(x, PackedSequence) else x
        data.view(-1)[draw(st.integers(0, data.numel() - 1))] = float(bad)
    return x, y, kind


def state_for(model, B, g, requires_grad=False):
    n_lay = model.num_layers * (2 if model.bidirectional else 1)
    h = torch.randn(n_lay, B, getattr(model, "proj_size", 0) or model.hidden_size, generator=g)
    if isinstance(model, nn.LSTM):
        c = torch.randn(n_lay, B, model.hidden_size, generator=g)
        return (h.requires_grad_(requires_grad), c.requires_grad_(requires_grad))
    return h.requires_grad_(requires_grad)


def batch_size(model, x) -> int:
    if isinstance(x, PackedSequence):
        return int(x.batch_sizes[0])
    return x.shape[0] if model.batch_first else x.shape[1]


def steps(model, x) -> int:
    if isinstance(x, PackedSequence):
        return len(x.batch_sizes)
    return x.shape[1] if model.batch_first else x.shape[0]


# -- the two outcomes ------------------------------------------------------------------------------
def assert_same(a, b, what: str) -> None:
    """Equal to RTOL relative to the largest finite entry; NaN/inf in the same places."""
    assert (a is None) == (b is None), f"{what}: one gradient is missing"
    if a is None:
        return
    assert a.shape == b.shape, what
    assert torch.equal(a.isnan(), b.isnan()), f"{what}: NaN in different places"
    fin = torch.isfinite(a)
    assert torch.equal(fin, torch.isfinite(b)), f"{what}: inf in different places"
    assert torch.equal(a[torch.isinf(a)], b[torch.isinf(b)]), f"{what}: inf signs differ"
    if fin.any():
        scale = a[fin].abs().max().clamp_min(1e-300)
        err = ((a[fin] - b[fin]).abs().max() / scale).item()
        assert err <= RTOL, f"{what}: relative error {err:.2e}"


def grads(tensors):
    return [None if t.grad is None else t.grad.clone() for t in tensors]


def check_exact(prop, model, x, target, *, x_ref=None, target_ref=None, state=None,
                leaves=(), **kw):
    """``block_loss`` must give plain BPTT's loss and gradients (the reference may take
    another but equivalent ``x_ref``/``target_ref``)."""
    tensors = list(model.parameters()) + list(leaves)
    for t in tensors:
        t.grad = None
    out = vlrnn.block_loss(model, sq, x, target, state=state, **kw)
    out.loss.backward()
    got = grads(tensors)
    for t in tensors:
        t.grad = None
    kw.pop("memory_budget", None)
    ref = vlrnn.full_backward(model, sq, x if x_ref is None else x_ref,
                              target if target_ref is None else target_ref, state=state,
                              **{k: v for k, v in kw.items() if k != "block_len"})
    want = grads(tensors)
    assert_same(out.loss.detach(), ref.loss, "loss")
    for i, (a, b) in enumerate(zip(want, got)):
        assert_same(a, b, f"gradient {i}")
    OUTCOMES[f"{prop}: exact"] += 1


def expect_clear_error(prop, fn, *names: str, types=(ValueError, TypeError)):
    """``fn()`` raises one of ``types`` whose message names one of ``names``."""
    try:
        fn()
    except types as err:
        msg = str(err)
        assert any(n.lower() in msg.lower() for n in names), \
            f"{type(err).__name__} does not name any of {names}: {msg}"
        assert len(msg) > 20, f"message too short to be clear: {msg!r}"
        OUTCOMES[f"{prop}: {type(err).__name__}"] += 1
        return
    raise AssertionError(f"no {'/'.join(t.__name__ for t in types)} for a bad {names[0]}")


# -- block_loss properties ------------------------------------------------------------------------
@FUZZ
@given(data=st.data())
def test_valid_batches_match_plain_bptt(data):
    """Any valid batch, block length (also past T), schedule, reduction and initial state."""
    model = data.draw(rnns())
    x, y, kind = data.draw(batches(model))
    B, T = batch_size(model, x), steps(model, x)
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 99)))
    kw = dict(block_len=data.draw(st.integers(1, T + 3)),
              reduction=data.draw(st.sampled_from(["sum", "mean", "seq_mean"])),
              schedule=data.draw(st.sampled_from(["flat", "two_level", "revolve", revolve_with(2)])))
    if data.draw(st.booleans()):
        kw["block_len"] = np.int64(kw["block_len"])  # numpy ints are ints too
    state = None
    leaves = []
    if data.draw(st.booleans()):
        state = state_for(model, B, g, requires_grad=data.draw(st.booleans()))
        leaves += [t for t in ([state] if torch.is_tensor(state) else state)
                   if t.requires_grad]
    if data.draw(st.booleans()):  # x itself gets a gradient
        leaf = (x.data if isinstance(x, PackedSequence) else x).clone().requires_grad_()
        x = x._replace(data=leaf) if isinstance(x, PackedSequence) else leaf
        leaves.append(leaf)
    check_exact("valid batches", model, x, y, state=state, leaves=leaves, **kw)


BLOCK_LENS = st.one_of(
    st.integers(-3, 0), st.integers(1, 20), st.floats(allow_nan=True), st.booleans(),
    st.text(max_size=5), st.sampled_from(["auto", "AUTO", "8", None, [4], 4.0]),
    st.integers(1, 20).map(np.int32), st.integers(-2, 20).map(np.int64),
    st.integers(1, 5).map(torch.tensor), st.integers(2 ** 40, 2 ** 62))


@FUZZ
@given(data=st.data(), block_len=BLOCK_LENS)
def test_block_len_works_or_is_refused(data, block_len):
    model = data.draw(rnns())
    x, y, _ = data.draw(batches(model))
    good = block_len == "auto" if isinstance(block_len, str) else (
        isinstance(block_len, (int, np.integer)) and not isinstance(block_len, bool)
        and block_len >= 1)
    if good:
        kw = {"memory_budget": "64MB"} if block_len == "auto" else {}
        check_exact("block_len", model, x, y, block_len=block_len, **kw)
    else:
        expect_clear_error("block_len", lambda: vlrnn.block_loss(model, sq, x, y,
                                                                 block_len=block_len),
                           "block_len")


@FUZZ
@given(data=st.data(), reduction=st.one_of(
    st.sampled_from(["sum", "mean", "seq_mean", "MEAN", " mean", "avg", "", None, 1]),
    st.text(max_size=8)))
def test_reduction_works_or_is_refused(data, reduction):
    model = data.draw(rnns())
    x, y, _ = data.draw(batches(model))
    if reduction in ("sum", "mean", "seq_mean"):
        check_exact("reduction", model, x, y, block_len=3, reduction=reduction)
    else:
        expect_clear_error("reduction", lambda: vlrnn.block_loss(
            model, sq, x, y, block_len=3, reduction=reduction), "reduction", repr(reduction))


TARGET_FAULTS = ["time", "batch", "ndim", "layout", "type", "lengths", "bad_packed",
                 "reordered"]


def corrupt_target(kind_x, model, x, y, fault, g):
    """A target that does not fit ``x`` (or, for "reordered", one that does)."""
    if kind_x == "dense":
        t_dim = 1 if model.batch_first else 0
        if fault == "time":
            shape = list(y.shape)
            shape[t_dim] += 1
            return torch.randn(*shape, generator=g)
        if fault == "batch":
            shape = list(y.shape)
            shape[1 - t_dim] += 1
            return torch.randn(*shape, generator=g)
        if fault == "ndim":
            return y[(0,) * (y.dim() - 1)] if y.dim() > 1 else y.sum()
        if fault in ("layout", "bad_packed"):
            return pack_sequence([torch.randn(2, y.shape[-1], generator=g)])
        if fault == "type":
            return y.tolist()
        return y  # "reordered", "lengths": no such thing for dense; fits
    lengths = [int(n) for n in input_order_lengths(x)]
    w = y.data.shape[-1]
    if fault in ("time", "lengths"):
        i = int(torch.randint(len(lengths), (1,), generator=g))
        lengths[i] += 1 if fault == "time" or lengths[i] == 1 else -1
        return pack_sequence([torch.randn(n, w, generator=g) for n in lengths],
                             enforce_sorted=False)
    if fault == "batch":
        return pack_sequence([torch.randn(n, w, generator=g) for n in lengths + [1]],
                             enforce_sorted=False)
    if fault == "ndim":
        return torch.randn(3, generator=g)
    if fault == "layout":
        return torch.randn(len(lengths), max(lengths), w, generator=g)
    if fault == "type":
        return [y.data]
    if fault == "bad_packed":
        return PackedSequence(y.data, y.batch_sizes.flip(0), y.sorted_indices,
                              y.unsorted_indices)
    # "reordered": the same series in the same batch order, stored sorted with ties in
    # length broken the other way than in x (valid; vlrnn must pair the rows right)
    seqs = torch.nn.utils.rnn.unpack_sequence(y)
    q = sorted(range(len(lengths)), key=lambda i: (-lengths[i], -i))
    rows = [seqs[j][t] for t in range(max(lengths)) for j in q if lengths[j] > t]
    return PackedSequence(torch.stack(rows), y.batch_sizes, torch.tensor(q),
                          torch.argsort(torch.tensor(q)))


@FUZZ
@given(data=st.data(), fault=st.sampled_from(TARGET_FAULTS))
def test_target_mismatch_is_named(data, fault):
    model = data.draw(rnns())
    x, y, kind = data.draw(batches(model))
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 99)))
    tgt = corrupt_target(kind, model, x, y, fault, g)
    fits = fault == "reordered" or (kind == "dense" and fault == "lengths")
    if fault == "bad_packed" and kind != "dense" \
            and torch.equal(y.batch_sizes, y.batch_sizes.flip(0)):
        fits = True  # all lengths equal: flipping batch_sizes changes nothing
    if fits:  # the reference gets the target packed like x, not the reordered one
        check_exact("target", model, x, tgt, target_ref=y, block_len=2)
    else:
        expect_clear_error("target", lambda: vlrnn.block_loss(model, sq, x, tgt, block_len=2),
                           "target")


STATE_FAULTS = ["batch", "layers", "hidden", "no_batch_dim", "extra_dim", "structure",
                "three", "dict", "none_leaf", "int", "float32", "int64", "list_ok",
                "batch_dim"]


def corrupt_state(model, B, fault, g):
    """(state, state_batch_dim or None, expected to work)."""
    good = state_for(model, B, g)
    leaves = [good] if torch.is_tensor(good) else list(good)
    lstm = isinstance(model, nn.LSTM)

    def each(fn):
        out = [fn(t) for t in leaves]
        return out[0] if not lstm else tuple(out)

    if fault == "batch":
        return each(lambda t: torch.randn(t.shape[0], B + 1, t.shape[2], generator=g)), None, False
    if fault == "layers":
        return each(lambda t: torch.randn(t.shape[0] + 1, B, t.shape[2], generator=g)), None, False
    if fault == "hidden":
        return each(lambda t: torch.randn(t.shape[0], B, t.shape[2] + 1, generator=g)), None, False
    if fault == "no_batch_dim":
        return each(lambda t: t[:, 0]), None, False
    if fault == "extra_dim":
        return each(lambda t: t.unsqueeze(-1)), None, False
    if fault == "structure":  # LSTM given one tensor, GRU/RNN given a pair
        return (leaves[0] if lstm else (good, good.clone())), None, False
    if fault == "three":
        return (leaves[0],) * 3, None, False
    if fault == "dict":
        return {"h": leaves[0]}, None, False
    if fault == "none_leaf":
        return (None, leaves[-1]) if lstm else [None], None, False
    if fault == "int":
        return 3, None, False
    if fault == "float32":
        return each(lambda t: t.float()), None, False
    if fault == "int64":
        return each(lambda t: t.long()), None, False
    if fault == "list_ok":  # a list instead of a tuple is still a pair
        return (list(leaves) if lstm else good), None, True
    bad_dim = [0, 2, 5, -1, 1.5, "1", True][int(torch.randint(7, (1,), generator=g))]
    return good, bad_dim, False


@FUZZ
@given(data=st.data(), fault=st.sampled_from(STATE_FAULTS))
def test_initial_state_mismatch_is_named(data, fault):
    model = data.draw(rnns())
    x, y, _ = data.draw(batches(model))
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 99)))
    state, bad_dim, fits = corrupt_state(model, batch_size(model, x), fault, g)
    if fits:
        check_exact("state", model, x, y, block_len=2, state=state)
    else:
        expect_clear_error("state", lambda: vlrnn.block_loss(
            model, sq, x, y, block_len=2, state=state, state_batch_dim=bad_dim), "state")


@st.composite
def raw_packed(draw):
    """A PackedSequence built by hand: random batch_sizes (valid or not), data rows and
    permutation indices; with whether it is valid."""
    T = draw(st.integers(0, 6))
    bs = draw(st.lists(st.integers(-1, 4), min_size=T, max_size=T))
    if draw(st.booleans()):  # usually make it a valid non-increasing list of positives
        bs = sorted((abs(b) or 1 for b in bs), reverse=True)
    rows = sum(bs) + draw(st.sampled_from([0, 0, 0, 1, -1]))
    dtype = draw(st.sampled_from([torch.int64, torch.int64, torch.int64, torch.int32,
                                  torch.float64]))
    n = bs[0] if bs else 0
    perm = draw(st.sampled_from(["none", "perm", "perm", "repeat", "short", "not_inverse"]))
    valid = (T > 0 and all(b >= 1 for b in bs) and all(a >= b for a, b in zip(bs, bs[1:]))
             and rows == sum(bs) and dtype == torch.int64 and rows > 0)
    s = u = None
    if perm != "none" and n >= 1:
        p = torch.randperm(n, generator=torch.Generator().manual_seed(draw(st.integers(0, 99))))
        s, u = p, torch.argsort(p)
        if perm == "repeat" and n > 1:
            s, valid = torch.zeros(n, dtype=torch.int64), False
        elif perm == "short":
            s, u, valid = p[:-1], u[:-1], False
        elif perm == "not_inverse" and n > 2 and not torch.equal(s, u):
            u, valid = s.clone(), False
    data = torch.randn(max(rows, 0), 2)
    return PackedSequence(data, torch.tensor(bs, dtype=dtype), s, u), valid


@FUZZ
@given(data=st.data(), packed=raw_packed())
def test_hand_built_packed_sequences_work_or_are_refused(data, packed):
    x, valid = packed
    torch.manual_seed(data.draw(st.integers(0, 99)))
    model = nn.GRU(2, 3)
    if valid:
        y = x._replace(data=torch.randn(x.data.shape[0], 3))
        check_exact("raw PackedSequence", model, x, y, block_len=data.draw(st.integers(1, 4)))
    else:
        expect_clear_error("raw PackedSequence", lambda: vlrnn.block_loss(
            model, sq, x, None, block_len=2), "batch_sizes", "indices", "x.data",
            "time steps")


X_FAULTS = ["features", "ndim1", "ndim2", "ndim4", "empty_t", "empty_b", "float32", "int64",
            "complex", "list", "none", "numpy_ok", "batch_first", "batch_first_str",
            "bidirectional"]


@FUZZ
@given(data=st.data(), fault=st.sampled_from(X_FAULTS))
def test_bad_x_or_model_is_named(data, fault):
    model = data.draw(rnns(bidirectional=fault == "bidirectional"))
    x, y, kind = data.draw(batches(model))
    dense = x if kind == "dense" else None
    kw = {}
    names = ["x", "input"]
    if fault == "features":
        x = (x._replace(data=torch.randn(x.data.shape[0], model.input_size + 1))
             if dense is None else torch.randn(*x.shape[:-1], model.input_size + 1))
        names = ["input_size"]
    elif fault.startswith("ndim"):
        assume(dense is not None)
        x = {"ndim1": x.reshape(-1), "ndim2": x[..., 0], "ndim4": x.unsqueeze(-1)}[fault]
        names = ["x"]
    elif fault.startswith("empty"):
        assume(dense is not None)
        x = x[:, :0] if (fault == "empty_t") == model.batch_first else x[:0]
        y = None
        names = ["empty"]
    elif fault in ("float32", "int64", "complex"):
        dt = {"float32": torch.float32, "int64": torch.int64, "complex": torch.complex128}[fault]
        x = x._replace(data=x.data.to(dt)) if dense is None else x.to(dt)
        names = ["dtype"]
    elif fault == "list":
        x = x.data.tolist() if dense is None else x.tolist()
    elif fault == "none":
        x = None
    elif fault == "numpy_ok":  # a numpy array is streamed block by block: must be exact
        assume(dense is not None)
        if torch.isfinite(x).all():
            check_exact("x", model, x.numpy(), y, x_ref=x, block_len=2)
            return
        x, names = x.numpy(), ["non-finite"]  # the streamer refuses NaN/inf as it reads
    elif fault == "batch_first":
        assume(dense is not None)
        kw["batch_first"] = not model.batch_first
        names = ["batch_first"]
    elif fault == "batch_first_str":
        kw["batch_first"] = "yes"
        names = ["batch_first"]
    elif fault == "bidirectional":
        names = ["bidirectional"]
    expect_clear_error("x/model", lambda: vlrnn.block_loss(model, sq, x, y, block_len=2, **kw),
                       *names)


# -- from_dataframe ---------------------------------------------------------------------------------
GOOD_KINDS = ["float64", "float32", "int64", "uint8", "bool", "Int64", "Float64", "huge",
              "tiny"]
BAD_KINDS = ["str", "object", "category", "complex", "datetime"]
COLS = ["a", "b", "y"]


def column(kind: str, n: int, rng: np.random.Generator, out_dtype: torch.dtype):
    z = rng.normal(size=n)
    if kind == "float64":
        return z
    if kind == "float32":
        return z.astype(np.float32)
    if kind == "int64":
        return rng.integers(-5, 5, size=n)
    if kind == "uint8":
        return rng.integers(0, 255, size=n).astype(np.uint8)
    if kind == "bool":
        return rng.integers(0, 2, size=n).astype(bool)
    if kind == "Int64":
        return pd.array(rng.integers(-5, 5, size=n), dtype="Int64")
    if kind == "Float64":
        return pd.array(z, dtype="Float64")
    if kind == "huge":  # within range of the output dtype (overflow: a separate test)
        return z * (1e300 if out_dtype == torch.float64 else 1e37)
    if kind == "tiny":  # subnormal in float64; float32 rounds them to 0
        return z * 1e-310
    if kind == "str":
        return [f"v{i}" for i in range(n)]
    if kind == "object":
        return pd.Series(list(z), dtype=object)
    if kind == "category":
        return pd.Categorical(rng.choice(["p", "q"], size=n))
    if kind == "complex":
        return z + 1j
    return pd.to_datetime(rng.integers(0, 10 ** 9, size=n), unit="s")  # datetime


@st.composite
def frames(draw):
    """(df, options, static faults): a random long-format frame and from_dataframe options;
    faults found without running anything, as (column or None, regex of the error)."""
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    out_dtype = draw(st.sampled_from([torch.float64, torch.float32]))
    n = draw(st.sampled_from([0, 1, 2, 2, 3, 3, 4, 4, 4, 4]))
    ids = draw(st.lists(st.integers(-9, 9), min_size=n, max_size=n, unique=True))
    if draw(st.booleans()):
        ids = [f"s{i}" for i in ids]
    lengths = draw(st.lists(st.integers(1, 5), min_size=n, max_size=n))
    time_kind = draw(st.sampled_from(["int", "float", "datetime"] * 4 + ["str", "nan"]))
    kinds = {c: draw(st.sampled_from(GOOD_KINDS * 8 + BAD_KINDS)) for c in COLS}
    rows = sum(lengths)
    id_col = [i for i, T in zip(ids, lengths) for _ in range(T)]
    t = np.concatenate([np.cumsum(rng.integers(1, 3, size=T)) for T in lengths]) \
        if n else np.zeros(0, dtype=np.int64)
    df = pd.DataFrame({"id": pd.Series(id_col, dtype=object if ids and isinstance(ids[0], str)
                                       else "int64"),
                       "t": t})
    faults = []
    if time_kind == "float":
        df["t"] = df["t"] * 0.5
    elif time_kind == "datetime":
        df["t"] = pd.Timestamp("2021-01-01") + pd.to_timedelta(df["t"], unit="h")
    elif time_kind == "str":
        df["t"] = [f"t{v}" for v in df["t"]]
        faults.append(r"time column 't' has dtype")
    for c in COLS:
        df[c] = column(kinds[c], rows, rng, out_dtype)
        if kinds[c] in BAD_KINDS:
            faults.append(rf"column '{c}' has non-numeric dtype")
    if time_kind == "nan" and rows:
        df["t"] = df["t"].astype(float)
        df.loc[int(rng.integers(rows)), "t"] = np.nan
        faults.append(r"time column 't' has \d+ missing")
    for _ in range(draw(st.integers(0, 2)) if rows else 0):  # NaN/inf cells
        c = draw(st.sampled_from(COLS))
        if kinds[c] in ("float64", "float32", "Float64", "huge", "tiny", "Int64"):
            val = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
            if kinds[c] == "Int64":
                val = pd.NA
            df.loc[int(rng.integers(rows)), c] = val
    if rows and draw(st.integers(0, 7)) == 0:  # a duplicated (id, t) row
        df = pd.concat([df, df.iloc[[int(rng.integers(rows))]]], ignore_index=True)
        if time_kind not in ("nan",):
            faults.append(r"share an \('id', 't'\) pair")
    if rows == 0:
        faults.append(r"the frame is empty")
    df.index = rng.permutation(len(df)) * 7 + 3
    df = df.iloc[rng.permutation(len(df))]
    opts = dict(on_nonfinite=draw(st.sampled_from(["raise", "drop", "ffill"])),
                min_length=draw(st.integers(1, 3)),
                short_series=draw(st.sampled_from(["raise", "drop"])), dtype=out_dtype)
    return df, opts, faults


def reference_load(df: pd.DataFrame, opts):
    """What from_dataframe must give, computed with plain pandas: (regex of the expected
    error, None) or (None, list of (id, x, y))."""
    df = df.sort_values(["id", "t"], kind="stable")
    vals = np.column_stack([df[c].to_numpy(dtype=np.float64, na_value=np.nan) for c in COLS])
    bad = ~np.isfinite(vals)
    ids = df["id"].to_numpy()
    if bad.any():
        if opts["on_nonfinite"] == "raise":
            cols = "|".join(c for j, c in enumerate(COLS) if bad[:, j].any())
            return rf"non-finite values .*column '({cols})'", None
        if opts["on_nonfinite"] == "drop":
            keep = ~bad.any(axis=1)
            if not keep.any():
                return r"every row has a non-finite value", None
            vals, ids = vals[keep], ids[keep]
        else:
            filled = pd.DataFrame(np.where(bad, np.nan, vals)).groupby(
                pd.Series(ids).astype(str).to_numpy()).ffill().to_numpy()
            if np.isnan(filled).any():
                j = int(np.flatnonzero(np.isnan(filled).any(axis=0))[0])
                return rf"ffill.*column '{COLS[j]}' has \d+ leading", None
            vals = filled
    uniq, counts = pd.unique(ids), pd.Series(ids).value_counts(sort=False)
    short = [i for i in uniq if counts[i] < opts["min_length"]]
    if short:
        if opts["short_series"] == "raise":
            return r"fewer than min_length", None
        if len(short) == len(uniq):
            return r"every series .*fewer than min_length", None
    series = []
    for sid in uniq:
        if sid in short:
            continue
        v = vals[ids == sid]
        series.append((sid, torch.from_numpy(v[:, :2]).to(opts["dtype"]),
                       torch.from_numpy(v[:, 2:]).to(opts["dtype"])))
    return None, series


@FUZZ
@given(case=frames())
def test_random_frames_load_exactly_or_raise_a_clear_valueerror(case):
    df, opts, faults = case
    kw = dict(id_col="id", time_col="t", target_cols=["y"], feature_cols=["a", "b"], **opts)
    if faults:
        with pytest.raises(ValueError) as info:
            from_dataframe(df, **kw)
        assert any(re.search(f, str(info.value)) for f in faults), (faults, str(info.value))
        OUTCOMES["frames: ValueError (column type/time/duplicates/empty)"] += 1
        return
    expected_error, series = reference_load(df, opts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        if expected_error is not None:
            with pytest.raises(ValueError, match=expected_error):
                from_dataframe(df, **kw)
            OUTCOMES["frames: ValueError (non-finite/short series)"] += 1
            return
        ds = from_dataframe(df, **kw)
    assert len(ds) == len(series)
    for i, (sid, x, y) in enumerate(series):
        assert ds.ids[i] == sid
        got_x, got_y = ds[i]
        assert got_x.dtype == opts["dtype"]
        assert torch.equal(got_x, x) and torch.equal(got_y, y), sid
    OUTCOMES["frames: exact"] += 1


@pytest.mark.parametrize("dtype,value", [(torch.float32, 1e300), (torch.float16, 7e4)])
def test_values_that_overflow_the_dtype_are_refused(dtype, value):
    df = pd.DataFrame({"id": [1, 1], "t": [0, 1], "a": [value, 1.0], "y": [0.0, 1.0]})
    # a finite value that would become inf in ``dtype`` is refused, naming the column
    with pytest.raises(ValueError, match="column 'a' has values too large"):
        from_dataframe(df, id_col="id", time_col="t", target_cols="y", dtype=dtype)


def test_infinite_time_stamps_are_refused():
    df = pd.DataFrame({"id": [1, 1, 1], "t": [0.0, 1.0, np.inf], "a": [1.0, 2, 3],
                       "y": [0.0, 1, 2]})
    with pytest.raises(ValueError, match="'t'"):
        from_dataframe(df, id_col="id", time_col="t", target_cols="y")
