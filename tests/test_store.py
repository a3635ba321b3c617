"""StateSlots: the preallocated buffers the engine keeps boundary and final states in."""
from __future__ import annotations

import torch

from vlrnn.engine._store import ALIGN_BYTES, StateSlots


def test_slots_hold_what_was_written_as_clones_would():
    """Each slot is a contiguous view shaped like a clone of the state written into it,
    at an aligned address, and all slots share one buffer per leaf."""
    d = 1  # (layers, B, H), as nn.LSTM's state
    template = [torch.zeros(2, 5, 3), torch.zeros(2, 5, 7, dtype=torch.float32)]
    rows = {1: 5, 2: 3, 7: 1}
    slots = StateSlots(template, d, rows)
    written = {}
    for k, n in rows.items():
        state = [torch.randn(2, 9, 3).narrow(d, 2, n), torch.randn(2, n, 7, dtype=torch.float32)]
        views = slots.write(k, state)
        written[k] = [t.clone() for t in state]
        for v, t in zip(views, state):
            assert v.is_contiguous() and v.shape == t.shape and v.dtype == t.dtype
            assert v.data_ptr() % ALIGN_BYTES == 0
    for k, state in written.items():  # later writes left earlier slots alone
        for v, t in zip(slots.state(k), state):
            assert torch.equal(v, t)
    for i in range(2):
        assert len({slots.state(k)[i].untyped_storage().data_ptr() for k in rows}) == 1
    assert 2 in slots and 3 not in slots


def test_rows_of_a_slot_and_fits():
    slots = StateSlots([torch.zeros(4, 2)], 0, {0: 4})
    slots.write(0, [torch.ones(1, 2)], start=3)
    slots.write(0, [torch.full((3, 2), 2.0)], start=0)
    assert torch.equal(slots.state(0)[0], torch.tensor([[2.0, 2.0]] * 3 + [[1.0, 1.0]]))
    assert slots.fits([torch.zeros(7, 2)])  # any number of rows
    assert not slots.fits([torch.zeros(4, 3)])  # another shape off the batch dim
    assert not slots.fits([torch.zeros(4, 2, dtype=torch.float32)])  # another dtype
    assert not slots.fits([torch.zeros(4, 2), torch.zeros(4, 2)])  # more leaves


def test_writing_a_state_that_requires_grad_keeps_the_buffer_out_of_the_graph():
    h = torch.randn(2, 3, requires_grad=True)
    slots = StateSlots([h], 0, {5: 2})
    (view,) = slots.write(5, [h * 2])
    assert not view.requires_grad and view.grad_fn is None
    assert torch.equal(view, (h * 2).detach())
