"""Memory planner: pick block length, schedule and kept graphs from a memory budget.

``vlrnn.plan(model, x_example, T, memory_budget)`` measures what one step of the model
costs (bytes autograd saves for backward per sequence-step row, counted with
``saved_tensors_hooks`` on a short probe block) and the size of one recurrent state,
then picks the fastest configuration whose predicted memory fits the budget:

- if plain BPTT fits, one block over the whole sequence: plain BPTT itself;
- else, over block lengths and schedules (``flat``, ``two_level``, and ``revolve`` with
  every number of states ``s`` that fits), the plan with the least predicted time whose
  memory fits; time counts block forward calls exactly (``revolve``: the binomial
  optimum, :func:`vlrnn.engine.revolve_calls`) plus a fixed cost per block call;
- memory the budget leaves over keeps the graphs of the last blocks from the forward
  pass, so those blocks are not recomputed (more budget, less recompute, smoothly).

The budget covers the engine's working memory: activations kept for backward, the
cached boundary states and random-number states. It does not cover the model's
parameters, the optimizer or the input batch, which the caller holds anyway.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import torch

from ._call import _Call
from ._options import Options, parse_bytes
from ._rng import preserved
from ._schedules import (
    SCHEDULES,
    ScheduleSpec,
    extra_calls,
    get_schedule,
    revolve_with,
    schedule_name,
)

RNG_BYTES = 5056  # a CPU generator state; kept per block only when the model draws
BLOCK_OVERHEAD_STEPS = 32  # a block's fixed cost, in time steps of compute (rough)
BLOCK_LENS = (16, 32, 64, 128, 256, 512, 1024)
BACKWARD_COST = 2.0  # a backward step costs about two forward steps
RAGGED_MAX_BLOCK_LEN = 256  # see choose(): long ragged packed blocks are slow in torch



def available_memory(device: torch.device) -> int:
    """Free memory on ``device`` now (CUDA: free device memory; CPU: MemAvailable)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


@dataclass
class Plan:
    """A configuration for :func:`vlrnn.block_loss` and what it is predicted to cost.

    Attributes:
        block_len, schedule, keep_last: what to pass to ``block_loss`` (``keep_last``:
            blocks whose graphs the forward pass keeps, so they are not recomputed).
        states: ``revolve``'s number of kept states ``s`` (0 for other schedules).
        n_steps, n_blocks: T and K.
        bytes_per_row: activation bytes plain BPTT keeps per (sequence, step) row.
        state_bytes: one boundary state of the whole batch.
        predicted_bytes: the engine's working memory under this plan.
        plain_bytes: plain BPTT's activation memory for the same batch.
        forward_passes: block forward runs per block, the recompute factor (plain
            BPTT: 1; ``flat``: 2 - 1/K).
        budget: the memory budget planned for.

    >>> import torch
    >>> from torch import nn
    >>> import vlrnn
    >>> p = vlrnn.plan(nn.GRU(2, 8), torch.randn(32, 4, 2), T=10_000, memory_budget="50MB")
    >>> p.schedule in vlrnn.SCHEDULES, p.n_blocks == -(-10_000 // p.block_len)
    (True, True)
    """

    block_len: int
    schedule: str
    keep_last: int
    n_steps: int
    n_blocks: int
    bytes_per_row: float
    state_bytes: int
    predicted_bytes: int
    plain_bytes: int
    forward_passes: float
    budget: int
    draws_random: bool = False
    states: int = 0

    def __str__(self) -> str:
        mb = _size
        kept = (f", graphs of the last {self.keep_last} blocks kept"
                if self.keep_last > 1 else "")
        states = f" with {self.states} states" if self.schedule == "revolve" else ""
        return (f"Plan: block_len={self.block_len}, schedule={self.schedule!r}{states}{kept}\n"
                f"  T={self.n_steps:,} in {self.n_blocks:,} blocks; recompute factor "
                f"{self.forward_passes:.2f} (block forward calls per block; plain BPTT: 1)\n"
                f"  predicted memory {mb(self.predicted_bytes)} of a {mb(self.budget)} budget; "
                f"plain BPTT would keep {mb(self.plain_bytes)}\n"
                f"  measured: {self.bytes_per_row:,.0f} bytes per sequence-step, "
                f"{mb(self.state_bytes)} per boundary state")

    def schedule_arg(self) -> ScheduleSpec:
        """The ``schedule=`` argument that runs this plan (``revolve``: with its ``s``
        states, its tree spanning the blocks whose graphs are not kept)."""
        if self.schedule == "revolve":
            return revolve_with(self.states, tail=self.keep_last)
        return self.schedule

    def options(self) -> dict:
        """Keyword arguments for ``block_loss``."""
        return dict(block_len=self.block_len, schedule=self.schedule_arg())


def _size(n: float) -> str:
    for unit, scale in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n:,.0f} bytes"


