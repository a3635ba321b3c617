"""Where the Trainer runs: device choice, and in a distributed run each rank's share of
the batches (with a check that every rank steps as often).

:class:`Placement` is one of the Trainer's collaborators: built from the ``distributed``
and ``device`` arguments, it holds the rank, the world size and the device.
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Optional

import torch

from . import _distributed as dd
from ._helpers import _resolve_device


class Placement:
    """Device and distributed placement of one Trainer.

    Args:
        distributed: ``None`` (a process group with more than one process: yes),
            ``True`` (from ``torchrun``'s environment if no group exists) or ``False``.
        device: ``None`` (this process's GPU in a distributed run with GPUs, else the
            default) or a device.
    """

    def __init__(self, distributed: Optional[bool], device: Any):
        self.distributed = want_distributed(distributed, device)
        self.rank, self.world_size = dd.get_rank(), dd.get_world_size()
        self.is_main = self.rank == 0
        self.device = self._pick_device(device)

    def check_same_length(self, loader: Iterable) -> None:
        """Refuse (on every rank at once) shares of different lengths, which would leave
        a rank waiting in an all-reduce forever."""
        if not self.distributed:
            return
        try:
            n = len(loader)  # type: ignore[arg-type]
        except TypeError:
            n = -1
        counts = dd.all_gather_object(int(n))
        if -1 not in counts and len(set(counts)) > 1:
            raise ValueError(f"ranks have different numbers of training batches {counts}: "
                             "DDP needs the same number of optimizer steps on every rank; "
                             "pass the whole loader and let the Trainer split it, or pad "
                             "your own split (DistributedSampler(drop_last=False))")

    def share(self, loader: Iterable, even: Optional[str]) -> Iterable:
        """This rank's batches of ``loader`` (``loader`` itself when not distributed)."""
        if not self.distributed:
            return loader
        return dd.shard_loader(loader, self.world_size, self.rank, even)

    def _pick_device(self, device: Any) -> torch.device:
        """``device``; in a distributed run without one, this process's GPU
        (``LOCAL_RANK``) if there are GPUs."""
        if device is None and self.distributed and torch.cuda.is_available():
            local = int(os.environ.get("LOCAL_RANK", self.rank % torch.cuda.device_count()))
            torch.cuda.set_device(local)
            return torch.device("cuda", local)
        dev = _resolve_device(device)
        if self.distributed and dev.type == "cuda" and dev.index is not None:
            torch.cuda.set_device(dev)  # NCCL collectives run on the current device
        return dev


def want_distributed(distributed: Optional[bool], device: Any) -> bool:
    """Whether the run is distributed (see :class:`Placement`); initialises the process
    group from ``torchrun``'s environment for ``distributed=True`` when there is none."""
    if distributed is None:
        return dd.is_initialized() and dd.get_world_size() > 1
    if not distributed:
        return False
    if not dd.is_initialized():
        if not dd.launched_by_torchrun():
            raise RuntimeError(
                "distributed=True needs torch.distributed: launch the script with "
                "torchrun (e.g. torchrun --nproc_per_node=2 train.py), or call "
                "torch.distributed.init_process_group(...) before building the Trainer")
        dev = _resolve_device(device) if device is not None else torch.device(
            "cuda" if torch.cuda.is_available() else "cpu")
        dd.init_from_env(dev)
    return True
