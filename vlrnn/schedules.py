"""Checkpointing schedules: which block boundaries to keep, and how to rebuild the rest.

The forward pass keeps the states entering the blocks a schedule asks for. The reverse
pass needs the state entering every block, last to first: when it is not kept, the
engine re-runs blocks without a graph from the nearest earlier kept state, keeping the
states the schedule names on the way (and dropping them once the reverse pass has gone
below them). All schedules give the same gradient; they trade memory for recompute:

- ``flat``: keep all K states; one extra forward pass.
- ``two_level``: keep every ceil(sqrt(K))-th state; about two extra forward passes,
  O(sqrt(K)) states.
- ``recursive``: keep O(log K) states; O(K log K) block forward passes.

(K blocks; the last block is never recomputed.) Schedules are picked by name from
:data:`SCHEDULES`, as ``block_loss(..., schedule="two_level")``.
"""
from __future__ import annotations

import math
from typing import Dict, List, Type


class Schedule:
    """Base class. ``n_blocks`` is K; boundary ``k`` is the state entering block ``k``."""

    name = ""

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


class Recursive(Schedule):
    """Logarithmic space: keep only the first boundary; to reach ``k`` from ``start``,
    keep the midpoints of repeated bisection. O(log K) states, O(K log K) recompute."""

    name = "recursive"

    def keep(self, k: int) -> bool:
        return k == 0

    def rebuild(self, start: int, k: int) -> List[int]:
        points, p = [], start
        while p < k:
            p += max(1, (k - p + 1) // 2)
            points.append(p)
        return points


SCHEDULES: Dict[str, Type[Schedule]] = {s.name: s for s in (Flat, TwoLevel, Recursive)}


def get_schedule(name: str, n_blocks: int) -> Schedule:
    """The schedule called ``name`` for ``n_blocks`` blocks."""
    try:
        cls = SCHEDULES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown schedule {name!r}; expected one of "
                         + ", ".join(repr(s) for s in SCHEDULES)) from None
    return cls(n_blocks)
