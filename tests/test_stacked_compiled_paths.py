"""StackedRNN(compile=True) on every path a custom cell can take (symbolic per-step
backward, autograd per-step chain, whole-cell split, random cells), against plain
autograd through the Python step loop (float64), and the cells it must refuse."""
from __future__ import annotations

import copy
from typing import Tuple

import pytest
import torch
from torch import Tensor, nn

import vlrnn
from helpers import assert_close_grads, ragged_batch
from vlrnn.models import StackedRNN

LENGTHS = [7, 2, 11, 5, 11, 1]  # unsorted, a tie, a length-1 sequence; ends inside blocks


class Elman(nn.Module):  # symbolic backward: addmm + tanh
    def __init__(self, n_in: int, n_hid: int):
        super().__init__()
        self.ih = nn.Linear(n_in, n_hid)
        self.hh = nn.Linear(n_hid, n_hid, bias=False)

    def forward(self, x: Tensor, h: Tensor) -> Tensor:
        return torch.tanh(self.ih(x) + self.hh(h))


class Gated(nn.Module):  # symbolic backward: pair state, cat, chunk, sigmoid, mul, div, relu
    def __init__(self, n_in: int, n_hid: int):
        super().__init__()
        self.lin = nn.Linear(n_in + n_hid, 3 * n_hid)
        self.scale = nn.Parameter(torch.rand(n_hid) + 0.5)
        self.n_hid = n_hid

    def initial_state(self, n: int, device=None, dtype=None):
        z = torch.zeros(n, self.n_hid, device=device, dtype=dtype)
        return (z, z)

    def forward(self, x: Tensor, state: Tuple[Tensor, Tensor]) -> Tuple[Tensor, Tensor]:
        h, c = state
        a, b, z = self.lin(torch.cat([x, h], 1)).chunk(3, 1)
        c = torch.sigmoid(a) * c + torch.tanh(b) / (1.5 + torch.sigmoid(z))
        return torch.relu(c) * self.scale - c * 0.1, c


class MyGRU(nn.Module):  # symbolic backward: chunks of hoisted and per-step Linears, 1 - z
    def __init__(self, n_in: int, n_hid: int):
        super().__init__()
        self.ih = nn.Linear(n_in, 3 * n_hid)
        self.hh = nn.Linear(n_hid, 3 * n_hid)

    def forward(self, x: Tensor, h: Tensor) -> Tensor:
        xr, xz, xn = self.ih(x).chunk(3, 1)
        hr, hz, hn = self.hh(h).chunk(3, 1)
        r = torch.sigmoid(xr + hr)
        z = torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        return (1 - z) * n + z * h


class Shared(nn.Module):  # one Linear both hoisted (on x) and per step (on h), twice
    def __init__(self, n_in: int, n_hid: int):
        super().__init__()
        self.inp = nn.Linear(n_in, n_hid)
        self.lin = nn.Linear(n_hid, n_hid)

    def forward(self, x: Tensor, h: Tensor) -> Tensor:
        return torch.tanh(self.lin(self.inp(x)) + self.lin(h) - 0.5 * self.lin(h * h))


class LayerNormCell(nn.Module):  # symbolic backward through a LayerNorm on the state path
    def __init__(self, n_in: int, n_hid: int):
        super().__init__()
        self.ih = nn.Linear(n_in, n_hid)
        self.hh = nn.Linear(n_hid, n_hid, bias=False)
        self.norm = nn.LayerNorm(n_hid)
        nn.init.uniform_(self.norm.weight, 0.5, 1.5)
        nn.init.uniform_(self.norm.bias, -0.2, 0.2)

    def forward(self, x: Tensor, h: Tensor) -> Tensor:
        return torch.tanh(self.norm(self.ih(x) + self.hh(h)))


class SinCell(nn.Module):  # sin has no rule: autograd runs the per-step chain
    def __init__(self, n_in: int, n_hid: int):
        super().__init__()
        self.ih = nn.Linear(n_in, n_hid)
        self.hh = nn.Linear(n_hid, n_hid)

    def forward(self, x: Tensor, h: Tensor) -> Tensor:
        return torch.sin(self.ih(x) + self.hh(h))


class Branchy(nn.Module):  # fx cannot trace the branch: the whole cell is the step
    def __init__(self, n_in: int, n_hid: int):
        super().__init__()
        self.lin = nn.Linear(n_in + n_hid, n_hid)

    def forward(self, x: Tensor, h: Tensor) -> Tensor:
        if x.dim() == 2:
            h = torch.tanh(self.lin(torch.cat([x, h], 1)))
        return h


class DropCell(nn.Module):  # random: dropout on the state stays per step
    def __init__(self, n_in: int, n_hid: int):
        super().__init__()
        self.ih = nn.Linear(n_in, n_hid)
        self.hh = nn.Linear(n_hid, n_hid)
        self.drop = nn.Dropout(0.3)

    def forward(self, x: Tensor, h: Tensor) -> Tensor:
        return torch.tanh(self.ih(x) + self.hh(self.drop(h)))


