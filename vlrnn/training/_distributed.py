"""Data-parallel training over processes: which batches each rank trains on, and the
few collectives the :class:`vlrnn.Trainer` needs.

The split is by series, and keeps the grouping by length: every rank walks the same
epoch order of batches (a ``LengthBucketSampler``'s, say, seeded alike on every rank)
and takes every ``world_size``-th batch, starting at its rank. Batches of one step then
hold series of similar length on every rank, whatever their number of time blocks (the
engine copes with ranks that run different numbers of blocks).

What must be equal is the number of optimizer steps: DDP all-reduces the gradients in
every backward, and a rank with one step more than the others waits for them forever.
So the batch list of an epoch is padded to a multiple of ``world_size`` by repeating its
first batches (as ``DistributedSampler`` repeats samples), or cut (``even="drop"``).
Evaluation runs no collective per batch and takes the batches unpadded
(``even=None``): its loss sums are all-reduced once at the end.
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Iterator, List, Optional, Sequence

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, IterableDataset, RandomSampler, Sampler

EVEN = ("pad", "drop", None)


# -- process group ---------------------------------------------------------------------------
def is_initialized() -> bool:
    """Whether a default process group exists (``torch.distributed`` initialised)."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if is_initialized() else 0


def get_world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if is_initialized() else 1


def launched_by_torchrun() -> bool:
    """``torchrun`` (and ``torch.distributed.launch``) set these for every process."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def init_from_env(device: torch.device) -> None:
    """Create the default process group from ``torchrun``'s environment variables:
    NCCL for a CUDA device, gloo otherwise."""
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)


def collective_device() -> torch.device:
    """Where tensors for collectives must live: the current CUDA device for NCCL."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values: Sequence[float]) -> List[float]:
    """Element-wise sum over ranks of a few numbers (float64); the values themselves
    without a process group."""
    if not is_initialized():
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64,
                     device=collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def ranks_with(flag: bool) -> List[int]:
    """The ranks on which ``flag`` is true (every rank learns the same list), so that
    all ranks take the same decision, e.g. to skip a step."""
    if not is_initialized():
        return [0] if flag else []
    t = torch.zeros(get_world_size(), dtype=torch.float64, device=collective_device())
    t[get_rank()] = float(bool(flag))
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return [r for r, v in enumerate(t.tolist()) if v]


