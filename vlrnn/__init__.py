"""vlrnn: exact backpropagation through time over very long, variable-length sequences.

``vlrnn.block_backward(model, loss_fn, x, target)`` replaces ``loss.backward()`` for a
recurrent model: the same gradient as plain BPTT, in memory of one block of time steps
plus the recurrent state at each block boundary.

Layout: ``vlrnn.engine`` (the exact-BPTT engine), ``vlrnn.training`` (the training loop,
``pack_and_train``), ``vlrnn.cli`` (the command line and the demo), ``vlrnn.data``,
``vlrnn.models`` and ``vlrnn.memory`` (peak memory, plain BPTT's estimate).
"""
import importlib as _importlib
import sys as _sys

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
    "pack_and_train",
    "plan",
    "split_packed",
]

# Modules that lived directly under vlrnn/ before the engine, the training loop and the
# command line moved into subpackages. Their old dotted paths keep working, as the same
# module objects: ``import vlrnn.bptt``, ``from vlrnn.trainer import Trainer``,
# ``vlrnn.schedules.SCHEDULES``, and pickles that name a class by its old module.
_MOVED = {
    "blocks": "engine.blocks",
    "blockwise": "engine.blockwise",
    "bptt": "engine.bptt",
    "checks": "engine.checks",
    "directions": "engine.directions",
    "layout": "engine.layout",
    "loss": "engine.loss",
    "outputs": "engine.outputs",
    "planner": "engine.planner",
    "rng": "engine.rng",
    "schedules": "engine.schedules",
    "state": "engine.state",
    "store": "engine.store",
    "streaming": "engine.streaming",
    "checkpoint": "training.checkpoint_files",
    "distributed": "training.distributed",
    "pipeline": "training.pipeline",
    "trained": "training.trained",
    "trainer": "training.trainer",
    "demo": "cli.demo",
}
for _old, _new in _MOVED.items():
    _module = _importlib.import_module(f"{__name__}.{_new}")
    _sys.modules.setdefault(f"{__name__}.{_old}", _module)
    globals()[_old] = _module
del _old, _new, _module
