"""The split-cell protocol (``input_part`` once per block, ``step`` per step) under
StackedRNN: the same outputs, states and gradients (float64) as the plain step loop of the
same cell, through the engine, packed and dense, with dropout, residual and layer norm."""
from __future__ import annotations

from typing import Tuple

import pytest
import torch
from torch import Tensor, nn

import vlrnn
from helpers import assert_close_grads, flat_state, ragged_batch, seeded_total
from vlrnn.models import SplitCell, StackedRNN, is_split_cell

LENGTHS = [7, 2, 11, 5, 11, 1]  # unsorted, a tie, a length-1 sequence


class Elman(nn.Module):
    def __init__(self, n_in: int, n_hid: int):
        super().__init__()
        self.ih = nn.Linear(n_in, n_hid)
        self.hh = nn.Linear(n_hid, n_hid, bias=False)

    def forward(self, x: Tensor, h: Tensor) -> Tensor:
        return torch.tanh(self.ih(x) + self.hh(h))


class SplitElman(Elman):
    def input_part(self, x: Tensor) -> Tensor:
        return self.ih(x)

    def step(self, u: Tensor, h: Tensor) -> Tensor:
        return torch.tanh(u + self.hh(h))


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
        a, b = self.lin(torch.cat([x, h], 1)).chunk(2, 1)
        c = torch.sigmoid(a) * c + torch.tanh(b)
        return torch.tanh(c), c


class SplitPairCell(PairCell):
    """The same cell split: the x-columns of ``lin`` once per block, the rest per step."""

    def input_part(self, x: Tensor) -> Tensor:
        n_in = self.lin.in_features - self.n_hid
        return nn.functional.linear(x, self.lin.weight[:, :n_in], self.lin.bias)

    def step(self, u: Tensor, state: Tuple[Tensor, Tensor]) -> Tuple[Tensor, Tensor]:
        h, c = state
        n_in = self.lin.in_features - self.n_hid
        a, b = (u + h @ self.lin.weight[:, n_in:].T).chunk(2, 1)
        c = torch.sigmoid(a) * c + torch.tanh(b)
        return torch.tanh(c), c


@pytest.mark.parametrize("cells", [(Elman, SplitElman), (PairCell, SplitPairCell)])
@pytest.mark.parametrize("dense", [False, True])
def test_split_cell_equals_step_loop_under_engine(cells, dense):
    plain_cell, split_cell = cells
    torch.manual_seed(0)
    loop = StackedRNN(3, [4, 4], cell=plain_cell, residual=True, layer_norm=True,
                      dropout=0.25).train()
    split = StackedRNN(3, [4, 4], cell=split_cell, residual=True, layer_norm=True,
                       dropout=0.25).train()
    split.load_state_dict(loop.state_dict())
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
    for model in (loop, split):
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


def test_the_split_path_is_taken_once_per_block_and_keeps_the_state_format():
    torch.manual_seed(1)
    model = StackedRNN(3, 4, num_layers=2, cell=SplitPairCell)
    calls = []
    for c in model.cells:
        c.register_forward_hook(lambda *a: calls.append("forward"))  # never: step only
        orig = c.input_part
        c.input_part = lambda x, orig=orig: (calls.append(x.shape[0]), orig(x))[1]
    x, _ = ragged_batch(LENGTHS, 3, 2)
    y, state = model(x)
    assert calls == [sum(LENGTHS)] * 2  # one call per layer over all rows, no forward()
    ref = StackedRNN(3, 4, num_layers=2, cell=PairCell)
    ref.load_state_dict(model.state_dict())
    ref_y, ref_state = ref(x)
    torch.testing.assert_close(y.data, ref_y.data, rtol=1e-12, atol=1e-12)
    assert isinstance(state, tuple) and all(isinstance(s, tuple) and len(s) == 2 for s in state)
    for a, b in zip(flat_state(state), flat_state(ref_state)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_protocol_check():
    assert is_split_cell(SplitElman(2, 3)) and isinstance(SplitElman(2, 3), SplitCell)
    assert not is_split_cell(Elman(2, 3)) and not is_split_cell(nn.GRUCell(2, 3))
