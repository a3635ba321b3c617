"""Where the Trainer runs: device choice, and in a distributed run each rank's share of
the batches (with a check that every rank steps as often)."""
from __future__ import annotations

import os
from typing import Any, Iterable, Optional

import torch

from . import distributed as dd
from .helpers import _resolve_device


class PlacementMixin:
    """Device and distributed placement of :class:`vlrnn.Trainer`."""

    def _check_same_length(self, loader: Iterable) -> None:
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

    def _share(self, loader: Iterable, even: Optional[str]) -> Iterable:
        """This rank's batches of ``loader`` (``loader`` itself when not distributed)."""
        if not self.distributed:
            return loader
        return dd.shard_loader(loader, self.world_size, self.rank, even)

    @staticmethod
    def _want_distributed(distributed: Optional[bool], device: Any) -> bool:
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
