"""Checkpointing schedules: which block boundaries to keep, and how to rebuild the rest.

The forward pass keeps the states entering the blocks a schedule asks for. The reverse
pass needs the state entering every block, last to first: when it is not kept, the
engine re-runs blocks without a graph from the nearest earlier kept state, keeping the
states the schedule names on the way (and dropping them once the reverse pass has gone
below them). All schedules give the same gradient; they trade memory for recompute:

- ``flat``: keep all K states; one extra forward pass.
- ``two_level``: keep every ceil(sqrt(K))-th state; about two extra forward passes,
  O(sqrt(K)) states.
- ``revolve``: binomial checkpointing (Griewank and Walther) with ``s`` states: the
  fewest block forward calls any schedule can make with ``s`` states.

(K blocks; the last block is never recomputed.) Schedules are picked by name from
:data:`SCHEDULES`, as ``block_loss(..., schedule="two_level")``, or given as a callable
``n_blocks -> Schedule``, as ``schedule=revolve_with(12)`` (12 states).
"""
from __future__ import annotations

import functools
import math
from typing import Callable, Dict, List, Type, Union


class Schedule:
    """Base class. ``n_blocks`` is K; boundary ``k`` is the state entering block ``k``.

    A custom schedule is a subclass passed as ``schedule=`` (a callable ``n_blocks ->
    Schedule``); the gradient is the same whatever it keeps:

    >>> import torch
    >>> from torch import nn
    >>> import vlrnn
    >>> from vlrnn.engine import Schedule
    >>> class KeepEven(Schedule):
    ...     name = "keep_even"
    ...     def keep(self, k):               # the forward pass keeps even boundaries
    ...         return k % 2 == 0
    ...     def rebuild(self, start, k):     # re-run from the kept one below, keep only k
    ...         return [k]
    >>> gru, x, y = nn.GRU(2, 3), torch.randn(40, 2, 2), torch.randn(40, 2, 3)
    >>> a = vlrnn.block_loss(gru, nn.MSELoss(reduction="none"), x, y, block_len=8,
    ...                      schedule=KeepEven).loss
    >>> b = vlrnn.full_loss(gru, nn.MSELoss(reduction="none"), x, y).loss
    >>> torch.allclose(a, b)
    True
    """

    name = ""
    # True: boundaries the forward pass keeps are dropped once the reverse pass is below
    # them (revolve reuses their memory); they are then their own tensors, not slots
    frees_kept = False

    def __init__(self, n_blocks: int):
        self.n_blocks = n_blocks

    def keep(self, k: int) -> bool:
        """Whether the forward pass keeps boundary ``k``."""
        raise NotImplementedError

    def rebuild(self, start: int, k: int) -> List[int]:
        """Boundaries in ``(start, k]`` to keep while re-running from boundary ``start``
        to reach ``k`` (always ends with ``k``)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_blocks={self.n_blocks})"


class Flat(Schedule):
    """Keep every boundary: one extra forward pass, K states."""

    name = "flat"

    def keep(self, k: int) -> bool:
        return True

    def rebuild(self, start: int, k: int) -> List[int]:
        return [k]


class TwoLevel(Schedule):
    """Keep every ``stride``-th boundary (default ``ceil(sqrt(K))``); the reverse pass
    re-runs one segment at a time, keeping all its boundaries. About one more forward
    pass than ``flat``, O(sqrt(K)) states."""

    name = "two_level"

    def __init__(self, n_blocks: int, stride: int = 0):
        super().__init__(n_blocks)
        self.stride = stride or max(1, math.ceil(math.sqrt(n_blocks)))

    def keep(self, k: int) -> bool:
        return k % self.stride == 0

    def rebuild(self, start: int, k: int) -> List[int]:
        return list(range(start + 1, k + 1))


def binomial(a: int, b: int) -> int:
    """C(a + b, a): the most blocks ``a`` states reverse if no block runs forward more
    than ``b`` times besides its run with a graph (Griewank and Walther's beta(a, b))."""
    return math.comb(a + b, a) if a >= 0 and b >= 0 else 0


def _repeats(n: int, s: int) -> int:
    """The least ``t`` with ``binomial(s, t) >= n`` (binary search: ``t`` is about
    ``n`` for ``s = 1``)."""
    if n <= 1:
        return 0
    lo, hi = 0, 1  # binomial(s, lo) < n <= binomial(s, hi) once the loop ends
    while binomial(s, hi) < n:
        lo, hi = hi, 2 * hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if binomial(s, mid) < n else (lo, mid)
    return hi


def extra_calls(n: int, s: int) -> int:
    """Block forward calls binomial checkpointing makes after the forward pass over
    ``n`` blocks with ``s`` states (the first block's entry among them): the rebuilds
    and the run with a graph of each block but the last. Closed form of Griewank and
    Walther's recursion ``p(n, s) = min_i i + p(i, s) + p(n - i, s - 1)``."""
    if n < 1 or s < 1:
        raise ValueError(f"need n >= 1 blocks and s >= 1 states, got n={n}, s={s}")
    if n == 1:
        return 0
    t = _repeats(n, s)
    return t * n - binomial(s + 1, t - 1)


def revolve_calls(n_blocks: int, states: int) -> int:
    """All block forward calls of one ``block_backward`` under ``revolve`` with
    ``states`` states: the forward pass (``n_blocks``), each block but the last once
    more with a graph, and the rebuilds. (Those without a graph: this minus ``n_blocks
    + 1``.)

    >>> from vlrnn.engine import revolve_calls
    >>> revolve_calls(10, 10)     # the forward pass, then each block but the last again
    19
    >>> revolve_calls(1000, 8) < revolve_calls(1000, 4)
    True
    """
    return n_blocks + extra_calls(n_blocks, max(1, min(states, n_blocks - 1)))


def _advance(n: int, s: int) -> int:
    """Where binomial checkpointing puts its next state, reversing ``n`` blocks from a
    kept state with ``s`` states: ``m`` blocks on, ``1 <= m < n``. Any ``m`` in
    ``[max(n - beta(s-1, t), beta(s, t-2)), min(beta(s, t-1), n - beta(s-1, t-1))]``
    (``t = _repeats(n, s)``) splits optimally; the first is taken."""
    if s <= 1:
        return n - 1  # no state to spare: run on to the block itself
    t = _repeats(n, s)
    return max(1, n - binomial(s - 1, t), binomial(s, t - 2))


class Revolve(Schedule):
    """Binomial checkpointing (Griewank and Walther's revolve) with ``states`` states.

    ``states`` (``s``) counts the states kept at once, the first block's entry state
    (boundary 0, the caller's initial state) among them, as in Griewank and Walther's
    count of checkpoints; the state entering the block being differentiated is held by
    its graph on top (peak: ``s + 1`` states). With that, the block forward calls of one
    ``block_backward`` over K blocks number ``revolve_calls(K, s)``
    (= ``checkpoint_schedules.optimal_steps_binomial(K, s)``), the fewest possible with
    ``s`` states; those without a graph are ``revolve_calls(K, s) - K - 1``.

    Default ``s``: ``ceil(log2 K) + 2``; ``s >= K - 1`` keeps every boundary (``flat``).
    ``tail``: the blocks whose graphs the forward pass keeps (``keep_last`` of the
    planner; those blocks are not recomputed, so the binomial tree spans the first
    ``K - tail + 1`` blocks).

    Placement: reversing blocks ``[a, b)`` from the kept state ``a`` with ``s`` states,
    run ``m = _advance(b - a, s)`` blocks, keep state ``a + m``, reverse ``[a + m, b)``
    with ``s - 1``, then ``[a, a + m)`` with ``s``. The forward pass keeps the first
    chain of that recursion; when the reverse pass reaches a block whose entry state is
    not kept, the engine re-runs from the nearest kept state ``a`` below it, and
    :meth:`rebuild` names the next chain, with the ``s`` that ``a`` got in the
    recursion. Kept states above the reverse pass are dropped (``frees_kept``), so the
    memory they held serves the rebuilt ones.
    """

    name = "revolve"
    frees_kept = True

    def __init__(self, n_blocks: int, states: int = 0, tail: int = 1):
        super().__init__(n_blocks)
        if states < 0 or tail < 0:
            raise ValueError(f"revolve needs states >= 1 (0: the default) and tail >= 1, "
                             f"got states={states}, tail={tail}")
        default = math.ceil(math.log2(max(n_blocks, 2))) + 2
        self.span = max(1, n_blocks - max(1, tail) + 1)  # blocks in the binomial tree
        self.states = max(1, min(states or default, self.span - 1))
        self.first_chain = set(self._chain(0, self.span, self.states))

    def __repr__(self) -> str:
        return f"Revolve(n_blocks={self.n_blocks}, states={self.states})"

    def _chain(self, a: int, b: int, s: int) -> List[int]:
        """States kept running from ``a`` towards block ``b - 1``: ends with ``b - 1``."""
        points = []
        while b - a > 1:
            a += _advance(b - a, s)
            s -= 1
            points.append(a)
        return points

    def _states_at(self, start: int) -> int:
        """``s`` of the recursion's sub-problems that start at ``start``."""
        a, b, s = 0, self.span, self.states
        while a < start:
            mid = a + _advance(b - a, s)
            if start >= mid:
                a, s = mid, s - 1
            else:
                b = mid
        return max(1, s)

    def keep(self, k: int) -> bool:
        return k in self.first_chain

    def rebuild(self, start: int, k: int) -> List[int]:
        last = self.span - 1
        if k <= last:
            return self._chain(start, k + 1, self._states_at(start))
        # past the tree: blocks whose graphs were kept, rebuilt again by a second backward
        head = self._chain(start, self.span, self._states_at(start)) if start < last else []
        return head + list(range(max(start, last) + 1, k + 1))


def revolve_with(states: int, tail: int = 1) -> Callable[[int], Revolve]:
    """A ``schedule=`` argument: ``revolve`` with ``states`` states (see :class:`Revolve`).

    >>> from vlrnn.engine import revolve_with, revolve_calls
    >>> schedule = revolve_with(states=4)                  # keep at most 4 boundary states
    >>> schedule(1000).name
    'revolve'
    >>> revolve_calls(1000, 4) > 1000                      # block forwards it costs in all
    True
    """
    if isinstance(states, bool) or not isinstance(states, int) or states < 1:
        raise ValueError(f"revolve_with needs a number of states >= 1, got {states!r}")
    return functools.partial(Revolve, states=states, tail=tail)


class Streaming(Schedule):
    """Keep no boundary: the forward pass of inference under ``torch.no_grad()``, which
    never runs a reverse pass (so nothing is ever rebuilt). Internal; not in
    :data:`SCHEDULES`."""

    name = "streaming"

    def keep(self, k: int) -> bool:
        return False

    def rebuild(self, start: int, k: int) -> List[int]:
        raise RuntimeError("a streaming forward pass keeps no boundaries: there is no reverse "
                           "pass to rebuild them for")


SCHEDULES: Dict[str, Type[Schedule]] = {s.name: s for s in (Flat, TwoLevel, Revolve)}

ScheduleSpec = Union[str, Callable[[int], Schedule]]


def get_schedule(name: ScheduleSpec, n_blocks: int) -> Schedule:
    """The schedule called ``name`` (or made by the callable ``name``) for ``n_blocks``
    blocks."""
    if callable(name) and not isinstance(name, str):
        made = name(n_blocks)
        if not isinstance(made, Schedule):
            raise TypeError(f"a schedule callable must return a vlrnn.engine.Schedule for "
                            f"n_blocks, got {type(made).__name__}")
        return made
    try:
        cls = SCHEDULES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown schedule {name!r}; expected one of "
                         + ", ".join(repr(s) for s in SCHEDULES)
                         + " or a callable n_blocks -> Schedule") from None
    return cls(n_blocks)


def schedule_name(spec: ScheduleSpec) -> str:
    """The registry name of a schedule argument (``"revolve"`` for ``revolve_with(12)``)."""
    if isinstance(spec, str):
        return SCHEDULES[spec].name if spec in SCHEDULES else spec
    cls = getattr(spec, "func", spec)
    return getattr(cls, "name", "") or repr(spec)
