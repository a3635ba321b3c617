"""The block runner: one call's model and loss run block by block, and the boundary cache.

Forward (no graph kept): walk the blocks first to last, keep the recurrent state entering
the blocks the schedule names (the boundary cache; ``flat`` keeps all) and the
random-number state at each block start that drew random numbers. The last block (or,
when a memory budget allows, the last few) is run with a graph, and that graph is kept.
The reverse pass that uses them is in :mod:`vlrnn.engine._backward`.

Everything inside works in the packed batch's sorted order; the caller's order is
restored outside the engine's ``autograd.Function`` with ordinary (differentiable)
``index_select``.
"""
from __future__ import annotations

import contextlib
from typing import Dict, List, Optional, Sequence, Tuple, overload

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from . import _state as st
from ._blocks import TimeBlock
from ._directions import AnyLayout
from ._layout import Data
from ._loss import LossFn, add_loss, block_loss_value
from ._rng import RngSnapshot
from ._schedules import Schedule
from ._store import StateSlots


class _BlockGraph:
    """One block run with a graph: its fresh input leaves and its outputs."""

    __slots__ = ("x_leaf", "y_leaf", "state_in", "loss", "state_out")

    def __init__(self, x_leaf: torch.Tensor, y_leaf: Optional[torch.Tensor],
                 state_in: List[torch.Tensor], loss: Optional[torch.Tensor],
                 state_out: List[torch.Tensor]):
        self.x_leaf = x_leaf
        self.y_leaf = y_leaf
        self.state_in = state_in
        self.loss = loss
        self.state_out = state_out

    def leaf_ids(self) -> set[int]:
        return {id(t) for t in [self.x_leaf, self.y_leaf, *self.state_in] if t is not None}


