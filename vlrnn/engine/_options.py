"""The options every entry point takes, checked once, in one frozen object.

``block_loss``, ``block_backward``, ``block_outputs``, the ``full_*`` references, ``plan``
and :class:`vlrnn.Trainer` all take the same keyword options; each builds one
:class:`Options` and passes it on, so an option is checked here and nowhere else, and
adding one is a change to this file (and its test). The plain-autograd references take
the same options (tests and users call both with the same arguments, as DESIGN.md's
``full_backward(...same arguments...)`` does): they are checked there too, and the
engine-only ones (``schedule``, ``memory_budget``, ``offload``) cannot change a plain
autograd gradient, which keeps the whole graph.
"""
from __future__ import annotations

import numbers
import re
from dataclasses import dataclass, replace
from typing import Optional, Union

import numpy as np

from ._blocks import check_block_len
from ._loss import check_reduction
from ._schedules import ScheduleSpec, get_schedule

OFFLOADS = (None, "cpu")
_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20,
          "mib": 2**20, "g": 2**30, "gb": 2**30, "gib": 2**30, "t": 2**40, "tb": 2**40,
          "tib": 2**40}


def parse_bytes(value: Union[int, float, str]) -> int:
    """``"2GB"``, ``"512 MiB"``, ``1e9`` -> bytes (binary units: 1 GB = 2**30 bytes).

    >>> parse_bytes("1.5 GB"), parse_bytes(4096)
    (1610612736, 4096)
    """
    if isinstance(value, bool):
        raise TypeError(f"memory_budget must be bytes or a string like '2GB', got {value!r}")
    if isinstance(value, (int, float)):
        if value <= 0:
            raise ValueError(f"memory_budget must be positive, got {value}")
        return int(value)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(value))
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"memory_budget {value!r} is not a size like '2GB', '512MB' or bytes")
    n = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if n <= 0:
        raise ValueError(f"memory_budget must be positive, got {value!r}")
    return int(n)


def check_state_batch_dim(d) -> int:
    """``state_batch_dim`` as an int >= 0, or a clear error."""
    if isinstance(d, bool) or not isinstance(d, numbers.Integral):
        raise TypeError(f"state_batch_dim must be an int >= 0 (the batch dimension of the "
                        f"state tensors) or None, got {d!r} ({type(d).__name__})")
    if d < 0:
        raise ValueError(f"state_batch_dim must be >= 0, got {d}")
    return int(d)


@dataclass(frozen=True)
class Options:
    """What every entry point takes besides the model and the data.

    Attributes:
        block_len: time steps per block (an int >= 1), ``"auto"`` (the planner picks
            it), or ``None`` (references only: one call over the whole batch).
        schedule: which block boundaries to keep (a name of :data:`vlrnn.SCHEDULES` or a
            callable ``n_blocks -> Schedule``); ``None``: ``"flat"`` or the planner's.
        memory_budget: bytes or a size such as ``"4GB"`` for the planner; ``None``.
        offload: ``None`` or ``"cpu"`` (boundary states in host memory).
        reduction: ``"sum"``, ``"mean"`` or ``"seq_mean"``.
        batch_first: dense input is ``(B, T, F)``; ``None`` follows the model.
        state_batch_dim: the batch dim of the state tensors; ``None``: the default.

    >>> Options(block_len=64, schedule="revolve").block_len
    64
    >>> Options(offload="gpu")
    Traceback (most recent call last):
    ...
    ValueError: unknown offload 'gpu'; expected None or 'cpu'
    """

    block_len: Union[int, str, None] = 256
    schedule: Optional[ScheduleSpec] = None
    memory_budget: Union[int, float, str, None] = None
    offload: Optional[str] = None
    reduction: str = "mean"
    batch_first: Optional[bool] = None
    state_batch_dim: Optional[int] = None

    def __post_init__(self) -> None:
        b = self.block_len
        if isinstance(b, str):
            if b != "auto":
                raise ValueError(f"block_len must be a positive int or 'auto', got {b!r}")
        elif b is not None:
            check_block_len(b)
        if self.schedule is not None:
            get_schedule(self.schedule, 1)  # an unknown name is refused now
        if self.memory_budget is not None and self.memory_budget != "auto":
            parse_bytes(self.memory_budget)
        if self.offload not in OFFLOADS:
            raise ValueError(f"unknown offload {self.offload!r}; expected None or 'cpu'")
        check_reduction(self.reduction)
        if self.batch_first is not None and not isinstance(self.batch_first, (bool, np.bool_)):
            raise TypeError(f"batch_first must be True, False or None, got "
                            f"{self.batch_first!r} ({type(self.batch_first).__name__})")
        if self.state_batch_dim is not None:
            check_state_batch_dim(self.state_batch_dim)

    def replace(self, **changes) -> "Options":
        """A copy with ``changes`` (checked again)."""
        return replace(self, **changes)
