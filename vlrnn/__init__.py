"""vlrnn: exact backpropagation through time over very long, variable-length sequences.

``vlrnn.block_backward(model, loss_fn, x, target)`` replaces ``loss.backward()`` for a
recurrent model: the same gradient as plain BPTT, in memory of one block of time steps
plus the recurrent state at each block boundary.
"""
from . import memory
from .blocks import TimeBlock, split_packed
from .bptt import (BlockLossOutput, block_backward, block_loss, block_outputs, full_backward,
                   full_loss, full_outputs)
from .blockwise import Blockwise
from .planner import Plan, plan
from .schedules import SCHEDULES
from .pipeline import TrainedModel, pack_and_train
from .trainer import Trainer

__version__ = "0.1.0"

__all__ = [
    "BlockLossOutput",
    "Blockwise",
    "Plan",
    "SCHEDULES",
    "TimeBlock",
    "TrainedModel",
    "Trainer",
    "block_backward",
    "block_loss",
    "block_outputs",
    "full_backward",
    "full_loss",
    "full_outputs",
    "pack_and_train",
    "plan",
    "split_packed",
]
