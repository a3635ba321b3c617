"""vlrnn through Hugging Face Accelerate: ``accelerator.backward(block_loss(...).loss)``
with gradient accumulation and clipping gives the weights of plain BPTT (float64)."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

import vlrnn
from vlrnn.data import collate_packed

from training_helpers import BLOCK, LR, build_model, max_rel_diff, mse, plain_loop, series

accelerate = pytest.importorskip("accelerate")  # pip install -e ".[test]" installs it


def test_accelerator_backward_matches_plain_bptt():
    items = series(8, seed=4)
    acc = accelerate.Accelerator(cpu=True, gradient_accumulation_steps=2)
    model = build_model()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    loader = DataLoader(items, batch_size=2, shuffle=False, collate_fn=collate_packed)
    model, opt, loader = acc.prepare(model, opt, loader)
    for _ in range(2):
        for x, y in loader:
            with acc.accumulate(model):
                acc.backward(vlrnn.block_loss(model, mse, x, y, block_len=BLOCK).loss)
                if acc.sync_gradients:
                    acc.clip_grad_norm_(model.parameters(), 0.05)
                opt.step()
                opt.zero_grad()

    batches = [[b] for b in DataLoader(items, batch_size=2, collate_fn=collate_packed)]
    ref = plain_loop(build_model(), batches, epochs=2, accumulate=2, clip=0.05)
    assert max_rel_diff(acc.unwrap_model(model), ref) < 1e-10
    unclipped = plain_loop(build_model(), batches, epochs=2, accumulate=2)
    assert max_rel_diff(unclipped, ref) > 1e-3  # clipping acted: the comparison can fail
