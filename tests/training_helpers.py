"""A small packed-sequence model, ragged data and the plain-BPTT training loop that the
framework tests (Lightning, Accelerate) compare against."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

import vlrnn

BLOCK = 4
LR = 0.1
mse = nn.MSELoss(reduction="none")


class Model(nn.Module):
    """2-layer LSTM + linear head, ``(x packed, state) -> (y packed, state)``."""

    state_batch_dim = 1

    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(3, 4, num_layers=2)
        self.head = nn.Linear(4, 2)

    def forward(self, x, h=None):
        out, h = self.rnn(x, h)
        return PackedSequence(self.head(out.data), out.batch_sizes, out.sorted_indices,
                              out.unsorted_indices), h


def build_model(dtype=torch.float64) -> Model:
    """The same initial weights in every process and test."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        torch.manual_seed(0)
        return Model().to(dtype)
    finally:
        torch.set_default_dtype(old)


def series(n_series: int = 8, seed: int = 1, dtype=torch.float64):
    """``n_series`` ragged (x, y) pairs, 2 to 23 steps: many end inside a block."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, 24, (n_series,), generator=g).tolist()
    return [(torch.randn(n, 3, generator=g, dtype=dtype), torch.randn(n, 2, generator=g, dtype=dtype))
            for n in lengths]


def plain_loop(model, batches, epochs, accumulate=1, clip=None, loss_scale=1.0):
    """Plain BPTT by hand: the updates Lightning's automatic optimisation makes."""
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    for _ in range(epochs):
        for i, batch in enumerate(batches):
            for x, y in batch:  # a step's batches (several under DDP: the mean of the ranks)
                out = vlrnn.full_loss(model, mse, x, y)
                (out.loss * loss_scale / accumulate).backward()
            if (i + 1) % accumulate == 0:
                if clip is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), clip)
                opt.step()
                opt.zero_grad()
    return model


def max_rel_diff(a: nn.Module, b: nn.Module) -> float:
    return max(((p - q).abs().max() / q.abs().max()).item()
               for p, q in zip(a.state_dict().values(), b.state_dict().values()))