class BranchyDrop(Branchy):  # untraceable and random: the plain scripted step loop
    def __init__(self, n_in: int, n_hid: int):
        super().__init__(n_in, n_hid)
        self.drop = nn.Dropout(0.3)

    def forward(self, x: Tensor, h: Tensor) -> Tensor:
        if x.dim() == 2:
            h = torch.tanh(self.lin(torch.cat([x, self.drop(h)], 1)))
        return h


class BatchMean(nn.Module):  # not row-wise
    def __init__(self, n_in: int, n_hid: int):
        super().__init__()
        self.lin = nn.Linear(n_in, n_hid)

    def forward(self, x: Tensor, h: Tensor) -> Tensor:
        return torch.tanh(self.lin(x) + h - h.mean(0))


class WithBatchNorm(nn.Module):
    def __init__(self, n_in: int, n_hid: int):
        super().__init__()
        self.lin = nn.Linear(n_in, n_hid)
        self.bn = nn.BatchNorm1d(n_hid)

    def forward(self, x: Tensor, h: Tensor) -> Tensor:
        return torch.tanh(self.bn(self.lin(x)) + h)


def _layer(model: StackedRNN, layer: int = 0):
    (built,) = model._compiled_loops[layer].values()
    return built


def _grads(model, x, y, fn, **kw):
    """Loss (a head on the output plus the final state), its gradients: parameters, x,
    initial state."""
    torch.manual_seed(3)
    head = nn.Linear(model.hidden_size, 2).double()
    n = len(LENGTHS) if not isinstance(x, Tensor) else x.shape[1]
    leaves = [torch.full_like(t, 0.3).requires_grad_()
              for s in model.initial_state(n) for t in ((s,) if isinstance(s, Tensor) else s)]
    it = iter(leaves)
    state = tuple(next(it) if isinstance(s, Tensor) else tuple(next(it) for _ in s)
                  for s in model.initial_state(n))
    x_t = x if isinstance(x, Tensor) else x.data
    x_t.grad = None
    model.zero_grad(set_to_none=True)
    torch.manual_seed(7)  # the same dropout draws for both
    out = fn(model, lambda o, t: (head(o) - t) ** 2, x, y, state=state, reduction="sum", **kw)
    fin = [t for s in out.state for t in ((s,) if isinstance(s, Tensor) else s)]
    total = out.loss + sum((f ** 2).sum() * 0.1 for f in fin)
    total.backward()
    return ([p.grad.clone() for p in model.parameters()] + [x_t.grad.clone()]
            + [t.grad.clone() for t in leaves])


def _data(dense: bool, sorted_: bool = False):
    if dense:
        g = torch.Generator().manual_seed(5)
        x = torch.randn(9, 4, 3, generator=g, requires_grad=True)
        return x, torch.randn(9, 4, 2, generator=g)
    x, y = ragged_batch(LENGTHS, 3, 2, sorted_=sorted_)
    x.data.requires_grad_(True)
    return x, y


CASES = [  # cell, options, the compiled layer's path, whether x's Linear is hoisted
    (Elman, {}, "symbolic", True),
    (Gated, dict(residual=True, layer_norm=True), "symbolic", False),
    (Gated, dict(dropout=0.25), "symbolic", False),
    (MyGRU, {}, "symbolic", True),
    (Shared, {}, "symbolic", True),
    (LayerNormCell, {}, "symbolic", True),
    (SinCell, {}, "autograd", True),
    (Branchy, dict(residual=True), "whole", False),
    (DropCell, dict(dropout=0.2), "autograd", True),
]


@pytest.mark.parametrize("cell,opts,path,hoisted", CASES,
                         ids=[c[0].__name__ + "-" + "-".join(c[1]) for c in CASES])
@pytest.mark.parametrize("layout", ["packed", "sorted", "dense"])
def test_compiled_gradients_equal_plain_autograd(cell, opts, path, hoisted, layout):
    torch.manual_seed(0)
    ref = StackedRNN(3, [4, 4], cell=cell, **opts).train()
    compiled = copy.deepcopy(ref)
    compiled.compile = True
    x, y = _data(layout == "dense", layout == "sorted")
    got = _grads(compiled, x, y, vlrnn.block_loss, block_len=4)
    # random draws come in the engine's block order: the same engine with the step loop
    want = _grads(ref, x, y, vlrnn.block_loss, block_len=4)
    assert len(want) == len(got) == len(list(ref.parameters())) + 1 + (
        2 * (2 if cell is Gated else 1))
    assert_close_grads(want, got, rtol=1e-9)
    if cell is not DropCell and "dropout" not in opts:  # and plain BPTT, no engine
        assert_close_grads(_grads(ref, x, y, vlrnn.full_loss), got, rtol=1e-9)
    built = _layer(compiled)
    kind = ("symbolic" if built.reverse is not None
            else "whole" if type(built.split.rec).__name__.startswith("_WholeCell")
            else "autograd")
    assert kind == path, f"{cell.__name__} took the {kind} path"
    if kind == "symbolic":  # the loops written for this cell, not the generic ones
        assert built.loop.original_name == "_GeneratedForwardLoop"
        assert built.reverse.original_name == "_GeneratedReverseLoop"
    assert built.split.hoisted == hoisted  # the input Linear ran once per block


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_builtin_cells_with_fused_false(cell):
    # torch's cells: fx cannot trace their input checks, so the whole cell is the step
    # (nn.LSTMCell: a pair whose c is also used inside the cell for h)
    torch.manual_seed(0)
    ref = StackedRNN(3, [4, 4], cell=cell, fused=False)
    compiled = copy.deepcopy(ref)
    compiled.compile = True
    x, y = _data(False)
    got = _grads(compiled, x, y, vlrnn.block_loss, block_len=4)
    assert_close_grads(_grads(ref, x, y, vlrnn.full_loss), got, rtol=1e-9)
    assert type(_layer(compiled).split.rec).__name__.startswith("_WholeCell")


