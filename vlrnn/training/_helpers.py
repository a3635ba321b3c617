"""Small pieces of the training loop: seeding, devices, moving batches, loader
introspection (epochs, generators), non-finite gradients and out-of-memory messages."""
from __future__ import annotations

import random
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.nn.utils.rnn import PackedSequence

from .._common import Batch


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy's global generator and Python's ``random``."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _resolve_device(device) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _n_rows(x: Batch) -> int:
    """Valid (sequence, step) rows of a batch: what steps/s counts."""
    if isinstance(x, PackedSequence):
        return int(x.data.shape[0])
    return int(x.shape[0] * x.shape[1])


def _n_seqs(x: Batch, batch_first: bool) -> int:
    if isinstance(x, PackedSequence):
        return int(x.batch_sizes[0])
    return int(x.shape[0] if batch_first else x.shape[1])


def engine_block_len(model: Any, x: Batch, block_len: Any) -> Any:
    """``block_len`` for the engine, or the batch's length for a model that reads whole
    sequences in one call (``model.reads_whole_sequence``: a bidirectional encoder, whose
    reverse direction the engine cannot run block by block; ``vlrnn.Blockwise`` inside it
    keeps its memory flat in the length instead)."""
    if not getattr(model, "reads_whole_sequence", False):
        return block_len
    if isinstance(x, PackedSequence):
        return max(int(x.batch_sizes.shape[0]), 1)
    return max(int(x.shape[1 if getattr(model, "batch_first", False) else 0]), 1)


def _move(t: Any, device: torch.device, dtype: Optional[torch.dtype]) -> Any:
    """``t`` on ``device``; floating data cast to the model's ``dtype`` (integer targets,
    e.g. class ids, keep theirs)."""
    if isinstance(t, PackedSequence):
        data = t.data
        cast = dtype if (dtype is not None and data.is_floating_point()) else data.dtype
        return t.to(device=device, dtype=cast)
    if isinstance(t, torch.Tensor):
        cast = dtype if (dtype is not None and t.is_floating_point()) else t.dtype
        return t.to(device=device, dtype=cast)
    if isinstance(t, (tuple, list)):  # (per-step targets, per-series targets)
        return type(t)(_move(v, device, dtype) for v in t)
    return t


def _loader_objects(loader: Any) -> List[Any]:
    """The loader and its (batch) sampler: where ``set_epoch`` and generators may live."""
    objs = [loader]
    for name in ("batch_sampler", "sampler"):
        obj = getattr(loader, name, None)
        if obj is not None:
            objs.append(obj)
            inner = getattr(obj, "sampler", None)  # BatchSampler(RandomSampler(...))
            if inner is not None:
                objs.append(inner)
    seen, out = set(), []
    for o in objs:
        if id(o) not in seen:
            seen.add(id(o))
            out.append(o)
    return out


def _set_epoch(loader: Any, epoch: int) -> None:
    """Make the loader's shuffling a function of (seed, epoch) where it supports that
    (``LengthBucketSampler``, ``DistributedSampler``)."""
    for obj in _loader_objects(loader):
        fn = getattr(obj, "set_epoch", None)
        if callable(fn):
            fn(epoch)


def _loader_generators(loader: Any) -> List[torch.Generator]:
    """``torch.Generator`` objects a loader shuffles with (a ``DataLoader(shuffle=True,
    generator=g)``): their state is checkpointed so that a resumed run draws the same
    order."""
    gens, seen = [], set()
    for obj in _loader_objects(loader):
        g = getattr(obj, "generator", None)
        if isinstance(g, torch.Generator) and id(g) not in seen:
            seen.add(id(g))
            gens.append(g)
    return gens


def _is_scheduler(obj: Any) -> bool:
    return hasattr(obj, "step") and hasattr(obj, "state_dict") and hasattr(obj, "optimizer")


def _config_diff(saved: Dict[str, Any], now: Dict[str, Any]) -> List[str]:
    diffs = []
    for k in sorted(set(saved) | set(now), key=str):
        a, b = saved.get(k, "<missing>"), now.get(k, "<missing>")
        if a != b:
            diffs.append(f"{k}: checkpoint {a!r}, now {b!r}")
    return diffs


def _short(err: Exception, lines: int = 4) -> str:
    text = str(err).strip().splitlines()
    return " ".join(s.strip() for s in text[:lines]) + (" ..." if len(text) > lines else "")


def _nonfinite_grad(named: Sequence[Tuple[str, torch.Tensor]]) -> Optional[str]:
    """Name of the first parameter whose gradient holds NaN/inf, or ``None``. One
    device-to-host sync per device, not per parameter."""
    by_device: Dict[torch.device, List[Tuple[str, torch.Tensor]]] = {}
    for name, p in named:
        g = p.grad
        if g is not None:
            by_device.setdefault(g.device, []).append((name, g._values() if g.is_sparse else g))
    for items in by_device.values():
        if bool(torch.stack([torch.isfinite(g).all() for _, g in items]).all()):
            continue
        for name, g in items:
            if not bool(torch.isfinite(g).all()):
                return name
    return None


# Messages of the allocators: CUDA ("CUDA out of memory"), CPU ("DefaultCPUAllocator: not
# enough memory"), MPS ("MPS backend out of memory"), and the OS via Python.
_OOM_TEXT = ("out of memory", "not enough memory", "can't allocate memory",
             "cannot allocate memory")
_OOM_TYPES: Tuple[type, ...] = tuple(
    t for t in (MemoryError, getattr(torch, "OutOfMemoryError", None),
                getattr(torch.cuda, "OutOfMemoryError", None)) if isinstance(t, type))


def _is_oom(err: BaseException) -> bool:
    if isinstance(err, _OOM_TYPES):
        return True
    return isinstance(err, RuntimeError) and any(t in str(err).lower() for t in _OOM_TEXT)


def _oom_error(err: BaseException, where: str, block_len: Any,
               memory_budget: Any) -> BaseException:
    """``err`` (an out-of-memory error) again, same type, with what to change."""
    budget = "" if memory_budget is None else f", memory_budget={memory_budget!r}"
    msg = (f"out of memory {where} (block_len={block_len!r}{budget}): the activations of "
           "one time block (block_len steps x series in the batch x model width) and the "
           "boundary states did not fit. Pass block_len='auto' with a memory_budget "
           "(e.g. memory_budget='4GB', a little under what the device has free) to let "
           "vlrnn.plan pick the block length and schedule, or a smaller block_len, or "
           f"fewer series per batch. Original error: {_short(err, 2)}")
    try:
        return type(err)(msg)
    except Exception:  # an error type that cannot be built from a message
        return RuntimeError(msg)


def _n_observed(y: Any) -> int:
    """Finite target values of a batch (``PackedSequence`` or tensor)."""
    data = y.data if isinstance(y, PackedSequence) else y
    return int(torch.isfinite(data).sum())
