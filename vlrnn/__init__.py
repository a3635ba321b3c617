"""vlrnn: exact backpropagation through time over very long, variable-length sequences.

``vlrnn.block_backward(model, loss_fn, x, target)`` replaces ``loss.backward()`` for a
recurrent model: the same gradient as plain BPTT, in memory of one block of time steps
plus the recurrent state at each block boundary.

Layout: ``vlrnn.engine`` (the exact-BPTT engine), ``vlrnn.training`` (the training loop,
``pack_and_train``), ``vlrnn.cli`` (the command line and the demo), ``vlrnn.data``,
``vlrnn.models`` and ``vlrnn.memory`` (peak memory, plain BPTT's estimate).
"""
from . import memory
from .engine import (SCHEDULES, BlockLossOutput, Blockwise, Plan, TimeBlock, block_backward,
                     block_loss, block_outputs, full_backward, full_loss, full_outputs, plan,
                     split_packed)
from .training import CheckpointError, TrainedModel, Trainer, pack_and_train

__version__ = "0.1.0"

__all__ = [
    "BlockLossOutput",
    "Blockwise",
    "CheckpointError",
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
    "memory",
    "pack_and_train",
    "plan",
    "split_packed",
]