def all_gather_object(obj: Any) -> List[Any]:
    """``obj`` of every rank, in rank order (``[obj]`` without a process group)."""
    if not is_initialized():
        return [obj]
    out: List[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if is_initialized():
        dist.barrier()


# -- splitting batches over ranks ------------------------------------------------------------
def _check_even(even: Optional[str]) -> Optional[str]:
    if even not in EVEN:
        raise ValueError(f"even must be 'pad', 'drop' or None, got {even!r}")
    return even


def rank_share(n: int, num_replicas: int, rank: int, even: Optional[str] = "pad") -> List[int]:
    """Positions (in the epoch's batch order ``0..n-1``) of the batches rank ``rank``
    trains on: ``rank, rank + W, rank + 2W, ...`` where ``W = num_replicas``.

    ``even="pad"``: the order is extended cyclically (batch ``n`` is batch 0 again, ...)
    to ``ceil(n / W) * W`` batches, so every rank gets ``ceil(n / W)``; ``"drop"``: the
    last ``n % W`` batches are left out, every rank gets ``n // W``; ``None``: ranks get
    ``ceil`` or ``floor`` of ``n / W``, every batch exactly once.
    """
    _check_even(even)
    if n == 0:
        return []
    if even == "pad":
        total = -(-n // num_replicas) * num_replicas
    elif even == "drop":
        total = (n // num_replicas) * num_replicas
    else:
        total = n
    return [i % n for i in range(rank, total, num_replicas)]


class DistributedBatchSampler(Sampler):
    """This rank's share of another batch sampler's batches (see :func:`rank_share`).

    Args:
        batch_sampler: yields lists of dataset indices, the same on every rank for a
            given epoch (e.g. :class:`vlrnn.data.LengthBucketSampler`, or a
            ``BatchSampler`` over a ``RandomSampler`` with a seeded ``generator``).
        num_replicas, rank: default: from the process group.
        even: ``"pad"`` (repeat the epoch's first batches so every rank has the same
            number), ``"drop"`` (leave the last ones out) or ``None`` (uneven).

    ``set_epoch(e)`` is passed on to ``batch_sampler``.
    """

    def __init__(self, batch_sampler: Iterable[List[int]], num_replicas: Optional[int] = None,
                 rank: Optional[int] = None, even: Optional[str] = "pad") -> None:
        self.batch_sampler = batch_sampler
        self.num_replicas = get_world_size() if num_replicas is None else int(num_replicas)
        self.rank = get_rank() if rank is None else int(rank)
        if self.num_replicas < 1 or not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank must be in [0, num_replicas): got rank {self.rank}, "
                             f"num_replicas {self.num_replicas}")
        self.even = _check_even(even)

    def set_epoch(self, epoch: int) -> None:
        fn = getattr(self.batch_sampler, "set_epoch", None)
        if callable(fn):
            fn(epoch)

    def __len__(self) -> int:
        return len(rank_share(len(self.batch_sampler), self.num_replicas, self.rank,
                              self.even))

    def __iter__(self) -> Iterator[List[int]]:
        batches = [list(b) for b in self.batch_sampler]  # one epoch: a list of index lists
        return iter([batches[i] for i in rank_share(len(batches), self.num_replicas,
                                                     self.rank, self.even)])


class _SequenceShard:
    """This rank's share of a list (or any sequence) of ready batches."""

    def __init__(self, batches: Sequence[Any], num_replicas: int, rank: int,
                 even: Optional[str]):
        self.batches, self.num_replicas, self.rank, self.even = batches, num_replicas, rank, even

    def __len__(self) -> int:
        return len(rank_share(len(self.batches), self.num_replicas, self.rank, self.even))

    def __iter__(self) -> Iterator[Any]:
        for i in rank_share(len(self.batches), self.num_replicas, self.rank, self.even):
            yield self.batches[i]


class _StreamShard:
    """This rank's share of an iterable of unknown length: every rank iterates all of
    it (loading every batch) and keeps its own; the first ``W - 1`` batches are kept
    aside for padding."""

    def __init__(self, loader: Iterable, num_replicas: int, rank: int, even: Optional[str]):
        self.loader, self.num_replicas, self.rank, self.even = loader, num_replicas, rank, even

    def __iter__(self) -> Iterator[Any]:
        w, r = self.num_replicas, self.rank
        head: List[Any] = []
        n, pending = 0, None
        for i, batch in enumerate(self.loader):
            n = i + 1
            if i < w - 1:
                head.append(batch)
            if i % w == r:
                if self.even != "drop":
                    yield batch
                else:  # only once the group of W batches it belongs to is complete
                    pending = batch
            if pending is not None and i % w == w - 1:
                yield pending
                pending = None
        if self.even == "pad" and n:
            total = -(-n // w) * w
            for i in range(r, total, w):
                if i >= n:  # i % n < min(n, W - 1): one of the batches kept aside
                    yield head[i % n]


def shard_loader(loader: Iterable, num_replicas: Optional[int] = None,
                 rank: Optional[int] = None, even: Optional[str] = "pad") -> Iterable:
    """``loader`` restricted to this rank's share of its batches.

    - a ``DataLoader`` with a batch sampler: a new ``DataLoader`` over the same dataset,
      collate function and worker settings, whose batch sampler is a
      :class:`DistributedBatchSampler` of the old one (only this rank's batches are
      loaded);
    - a ``DataLoader`` that already samples with a ``DistributedSampler``: unchanged;
    - a list or other sequence of batches: a view of its share;
    - any other iterable: every rank iterates all of it and keeps its share.

    The loader must yield the same batches in the same order on every rank (seeded
    shuffling); a ``RandomSampler`` without a ``generator`` draws from each process's
    own global generator and is refused.
    """
    w = get_world_size() if num_replicas is None else int(num_replicas)
    r = get_rank() if rank is None else int(rank)
    _check_even(even)
    if isinstance(loader, DataLoader):
        samplers = [loader.sampler, loader.batch_sampler,
                    getattr(loader.batch_sampler, "sampler", None)]
        if any(isinstance(s, DistributedSampler) for s in samplers):
            return loader  # the user split it already (by samples)
        for s in samplers:
            if isinstance(s, RandomSampler) and s.generator is None:
                raise ValueError(
                    "the DataLoader shuffles with shuffle=True but no generator: each rank "
                    "would draw its own order and series would be trained twice or never. "
                    "Pass generator=torch.Generator().manual_seed(seed) to the DataLoader, "
                    "or build it with vlrnn.data.make_loader(..., seed=seed)")
        if loader.batch_sampler is not None and not isinstance(loader.dataset, IterableDataset):
            kwargs = dict(collate_fn=loader.collate_fn, num_workers=loader.num_workers,
                          pin_memory=loader.pin_memory, timeout=loader.timeout,
                          worker_init_fn=loader.worker_init_fn,
                          multiprocessing_context=loader.multiprocessing_context,
                          generator=loader.generator,
                          persistent_workers=loader.persistent_workers)
            if loader.num_workers > 0:
                kwargs["prefetch_factor"] = loader.prefetch_factor
            if getattr(loader, "pin_memory_device", ""):
                kwargs["pin_memory_device"] = loader.pin_memory_device
            return DataLoader(loader.dataset,
                              batch_sampler=DistributedBatchSampler(loader.batch_sampler, w,
                                                                    r, even),
                              **kwargs)
    if w == 1:
        return loader
    if hasattr(loader, "__len__") and hasattr(loader, "__getitem__") \
            and not isinstance(loader, (dict, str, bytes)):
        return _SequenceShard(loader, w, r, even)
    return _StreamShard(loader, w, r, even)

