"""StackedRNN options: per-layer sizes, residual connections, layer norm, dropout replay
and a projection head, against torch's fused layers and under the block engine (float64)."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_sequence, pad_packed_sequence

import vlrnn
from vlrnn.models import StackedRNN, WithHead

from helpers import assert_close_grads, flat_state, ragged_batch, run_both, seeded_total

LENGTHS = [7, 2, 11, 5, 11, 1]  # unsorted, a tie, a length-1 sequence
FUSED = {"lstm": nn.LSTM, "gru": nn.GRU}


def fused_layers(model: StackedRNN, kind: str):
    """One single-layer nn.LSTM/nn.GRU per layer of ``model``, with its weights."""
    out = []
    for cell, n_in, h in zip(model.cells, [model.input_size, *model.hidden_sizes],
                             model.hidden_sizes):
        ref = FUSED[kind](n_in, h)
        with torch.no_grad():
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(ref, f"{name}_l0").copy_(getattr(cell, name))
        out.append(ref)
    return out


def reference(model: StackedRNN, fused, x: PackedSequence, residual_layers):
    """The documented order, written out: fused layer -> LayerNorm -> + input; on the
    packed rows (every layer's rows line up with the input's). Returns ``y.data``."""
    inp = x.data
    for l, ref in enumerate(fused):
        out = ref(PackedSequence(inp, x.batch_sizes, x.sorted_indices, x.unsorted_indices))[0].data
        if model.layer_norm:
            out = model.norms[l](out)
        if l in residual_layers:
            out = out + inp
        inp = out
    return inp


def cell_params(layers, fused: bool):
    names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    return [getattr(m, f"{n}_l0" if fused else n) for m in layers for n in names]


def packed(n_in: int, seed: int = 1, requires_grad: bool = False):
    g = torch.Generator().manual_seed(seed)
    x = pack_sequence([torch.randn(n, n_in, generator=g) for n in LENGTHS], enforce_sorted=False)
    if requires_grad:
        x.data.requires_grad_(True)
    return x


# -- per-layer sizes ------------------------------------------------------------------------
def test_hidden_size_list():
    model = StackedRNN(3, [5, 2, 4], cell="lstm")
    assert model.num_layers == 3 and model.hidden_sizes == (5, 2, 4)
    assert model.hidden_size == 4 == model.output_size
    assert [c.input_size for c in model.cells] == [3, 5, 2]
    x = packed(3)
    y, state = model(x)
    assert y.data.shape == (sum(LENGTHS), 4)
    assert [tuple(s[0].shape) for s in state] == [(6, 5), (6, 2), (6, 4)]
    want = reference(model, fused_layers(model, "lstm"), x, ())
    torch.testing.assert_close(y.data, want, atol=1e-12, rtol=0)
    assert "[5, 2, 4]" in repr(model)


@pytest.mark.parametrize("kwargs, match", [
    (dict(hidden_size=[4, 4], num_layers=3), r"num_layers=3 does not match hidden_size=\[4, 4\]"),
    (dict(hidden_size=[]), r"non-empty list"),
    (dict(hidden_size=[4, 0]), r"hidden_size\[1\] must be >= 1, got 0"),
    (dict(hidden_size=[4, 5], residual=True), r"residual=True needs a layer .* 3 -> 4 -> 5"),
    (dict(hidden_size=4, num_layers=0), r"num_layers must be >= 1"),
])
def test_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        StackedRNN(3, **kwargs)


def test_defaults_keep_the_old_format():
    model = StackedRNN(3, 4, 2)
    assert model.hidden_sizes == (4, 4) and model.hidden_size == 4
    assert sorted({k.split(".")[0] for k in model.state_dict()}) == ["cells"]  # no norms
    assert StackedRNN(3, [4, 4]).num_layers == 2 and StackedRNN(3, 4).num_layers == 1


# -- residual and layer norm against the written-out reference ------------------------------
@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("sizes, n_in, residual_layers", [
    ([4, 4, 4], 3, (1, 2)),     # layer 0 changes the size: no residual there
    ([4, 6, 6], 4, (0, 2)),     # layer 0 keeps it, layer 1 does not
])
@pytest.mark.parametrize("layer_norm", [False, True])
def test_residual_layer_norm_match_reference(kind, sizes, n_in, residual_layers, layer_norm):
    torch.manual_seed(0)
    model = StackedRNN(n_in, sizes, cell=kind, residual=True, layer_norm=layer_norm)
    if layer_norm:  # non-trivial affine parameters
        for norm in model.norms:
            nn.init.normal_(norm.weight)
            nn.init.normal_(norm.bias)
    assert model._residual_layers == frozenset(residual_layers)
    x = packed(n_in, requires_grad=True)
    w = torch.randn(x.data.shape[0], sizes[-1])
    fused = fused_layers(model, kind)
    shared = (list(model.norms.parameters()) if layer_norm else []) + [x.data]
    ref_t, got_t = cell_params(fused, True) + shared, cell_params(model.cells, False) + shared
    ref, _, r, _ = run_both(ref_t, lambda: _backward((reference(model, fused, x, residual_layers)
                                                      * w).sum()), lambda: None)
    got, _, o, _ = run_both(got_t, lambda: _backward((model(x)[0].data * w).sum()), lambda: None)
    torch.testing.assert_close(o, r, atol=1e-10, rtol=0)
    assert_close_grads(ref, got, rtol=1e-10)
    plain = StackedRNN(n_in, sizes, cell=kind)
    plain.cells.load_state_dict(model.cells.state_dict())
    assert not torch.allclose(plain(x)[0].data, model(x)[0].data)  # the options act


def _backward(loss):
    loss.backward()
    return loss.detach()


def test_dense_batch_first_options():
    torch.manual_seed(0)
    model = StackedRNN(4, [4, 4], cell="gru", residual=True, layer_norm=True, batch_first=True)
    x = torch.randn(3, 6, 4)
    y, _ = model(x)
    xp = pack_sequence(list(x), enforce_sorted=False)  # same sequences, packed
    yp, _ = model(xp)
    torch.testing.assert_close(y, pad_packed_sequence(yp, batch_first=True)[0],
                               atol=1e-12, rtol=0)
    assert not torch.allclose(y, model(torch.randn(3, 6, 4))[0])


# -- under the block engine ----------------------------------------------------------------
@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("block_len", [1, 4, 7])
def test_engine_with_all_options(kind, block_len):
    torch.manual_seed(2)
    model = StackedRNN(3, [4, 4, 4], cell=kind, dropout=0.3, residual=True,
                       layer_norm=True).train()
    head = nn.Linear(4, 2)
    x, y = ragged_batch(LENGTHS, 3, 2)  # unsorted, ends inside blocks
    x.data.requires_grad_(True)
    g = torch.Generator().manual_seed(3)
    h0 = tuple((torch.randn(6, 4, generator=g).requires_grad_(),
                torch.randn(6, 4, generator=g).requires_grad_()) if kind == "lstm"
               else torch.randn(6, 4, generator=g).requires_grad_() for _ in range(3))
    tensors = list(model.parameters()) + list(head.parameters()) + flat_state(h0) + [x.data]
    lf = lambda out, tgt: (head(out) - tgt) ** 2  # noqa: E731

    def seeded(fn, seed=11, **kw):  # dropout between layers is replayed on recompute
        return seeded_total(fn, model, lf, x, y, seed=seed, block_len=block_len, state=h0,
                            reduction="seq_mean", **kw)

    ref, got, r, o = run_both(tensors, lambda: seeded(vlrnn.full_loss),
                              lambda: seeded(vlrnn.block_loss))
    assert_close_grads(ref, got, rtol=1e-10)
    assert torch.allclose(r, o, rtol=1e-12)
    with torch.no_grad():  # the dropout draws mattered
        losses = []
        for seed in (11, 12):
            torch.manual_seed(seed)
            losses.append(vlrnn.full_loss(model, lf, x, y, block_len=block_len,
                                          state=h0).loss)
    assert not torch.allclose(losses[0], losses[1])
    model.eval()  # without dropout: equal to one call on the whole batch
    ref, got, r2, o2 = run_both(
        tensors, lambda: vlrnn.full_backward(model, lf, x, y, state=h0),
        lambda: vlrnn.block_backward(model, lf, x, y, block_len=block_len, state=h0))
    assert_close_grads(ref, got, rtol=1e-10)
    assert torch.allclose(r2.loss, o2.loss, rtol=1e-12)


def test_with_head():
    torch.manual_seed(4)
    model = StackedRNN(3, [5, 4], cell="gru", layer_norm=True).with_head(2)
    assert isinstance(model, WithHead) and model.state_batch_dim == 0
    assert (model.head.in_features, model.head.out_features) == (4, 2)
    x, y = ragged_batch(LENGTHS, 3, 2)
    out, state = model(x)
    assert out.data.shape == (sum(LENGTHS), 2)
    assert torch.equal(out.unsorted_indices, x.unsorted_indices)
    assert [tuple(s.shape) for s in state] == [(6, 5), (6, 4)]
    tensors = list(model.parameters())
    lf = nn.MSELoss(reduction="none")
    ref, got, _, _ = run_both(tensors, lambda: vlrnn.full_backward(model, lf, x, y),
                              lambda: vlrnn.block_backward(model, lf, x, y, block_len=3))
    assert_close_grads(ref, got, rtol=1e-10)
    with pytest.raises(ValueError, match="n_out must be >= 1"):
        StackedRNN(3, 4).with_head(0)
