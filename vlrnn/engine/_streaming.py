"""Dense input that does not fit in memory: read block by block from an array or a file.

``block_loss`` accepts, for ``x`` and ``target``, a numpy array, a ``np.memmap`` (e.g.
``np.load(path, mmap_mode="r")``) or any object with ``.shape`` and slicing along time.
Each block is read when the engine needs it, converted to a tensor and dropped after use,
so only one block of the input is ever held. A memmap is read with ``os.pread`` on its
file rather than through the mapping: pages touched through a mapping stay mapped and
count in the process's resident memory, which would grow with the sequence after all.
"""
from __future__ import annotations

import math
import os
from typing import Any, Optional

import numpy as np
import torch


def is_stream(obj: Any) -> bool:
    """Whether ``obj`` is array-like data to stream (not a tensor or PackedSequence)."""
    return (not isinstance(obj, torch.Tensor) and hasattr(obj, "shape")
            and hasattr(obj, "__getitem__") and hasattr(obj, "dtype"))


class ArrayStream:
    """Time slices of a dense ``(T, B, ...)`` (or batch-first ``(B, T, ...)``) array as
    tensors on ``device``.

    Attributes mirror a tensor's where the engine asks for them: ``shape``, ``dtype`` (a
    torch dtype), ``device``, ``requires_grad`` (always ``False``).
    """

    requires_grad = False
    grad_fn = None

    def __init__(self, array: Any, batch_first: bool, device: torch.device, name: str = "x"):
        shape = tuple(int(n) for n in array.shape)
        if len(shape) < 2:
            raise ValueError(f"{name} must have a time and a batch dimension, got an array of "
                             f"shape {shape}")
        try:
            self.dtype = torch.from_numpy(np.empty(0, dtype=np.dtype(array.dtype))).dtype
        except TypeError:
            raise TypeError(f"{name} has dtype {array.dtype}, which torch cannot hold") from None
        self.array = array
        self.shape = torch.Size(shape)
        self.batch_first = batch_first
        self.device = torch.device(device)
        self.name = name
        self._fd: Optional[int] = None
        self._row_bytes = math.prod(shape[1:]) * np.dtype(array.dtype).itemsize
        # a whole-file memmap (not a slice of one, whose offset numpy does not track)
        if isinstance(array, np.memmap) and not batch_first and array.flags.c_contiguous:
            filename = getattr(array, "filename", None)
            mapping = getattr(array, "_mmap", None)  # np.memmap's own (private, not in its stubs)
            if filename and mapping is not None and array.base is mapping:
                self._fd = os.open(filename, os.O_RDONLY)
                self._offset = int(array.offset)

    def __del__(self):
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)
            self._fd = None

    def dim(self) -> int:
        return len(self.shape)

    def read(self, start: int, stop: int) -> torch.Tensor:
        """Steps ``[start, stop)`` as a tensor ``(stop - start, B, ...)`` (or
        ``(B, stop - start, ...)`` batch-first), a fresh copy on :attr:`device`."""
        if self._fd is not None:
            n = (stop - start) * self._row_bytes
            buf = os.pread(self._fd, n, self._offset + start * self._row_bytes)
            if len(buf) != n:
                raise IOError(f"{self.name}: short read from {self.array.filename} "
                              f"(steps {start}:{stop})")
            part = np.frombuffer(bytearray(buf), dtype=self.array.dtype)
            part = part.reshape((stop - start,) + tuple(self.shape[1:]))
        else:
            part = self.array[:, start:stop] if self.batch_first else self.array[start:stop]
            part = np.array(part, copy=True)
        t = torch.from_numpy(part)
        if t.dtype.is_floating_point and not np.isfinite(part).all():
            bad = np.argwhere(~np.isfinite(part))[0]
            step = start + int(bad[1] if self.batch_first else bad[0])
            raise ValueError(f"{self.name} has a non-finite value (NaN or inf) at time step "
                             f"{step}")
        return t.to(self.device, non_blocking=True)
