"""The exact-BPTT engine: time blocks, the reverse block pass and its entry points.

Entry points: ``bptt`` (``block_loss``, ``block_backward``, ``block_outputs``, and
``full_loss``, ``full_backward``, ``full_outputs``: plain autograd, the oracle) and
``blockwise`` (``Blockwise``, with ``directions`` for bidirectional layers).
Underneath: ``call`` (one call's arguments, checked), ``runner`` (``BlockRunner``: one
block forward, the boundary cache), ``backward`` (the ``autograd.Function`` and the
reverse block pass), ``outputs`` (the same pass seeded with dL/dy), ``graph`` (which
tensors a block's graph reaches); ``blocks``, ``layout``, ``loss``, ``state``, ``store``,
``streaming``, ``rng`` and ``checks`` (time blocks, packed/dense rows, per-block loss
values, state pytrees, boundary buffers, input read from arrays, random-number replay,
argument checks); ``schedules`` (which boundaries to keep) and ``planner`` (block length
and schedule for a memory budget).
"""
from .blocks import TimeBlock, split_packed
from .bptt import (block_backward, block_loss, block_outputs, full_backward, full_loss,
                   full_outputs)
from .blockwise import Blockwise
from .call import BlockLossOutput
from .planner import Plan, plan
from .runner import BlockRunner
from .schedules import SCHEDULES, Schedule, revolve_calls, revolve_with

__all__ = [
    "BlockLossOutput",
    "BlockRunner",
    "Blockwise",
    "Plan",
    "SCHEDULES",
    "Schedule",
    "TimeBlock",
    "block_backward",
    "block_loss",
    "block_outputs",
    "full_backward",
    "full_loss",
    "full_outputs",
    "plan",
    "revolve_calls",
    "revolve_with",
    "split_packed",
]
