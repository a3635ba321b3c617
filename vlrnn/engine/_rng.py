"""Random-number state at block starts, so recomputed blocks draw the same dropout masks."""
from __future__ import annotations

import contextlib
from typing import Iterator, List, Tuple, Union

import torch

from ._streaming import ArrayStream


class RngSnapshot:
    """The CPU generator's state and that of each CUDA device in ``devices``."""

    __slots__ = ("cpu", "cuda")

    def __init__(self, devices: List[int]):
        self.cpu = torch.get_rng_state()
        self.cuda: List[Tuple[int, torch.Tensor]] = [
            (d, torch.cuda.get_rng_state(d)) for d in devices]

    def unchanged(self) -> bool:
        """Whether no random number has been drawn since this snapshot was taken."""
        if not torch.equal(self.cpu, torch.get_rng_state()):
            return False
        return all(torch.equal(s, torch.cuda.get_rng_state(d)) for d, s in self.cuda)

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        for d, s in self.cuda:
            torch.cuda.set_rng_state(s, d)


def cuda_devices(*tensors: Union[torch.Tensor, ArrayStream, None]) -> List[int]:
    """CUDA device indices among ``tensors`` (whose generators dropout may use)."""
    devs = {t.device.index if t.device.index is not None else torch.cuda.current_device()
            for t in tensors if t is not None and t.device.type == "cuda"}
    return sorted(devs)


@contextlib.contextmanager
def preserved(devices: List[int]) -> Iterator[None]:
    """Run the body and put every generator back as it was (recompute must not shift the
    user's random stream)."""
    with torch.random.fork_rng(devices=devices, enabled=True):
        yield
