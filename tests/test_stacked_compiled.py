"""StackedRNN(compile=True): a custom cell's step loop compiled with TorchScript gives the
same outputs, states and gradients (float64) as the Python step loop, under the engine."""
from __future__ import annotations

import copy
import pickle
from typing import Tuple

import pytest
import torch
from torch import Tensor, nn

import vlrnn
from helpers import assert_close_grads, flat_state, ragged_batch, seeded_total
from vlrnn.models import StackedRNN

LENGTHS = [7, 2, 11, 5, 11, 1]  # unsorted, a tie, a length-1 sequence


class Elman(nn.Module):
    def __init__(self, n_in: int, n_hid: int):
        super().__init__()
        self.ih = nn.Linear(n_in, n_hid)
        self.hh = nn.Linear(n_hid, n_hid, bias=False)

    def forward(self, x: Tensor, h: Tensor) -> Tensor:
        return torch.tanh(self.ih(x) + self.hh(h))


class PairCell(nn.Module):
    """A cell with a (h, c) state, like an LSTM's."""

    def __init__(self, n_in: int, n_hid: int):
        super().__init__()
        self.lin = nn.Linear(n_in + n_hid, 2 * n_hid)
        self.n_hid = n_hid

    def initial_state(self, n: int, device=None, dtype=None):
        z = torch.zeros(n, self.n_hid, device=device, dtype=dtype)
        return (z, z)

    def forward(self, x: Tensor, state: Tuple[Tensor, Tensor]) -> Tuple[Tensor, Tensor]:
        h, c = state
        g = self.lin(torch.cat([x, h], 1))
        a, b = g.chunk(2, 1)
        c = torch.sigmoid(a) * c + torch.tanh(b)
        return torch.tanh(c), c


class Unscriptable(nn.Module):
    def __init__(self, n_in: int, n_hid: int):
        super().__init__()
        self.lin = nn.Linear(n_in + n_hid, n_hid)

    def forward(self, x, h, *extra):  # varargs: TorchScript refuses them
        return torch.tanh(self.lin(torch.cat([x, h], 1)))


@pytest.mark.parametrize("cell", [Elman, PairCell])
@pytest.mark.parametrize("dense", [False, True])
def test_compiled_equals_step_loop_under_engine(cell, dense):
    torch.manual_seed(0)
    loop = StackedRNN(3, [4, 4], cell=cell, residual=True, layer_norm=True,
                      dropout=0.25).train()
    compiled = copy.deepcopy(loop)
    compiled.compile = True
    head = nn.Linear(4, 2)
    if dense:
        g = torch.Generator().manual_seed(5)
        x = torch.randn(9, 4, 3, generator=g, requires_grad=True)
        y = torch.randn(9, 4, 2, generator=g)
        x_t = x
    else:
        x, y = ragged_batch(LENGTHS, 3, 2)  # ends inside blocks of 4
        x.data.requires_grad_(True)
        x_t = x.data
    lf = lambda out, tgt: (head(out) - tgt) ** 2  # noqa: E731
    results = []
    for model in (loop, compiled):
        for t in list(model.parameters()) + [x_t]:
            t.grad = None
        total = seeded_total(vlrnn.block_loss, model, lf, x, y, seed=7, block_len=4,
                             reduction="sum")
        results.append((total, [p.grad.clone() for p in model.parameters()],
                        x_t.grad.clone()))
    (t_ref, p_ref, x_ref), (t_got, p_got, x_got) = results
    assert torch.allclose(t_ref, t_got, rtol=1e-12, atol=0)
    assert_close_grads(p_ref, p_got, rtol=1e-10)
    assert_close_grads([x_ref], [x_got], rtol=1e-10)
    assert compiled._compiled_loops[0], "the compiled path was not taken"


def test_compiled_state_format_and_pickling():
    torch.manual_seed(1)
    model = StackedRNN(3, 4, num_layers=2, cell=PairCell, compile=True)
    x, _ = ragged_batch(LENGTHS, 3, 2)
    y, state = model(x)
    ref = copy.deepcopy(model)
    ref.compile = False  # the Python step loop
    ref_y, ref_state = ref(x)
    torch.testing.assert_close(y.data, ref_y.data, rtol=1e-12, atol=1e-12)
    assert isinstance(state, tuple) and all(isinstance(s, tuple) and len(s) == 2 for s in state)
    assert state[0][0].shape == (len(LENGTHS), 4)  # batch on dim 0, input order
    for a, b in zip(flat_state(state), flat_state(ref_state)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert set(model.state_dict()) == set(StackedRNN(3, 4, 2, cell=PairCell).state_dict())
    clone = pickle.loads(pickle.dumps(model))  # the scripted loops are not pickled
    torch.testing.assert_close(clone(x)[0].data, y.data, rtol=1e-12, atol=1e-12)


def test_compile_errors_are_clear():
    model = StackedRNN(3, 4, cell=Unscriptable, compile=True)
    with pytest.raises(RuntimeError, match="TorchScript could not compile the step loop of "
                                           "cell Unscriptable.*compile=False"):
        model(torch.randn(2, 2, 3))
    model = StackedRNN(3, 4, cell=Elman, compile=True)
    three = (torch.zeros(2, 4),) * 3
    with pytest.raises(ValueError, match="one tensor or a pair"):
        model(torch.randn(2, 2, 3), (three,))