def _stored_states(schedule: str, n_blocks: int, states: int = 0) -> float:
    """Boundary states held at once (``revolve``: its ``s`` and the state entering the
    block being differentiated)."""
    if schedule == "flat":
        return n_blocks
    if schedule == "two_level":
        return 2 * math.ceil(math.sqrt(n_blocks)) + 1
    return states + 1


def _forward_passes(schedule: str, n_blocks: int, keep_last: int, states: int = 0) -> float:
    """Block forward runs / K: one pass, plus recompute of blocks whose graph is not kept,
    plus what the schedule re-runs to rebuild boundaries (``revolve``: exact; the
    others: measured shapes, see tests)."""
    k, m = n_blocks, min(keep_last, n_blocks)
    if schedule == "revolve":  # the binomial tree spans the blocks not kept, and one more
        span = k - m + 1
        return (k + extra_calls(span, max(1, min(states, span - 1)))) / k
    recompute = k - m
    if schedule == "two_level":
        recompute += k - math.ceil(k / max(1, math.ceil(math.sqrt(k))))
    return (k + recompute) / k


MAX_REVOLVE_CANDIDATES = 4096  # per block length; past that, a geometric grid of them


def _revolve_candidates(k: int, room: float, block: float, state_bytes: float) -> list:
    """(s, m) pairs worth timing for ``revolve`` over ``k`` blocks: for each number ``m``
    of kept graphs, the most states ``s`` that fit beside them (more of either never
    costs time). ``room``: bytes for states and graphs of the kept blocks."""
    sb = max(state_bytes, 1.0)
    m_hi = int(min(k, room // block))
    ms: Sequence[int] = range(1, m_hi + 1)
    if m_hi > MAX_REVOLVE_CANDIDATES:  # thin out: all small m, then a geometric grid
        grid = {1, m_hi}
        x = 1.0
        while x < m_hi:
            grid.add(int(x))
            x *= 1.01
        ms = sorted(grid)
    out = []
    for m in ms:
        s = min(int((room - m * block) // sb) - 1, k - m)  # -1: the differentiated block's
        if s >= 1:
            out.append((s, m))
    return out


def choose(n_steps: int, n_rows: int, n_batch: int, bytes_per_row: float, state_bytes: int,
           budget: int, draws_random: bool, schedule: Optional[str] = None,
           block_len: Optional[int] = None, max_block_len: Optional[int] = None,
           states: Optional[int] = None) -> Plan:
    """The fastest (block_len, schedule, keep_last, states) whose predicted memory fits
    ``budget``.

    ``n_rows``: valid (sequence, step) rows of the batch; ``schedule`` / ``block_len``
    fix that choice when given (``states`` fixes ``revolve``'s ``s``); ``max_block_len``
    caps the block length (ragged packed batches: torch's CPU LSTM kernel slows down
    sharply on long ragged blocks, measured 0.3 s at 256 steps against 15 s at 4,096
    for the same batch). Raises ``MemoryError`` when nothing fits.
    """
    rows_per_step = n_rows / n_steps
    plain = int(bytes_per_row * n_rows)
    # plain BPTT (one block, nothing recomputed) when it fits and nothing is fixed
    whole_ok = max_block_len is None or n_steps <= max_block_len
    if (schedule in (None, "flat") and block_len in (None, n_steps) and 2 * plain <= budget
            and whole_ok):
        return Plan(n_steps, "flat", 1, n_steps, 1, bytes_per_row, state_bytes, 2 * plain,
                    plain, 1.0, budget, draws_random)
    best = None
    names = [schedule_name(schedule)] if schedule else list(dict.fromkeys(
        cls.name for cls in SCHEDULES.values()))
    cap = max_block_len or max(BLOCK_LENS)
    lens = [block_len] if block_len else [L for L in BLOCK_LENS if L < n_steps and L <= cap] \
        or [min(n_steps, cap)]
    for name in names:
        for L in lens:
            k = math.ceil(n_steps / L)
            block = bytes_per_row * L * rows_per_step
            rng = k * RNG_BYTES if draws_random else 0
            fixed_cost = rng + state_bytes  # + the final states
            if name == "revolve":
                room = budget - fixed_cost - block  # one block's working memory in backward
                if states is not None:  # s fixed: all the rest keeps graphs
                    m = int(min(k, (room - (states + 1) * state_bytes) // block))
                    options = [(states, m)] if m >= 1 else []
                else:
                    options = _revolve_candidates(k, room, block, state_bytes)
            else:
                room = budget - fixed_cost - _stored_states(name, k) * state_bytes - block
                options = [(0, int(min(k, room // block)))] if room >= block else []
            for s, m in options:
                passes = _forward_passes(name, k, m, s)
                time_cost = (n_steps * (passes + BACKWARD_COST)
                             + k * passes * BLOCK_OVERHEAD_STEPS)
                mem = int(fixed_cost + _stored_states(name, k, s) * state_bytes
                          + (m + 1) * block)
                if best is None or time_cost < best[0]:
                    best = (time_cost, Plan(L, name, m, n_steps, k, bytes_per_row, state_bytes,
                                            mem, plain, passes, budget, draws_random, s))
    if best is None:
        raise MemoryError(
            f"no block length and schedule fit a memory budget of {budget / 2**20:,.1f} MB "
            f"for T={n_steps:,} ({bytes_per_row:,.0f} bytes per sequence-step, "
            f"{state_bytes / 2**20:,.2f} MB per state); raise memory_budget or use a "
            f"smaller batch")
    return best[1]


def measure(runner, probe_len: int) -> tuple:
    """(bytes saved for backward per row, bytes of one state of the whole batch, whether
    the model draws random numbers) from a probe run of the first block."""
    lay = runner.layout
    blk = runner.blocks[0]
    saved = {}

    def pack(t):
        # a tensor's own bytes, once: a view of the caller's input must not count the
        # whole input, and one tensor saved by several ops is kept once
        saved[(t.data_ptr(), t.numel(), t.dtype)] = t.numel() * t.element_size()
        return t

    with preserved(runner.devices):
        snap = runner.snapshot()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            graph = runner.run_with_graph(0, lay.x_data, lay.y_data, runner.boundary[0],
                                          False, False, False)
        draws = not snap.unchanged()
    rows = blk.rows.stop - blk.rows.start
    per_seq = sum(t.numel() * t.element_size() for t in graph.state_out) / max(blk.n_in, 1)
    return sum(saved.values()) / rows, int(per_seq * lay.n_batch), draws


def plan(model, x_example: Any, T: Optional[int] = None,
         memory_budget: Union[int, float, str, None] = "auto", *, loss_fn=None, target=None,
         state=None, reduction: str = "mean", batch_first: Optional[bool] = None,
         state_batch_dim: Optional[int] = None, schedule: Optional[ScheduleSpec] = None,
         block_len: Optional[int] = None, probe_len: int = 64) -> Plan:
    """Plan a ``block_loss`` call on a batch like ``x_example`` of length ``T``.

    Args:
        model, loss_fn, target, state, reduction, batch_first, state_batch_dim: as for
            :func:`vlrnn.block_loss` (``loss_fn`` and ``target`` count toward the
            activation memory when given).
        x_example: a batch (``PackedSequence``, dense tensor or array) with the real
            batch size and features; only its first ``probe_len`` steps are run.
        T: the sequence length to plan for (default: ``x_example``'s).
        memory_budget: bytes or a size string (``"2GB"``); ``"auto"``/``None`` = half
            of the memory available now on the model's device.
        schedule, block_len: fix these instead of choosing them (``schedule``: a name,
            or ``revolve_with(s)`` to fix ``revolve``'s states too).

    Returns:
        :class:`Plan`; ``print(plan)`` shows the choice and its predicted cost.

    >>> import torch
    >>> from torch import nn
    >>> import vlrnn
    >>> lstm = nn.LSTM(4, 32)
    >>> p = vlrnn.plan(lstm, torch.randn(64, 8, 4), T=100_000, memory_budget="200MB",
    ...                loss_fn=nn.MSELoss(reduction="none"), target=torch.randn(64, 8, 32))
    >>> p.predicted_bytes <= p.budget, p.n_blocks * p.block_len >= 100_000
    (True, True)
    """
    states = None
    if schedule is not None:
        get_schedule(schedule, 1)  # a clear error for unknown names
        if not isinstance(schedule, str):
            states = getattr(schedule, "keywords", {}).get("states")
            if schedule_name(schedule) != "revolve" or states is None:
                raise ValueError(f"plan() takes a schedule name or revolve_with(states), "
                                 f"got {schedule!r}")
    opts = Options(block_len=max(1, int(probe_len)), reduction=reduction,
                   batch_first=batch_first, state_batch_dim=state_batch_dim)
    call = _Call(model, loss_fn, x_example, target, state, opts)
    lay = call.layout
    runner = call.runner()
    device = getattr(lay.x_data, "device", torch.device("cpu"))
    if memory_budget in (None, "auto"):
        budget = available_memory(device) // 2
    else:
        budget = parse_bytes(memory_budget)
    bytes_per_row, state_bytes, draws = measure(runner, probe_len)
    n_steps = int(T) if T is not None else lay.n_steps
    if n_steps < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    n_rows = lay.n_rows if n_steps == lay.n_steps else n_steps * lay.n_batch
    ragged = lay.packed and int(lay.batch_sizes[-1]) != lay.n_batch
    return choose(n_steps, n_rows, lay.n_batch, bytes_per_row, state_bytes, budget, draws,
                  schedule=schedule_name(schedule) if schedule else None, block_len=block_len,
                  max_block_len=RAGGED_MAX_BLOCK_LEN if ragged else None, states=states)