def test_untraceable_random_cell_runs_the_scripted_step_loop():
    torch.manual_seed(0)
    ref = StackedRNN(3, [4, 4], cell=BranchyDrop, dropout=0.2).train()
    compiled = copy.deepcopy(ref)
    compiled.compile = True
    x, y = _data(False)
    with pytest.warns(UserWarning, match="BranchyDrop draws random numbers"):
        got = _grads(compiled, x, y, vlrnn.block_loss, block_len=4)
    assert_close_grads(_grads(ref, x, y, vlrnn.block_loss, block_len=4), got, rtol=1e-9)
    assert not hasattr(_layer(compiled), "split")


def test_dropout_cell_follows_train_and_eval():
    torch.manual_seed(1)
    ref = StackedRNN(3, 5, cell=DropCell)
    compiled = copy.deepcopy(ref)
    compiled.compile = True
    x = torch.randn(6, 2, 3)
    for mode in ("train", "eval", "train"):  # the scripted copies follow the flag
        getattr(ref, mode)()
        getattr(compiled, mode)()
        outs = []
        for m in (ref, compiled):
            m.zero_grad()
            torch.manual_seed(4)
            y, _ = m(x)
            y.pow(2).sum().backward()
            outs.append([y.detach()] + [p.grad for p in m.parameters()])
        assert_close_grads(outs[0], outs[1], rtol=1e-10)


def test_parameter_updates_and_dtype_changes_are_seen():
    torch.manual_seed(2)
    ref = StackedRNN(3, 4, 2, cell=Elman)
    compiled = copy.deepcopy(ref)
    compiled.compile = True
    x = torch.randn(5, 2, 3)
    for m in (ref, compiled):  # an optimizer step updates the parameters in place
        opt = torch.optim.SGD(m.parameters(), lr=0.5)
        m(x)[0].sum().backward()
        opt.step()
    torch.testing.assert_close(compiled(x)[0], ref(x)[0], rtol=1e-12, atol=1e-12)
    y32 = compiled.float()(x.float())[0]
    assert y32.dtype == torch.float32
    torch.testing.assert_close(y32, ref.float()(x.float())[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cell,match", [(BatchMean, "not computed independently"),
                                        (WithBatchNorm, "BatchNorm1d")])
def test_cells_that_mix_rows_are_refused(cell, match):
    model = StackedRNN(3, 4, cell=cell, compile=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(RuntimeError, match=f"compile=True needs a row-wise cell.*{match}"):
        model(torch.randn(3, 5, 3))
    for k, v in model.state_dict().items():  # refused before any call (running stats)
        assert torch.equal(v, before[k]), k


def test_double_backward_is_refused():
    model = StackedRNN(3, 4, cell=Elman, compile=True)
    y, _ = model(torch.randn(4, 2, 3))
    with pytest.raises(RuntimeError, match="first derivatives only.*compile=False"):
        torch.autograd.grad(y.sum(), [model.cells[0].hh.weight], create_graph=True)


def test_autocast_runs_the_step_loop():
    torch.manual_seed(3)
    ref = StackedRNN(3, 4, cell=Elman).float()
    compiled = copy.deepcopy(ref)
    compiled.compile = True
    x = torch.randn(4, 2, 3, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want, got = ref(x)[0], compiled(x)[0]
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert not compiled._compiled_loops[0]  # nothing compiled under autocast


def test_generic_loops_when_the_generated_ones_fail(monkeypatch):
    import vlrnn.models.compiled as compiled_mod

    def broken(*args, **kwargs):
        raise RuntimeError("no generated loop")
    monkeypatch.setattr(compiled_mod, "forward_loop", broken)
    torch.manual_seed(0)
    ref = StackedRNN(3, [4, 4], cell=Gated)
    compiled = copy.deepcopy(ref)
    compiled.compile = True
    x, y = _data(False)
    got = _grads(compiled, x, y, vlrnn.block_loss, block_len=4)
    assert_close_grads(_grads(ref, x, y, vlrnn.full_loss), got, rtol=1e-9)
    assert _layer(compiled).reverse.original_name == "_ReverseLoop"