class BlockRunner:
    """Runs one call's model and loss block by block; holds the boundary cache.

    ``boundary[k]`` is the flat state entering block ``k`` (detached, ``n_in`` rows,
    sorted order), ``None`` for block 0 without an initial state (the model starts from
    its own zeros). ``enders[k]`` holds rows ``[n_out, n_in)`` of the state leaving block
    ``k``: the final states of the sequences that end in it.

    The boundaries the forward pass keeps and the enders live in buffers allocated
    before the blocks run (:class:`~vlrnn.engine._store.StateSlots`; ``kept_slots`` and
    ``final_slots``, made from the first state the model returns): ``boundary[k]`` and
    ``enders[k]`` are tensors on their memory. Cloned one by one instead, they can pin
    memory among the blocks' activations (see :mod:`vlrnn.engine._store`).
    """

    def __init__(self, model: nn.Module, loss_fn: Optional[LossFn], layout: AnyLayout,
                 blocks: List[TimeBlock], reduction: str, batch_dim: int,
                 devices: List[int], schedule: Schedule, offload: Optional[str] = None):
        self.model = model
        self.loss_fn = loss_fn
        self.layout = layout
        self.blocks = blocks
        self.reduction = reduction
        self.batch_dim = batch_dim
        self.devices = devices
        self.spec = None  # structure of the model's state, learnt from its first answer
        self.spec0 = None  # structure of the caller's initial state
        k = len(blocks)
        self.schedule = schedule
        # kept boundaries: k -> flat state entering block k (None: the model's zeros)
        self.boundary: Dict[int, Optional[List[torch.Tensor]]] = {}
        self.rng: List[Optional[RngSnapshot]] = [None] * k
        self.enders: List[Optional[List[torch.Tensor]]] = [None] * k
        self.kept_slots: Optional[StateSlots] = None  # boundaries the forward pass keeps
        self.final_slots: Optional[StateSlots] = None  # slot 0: the final state, B rows
        self.final_in_slots = True  # every ender so far was written into final_slots
        self.autocast = _autocast_state()
        self.offload = offload  # "cpu": keep boundary states in host memory
        self.state_device: Optional[torch.device] = None  # where the model's states live

    # -- one block -------------------------------------------------------------------------
    def run(self, k: int, x_part: torch.Tensor, y_part: Optional[torch.Tensor],
            state_in: Optional[List[torch.Tensor]], with_loss: bool = True,
            outputs: Optional[list] = None) -> Tuple[Optional[torch.Tensor], List[torch.Tensor]]:
        """Model and loss on block ``k``: (block loss or ``None``, flat state leaving it);
        the model's output rows are appended to ``outputs`` when it is given."""
        blk = self.blocks[k]
        lay = self.layout
        spec = self.spec0 if k == 0 else self.spec
        state = None if state_in is None else st.unflatten(state_in, spec)
        out = self.model(lay.model_input(x_part, blk), state)
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise TypeError("model must return a pair (y, new_state) as nn.LSTM does, got "
                            + (f"a {type(out).__name__} of length {len(out)}"
                               if isinstance(out, (tuple, list)) else type(out).__name__))
        y, new_state = out
        if outputs is not None:
            outputs.append(y.data if isinstance(y, PackedSequence) else y)
        try:
            leaves, spec = st.flatten(new_state)
        except TypeError as err:
            raise TypeError(f"model returned an invalid new_state: {err}") from None
        if self.spec is None:
            self.spec = spec
            self.state_device = leaves[0].device if leaves else None
        st.check_batch(leaves, self.batch_dim, blk.n_in,
                       f"state returned by the model for steps {blk.start}:{blk.stop}")
        loss = None
        if self.loss_fn is not None and with_loss:
            rows = lay.output_rows(y, blk)
            tgt = None if y_part is None else lay.rows(y_part, blk)
            loss = block_loss_value(self.loss_fn, rows, tgt, lay, blk, self.reduction)
        return loss, leaves

    def run_with_graph(self, k: int, x_data: Data, y_data: Optional[Data],
                       state_in: Optional[List[torch.Tensor]], x_grad: bool, y_grad: bool,
                       state_grad: bool) -> _BlockGraph:
        """Block ``k`` from the state ``state_in``, with a graph on fresh leaves."""
        blk, lay = self.blocks[k], self.layout
        x_leaf = lay.part(x_data, blk).detach().requires_grad_(x_grad)
        y_leaf = None
        if y_data is not None:
            y_leaf = lay.part(y_data, blk).detach().requires_grad_(y_grad)
        state_in = self.unstash(state_in)
        leaves = None if state_in is None else st.detach_all(state_in, requires_grad=state_grad)
        with torch.enable_grad(), _autocast(self.autocast):
            loss, out = self.run(k, x_leaf, y_leaf, leaves)
        return _BlockGraph(x_leaf, y_leaf, leaves or [], loss, out)

    @overload
    def stash(self, state: List[torch.Tensor], k: int) -> List[torch.Tensor]: ...

    @overload
    def stash(self, state: List[torch.Tensor], k: None = None) -> List[torch.Tensor]: ...

    @overload
    def stash(self, state: Optional[List[torch.Tensor]],
              k: None = None) -> Optional[List[torch.Tensor]]: ...

    def stash(self, state: Optional[List[torch.Tensor]],
              k: Optional[int] = None) -> Optional[List[torch.Tensor]]:
        """A boundary state as kept. ``k`` names a boundary the forward pass keeps:
        ``state`` (rows of a block's output, which :meth:`StateSlots.fits`) is copied
        into its slot of ``kept_slots``. Without ``k``, ``state`` is already the runner's
        own copy (a boundary the reverse pass rebuilds, or one unlike the first state)
        and is kept as it is. With ``offload="cpu"`` either is kept in (pinned) host
        memory, so that a GPU holds only the block it works on."""
        if k is not None:
            # a kept boundary's rows (advance, after make_slots)
            assert self.kept_slots is not None and state is not None
            return self.kept_slots.write(k, state, non_blocking=self.offload is not None)
        if self.offload is None or state is None:
            return state
        pin = torch.cuda.is_available()
        return [t.to("cpu", non_blocking=True).pin_memory() if pin and t.is_cuda else t.cpu()
                for t in state]

    @overload
    def unstash(self, state: List[torch.Tensor]) -> List[torch.Tensor]: ...

    @overload
    def unstash(self, state: Optional[List[torch.Tensor]]) -> Optional[List[torch.Tensor]]: ...

    def unstash(self, state: Optional[List[torch.Tensor]]) -> Optional[List[torch.Tensor]]:
        """A kept boundary state back on the device the model runs on."""
        if self.offload is None or state is None or self.state_device is None:
            return state
        return [t.to(self.state_device, non_blocking=True) for t in state]

    def next_state(self, k: int, state_out: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """The state entering block ``k + 1``: rows ``[0, n_out)`` of what ``k`` left
        (cloned: it may be a view into the block's activations)."""
        n_out = self.blocks[k].n_out
        return [t.detach().narrow(self.batch_dim, 0, n_out).clone() for t in state_out]

    def advance(self, k: int, state_out: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """Forward pass bookkeeping after block ``k``: keep its enders (final states of
        the sequences ending in it) and, if the schedule says so, the next boundary.
        Returns the state entering block ``k + 1`` (the kept boundary itself, in its
        slot, unless it is offloaded)."""
        blk = self.blocks[k]
        d = self.batch_dim
        if self.final_slots is None:
            self.make_slots(state_out)
        if blk.n_out < blk.n_in:
            self.keep_enders(k, state_out)
        if not self.keeps(k + 1):
            return self.next_state(k, state_out)
        rows = [t.detach().narrow(d, 0, blk.n_out) for t in state_out]
        assert self.kept_slots is not None  # made with final_slots, above
        if self.schedule.frees_kept or not self.kept_slots.fits(rows):
            # a copy of its own: the schedule frees it early, or it is unlike the first
            nxt = self.next_state(k, state_out)
            self.boundary[k + 1] = self.stash(nxt)
            return nxt
        kept = self.boundary[k + 1] = self.stash(rows, k + 1)
        if all(a.device == b.device for a, b in zip(kept, rows)):
            return kept  # nothing writes to a kept slot again: it is the next state too
        return self.next_state(k, state_out)  # offloaded: the model needs its own copy

    def keeps(self, k: int) -> bool:
        """Whether the forward pass keeps boundary ``k`` (``0 < k < K``): those the
        schedule names, and the last block's always (a second backward re-runs it)."""
        n = len(self.blocks)
        return 0 < k < n and (self.schedule.keep(k) or k + 1 == n)

    def make_slots(self, state_out: Sequence[torch.Tensor]) -> None:
        """Allocate ``kept_slots`` (one slot of ``n_in`` rows per kept boundary, on the
        host with offload) and ``final_slots`` (``B`` rows), shaped as ``state_out``,
        the first state the model returned (block 0's, ``n_in = B`` rows)."""
        template = [t.detach() for t in state_out]
        rows = {} if self.schedule.frees_kept else \
            {k: self.blocks[k].n_in for k in range(len(self.blocks)) if self.keeps(k)}
        host = self.offload is not None
        pin = host and torch.cuda.is_available() and any(t.is_cuda for t in template)
        self.kept_slots = StateSlots(template, self.batch_dim, rows,
                                     device=torch.device("cpu") if host else None, pin=pin)
        self.final_slots = StateSlots(template, self.batch_dim, {0: self.blocks[0].n_in})

    def keep_enders(self, k: int, state_out: Sequence[torch.Tensor]) -> None:
        """Rows ``[n_out, n_in)`` of the state leaving block ``k`` (sequences ending in
        it) into the same rows of the final state."""
        blk = self.blocks[k]
        enders = [t.detach().narrow(self.batch_dim, blk.n_out, blk.n_in - blk.n_out)
                  for t in state_out]
        assert self.final_slots is not None  # advance made the slots before this
        if self.final_slots.fits(enders):
            self.enders[k] = self.final_slots.write(0, enders, start=blk.n_out)
        else:  # unlike the first state: a copy of its own, joined by final_state
            self.enders[k] = [t.clone() for t in enders]
            self.final_in_slots = False

    def final_state(self) -> List[torch.Tensor]:
        """Each sequence's state at its own last step, flat, sorted order."""
        if self.final_in_slots and self.final_slots is not None:
            return self.final_slots.state(0)  # every block wrote its enders' rows
        return st.assemble_final(self.enders, self.batch_dim)

    def run_no_grad(self, x_data, y_data, first: int, stop: int, state, loss_sum,
                    outputs: Optional[list] = None):
        """Forward pass over blocks ``[first, stop)`` with no graph, starting from
        ``state``; returns (running loss sum (detached), state entering ``stop``)."""
        lay = self.layout
        with torch.no_grad(), _autocast(self.autocast):
            for k in range(first, stop):
                blk = self.blocks[k]
                snap = self.snapshot()
                loss, out = self.run(k, lay.part(x_data, blk),
                                     None if y_data is None else lay.part(y_data, blk), state,
                                     outputs=outputs)
                self.keep_rng(k, snap)
                loss_sum = add_loss(loss_sum, loss)
                state = self.advance(k, out)
        return loss_sum, state

    def rebuild(self, x_data, start: int, k: int, into: Dict[int, List[torch.Tensor]]) -> None:
        """Re-run blocks ``[start, k)`` without a graph or loss, from the kept boundary
        ``start``, with their original random draws; store the boundaries the schedule
        names (``k`` among them) in ``into``."""
        keep = set(self.schedule.rebuild(start, k))
        state = self.unstash(into[start] if start in into else self.boundary[start])
        lay = self.layout
        with torch.no_grad(), _autocast(self.autocast):
            for j in range(start, k):
                snap = self.rng[j]
                if snap is not None:
                    snap.restore()
                _, out = self.run(j, lay.part(x_data, self.blocks[j]), None, state,
                                  with_loss=False)
                state = self.next_state(j, out)
                if j + 1 in keep:
                    into[j + 1] = self.stash(state)

    def snapshot(self) -> RngSnapshot:
        return RngSnapshot(self.devices)

    def keep_rng(self, k: int, snap: RngSnapshot) -> None:
        # blocks that drew no random numbers need no replay
        self.rng[k] = None if snap.unchanged() else snap


# -- autocast replay (recomputed blocks must run under the caller's autocast) --------------
def _autocast_state() -> List[Tuple[str, bool, torch.dtype]]:
    out = []
    for dev in ("cpu", "cuda"):
        try:
            enabled = torch.is_autocast_enabled(dev)
            dtype = torch.get_autocast_dtype(dev)
        except TypeError:  # torch < 2.4
            if dev == "cpu":
                enabled, dtype = torch.is_autocast_cpu_enabled(), torch.get_autocast_cpu_dtype()
            else:
                enabled, dtype = torch.is_autocast_enabled(), torch.get_autocast_gpu_dtype()
        out.append((dev, enabled, dtype))
    return out


@contextlib.contextmanager
def _autocast(states):
    with contextlib.ExitStack() as stack:
        for dev, enabled, dtype in states:
            if dev == "cuda" and not torch.cuda.is_available():
                continue
            stack.enter_context(torch.autocast(dev, dtype=dtype, enabled=enabled))
        yield
