"""The exact-BPTT engine: time blocks, the reverse block pass and its entry points.

Public: ``block_loss``, ``block_backward``, ``block_outputs`` and the plain-autograd
references ``full_loss``, ``full_backward``, ``full_outputs`` (the oracle); ``Blockwise``;
``Options`` (the options every entry point checks once); ``plan`` and ``Plan`` (block
length and schedule for a memory budget); the schedules (``SCHEDULES``, ``Schedule``,
``revolve_with``, ``revolve_calls``); ``TimeBlock``, ``split_packed`` and ``BlockRunner``.
Everything else lives in underscored modules (docs/guides/how-it-works.md has the map).
"""
from ._blocks import TimeBlock, split_packed
from ._blockwise import Blockwise
from ._bptt import block_backward, block_loss, block_outputs, full_backward, full_loss, full_outputs
from ._call import BlockLossOutput
from ._options import Options
from ._planner import Plan, plan
from ._runner import BlockRunner
from ._schedules import SCHEDULES, Schedule, revolve_calls, revolve_with

__all__ = [
    "BlockLossOutput",
    "BlockRunner",
    "Blockwise",
    "Options",
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
