"""Batches of series: packing collate, length-bucketing batch sampler, loader helper."""
from __future__ import annotations

from typing import Any, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.nn.utils.rnn import PackedSequence, pack_sequence
from torch.utils.data import DataLoader, Dataset, Sampler


def collate_packed(batch: Sequence[Tuple[torch.Tensor, torch.Tensor]]
                   ) -> Tuple[PackedSequence, PackedSequence]:
    """Pack a list of series into ``(x_packed, y_packed)``.

    ``batch``: ``B`` pairs ``(x_i, y_i)`` of shapes ``(T_i, F)`` and ``(T_i, n_targets)``.
    Returns two ``PackedSequence`` built with ``enforce_sorted=False``: batch order is the
    order of ``batch`` (``unsorted_indices`` maps back to it), and both share the same
    ``batch_sizes``, ``sorted_indices`` and ``unsorted_indices``, so row ``r`` of
    ``x_packed.data`` and of ``y_packed.data`` belong to the same series and step.

    >>> import torch
    >>> from vlrnn.data import collate_packed
    >>> x, y = collate_packed([(torch.randn(5, 2), torch.randn(5, 1)),
    ...                        (torch.randn(3, 2), torch.randn(3, 1))])
    >>> tuple(x.batch_sizes.tolist()), y.data.shape
    ((2, 2, 2, 1, 1), torch.Size([8, 1]))
    """
    if len(batch) == 0:
        raise ValueError("collate_packed: empty batch")
    xs, ys = [], []
    for i, item in enumerate(batch):
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise TypeError(f"collate_packed: item {i} should be an (x, y) pair, got "
                            f"{type(item).__name__}")
        x, y = item
        if x.dim() != 2 or y.dim() != 2:
            raise ValueError(f"collate_packed: item {i}: expected x (T, F) and y "
                             f"(T, n_targets), got shapes {tuple(x.shape)} and "
                             f"{tuple(y.shape)}")
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"collate_packed: item {i}: x has {x.shape[0]} steps but y has "
                             f"{y.shape[0]}; expected the same length")
        if x.shape[0] == 0:
            raise ValueError(f"collate_packed: item {i} has 0 steps; a packed sequence needs "
                             "at least one")
        xs.append(x)
        ys.append(y)
    x_packed = pack_sequence(xs, enforce_sorted=False)
    y_packed = pack_sequence(ys, enforce_sorted=False)
    # Same lengths give the same sort, but the pairing of rows is what training relies on:
    # verify it rather than assume the sort is deterministic.
    if not (torch.equal(x_packed.batch_sizes, y_packed.batch_sizes)
            and torch.equal(x_packed.sorted_indices, y_packed.sorted_indices)):
        raise RuntimeError("collate_packed: x and y packed in different orders")
    return x_packed, y_packed


def collate_series(batch: Sequence[Tuple[torch.Tensor, torch.Tensor]]
                   ) -> Tuple[PackedSequence, torch.Tensor]:
    """Pack a list of series with one target per series into ``(x_packed, y)``.

    ``batch``: ``B`` pairs ``(x_i, y_i)``, ``x_i`` ``(T_i, F)`` and ``y_i`` ``(T_i, K)``
    holding the series' target on every row (or ``(K,)``). Returns ``x_packed``
    (``enforce_sorted=False``, batch in ``batch``'s order) and ``y`` ``(B, K)`` (the first
    row of each ``y_i``), in the same input order as the final states
    :func:`vlrnn.block_loss` returns.

    >>> import torch
    >>> from vlrnn.data import collate_series
    >>> x, y = collate_series([(torch.randn(5, 2), torch.tensor(1)),
    ...                        (torch.randn(3, 2), torch.tensor(0))])
    >>> tuple(x.batch_sizes.tolist()), y.tolist()
    ((2, 2, 2, 1, 1), [1, 0])
    """
    if len(batch) == 0:
        raise ValueError("collate_series: empty batch")
    xs, ys = [], []
    for i, item in enumerate(batch):
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise TypeError(f"collate_series: item {i} should be an (x, y) pair, got "
                            f"{type(item).__name__}")
        x, y = item
        if x.dim() != 2 or x.shape[0] == 0:
            raise ValueError(f"collate_series: item {i}: expected x (T, F) with T >= 1, got "
                             f"shape {tuple(x.shape)}")
        xs.append(x)
        ys.append(y[0] if y.dim() == 2 else y)
    return pack_sequence(xs, enforce_sorted=False), torch.stack(ys)


class LengthBucketSampler(Sampler):
    """Batch sampler that puts series of similar length in the same batch.

    Each epoch: order series by length (ties in random order), cut that order into
    batches of ``batch_size`` consecutive series, and shuffle the order of the batches.
    A batch then runs for about as many steps as each of its series, instead of the
    longest series holding up a batch of short ones.

    Args:
        lengths: ``T_i`` of each series (e.g. ``dataset.lengths``).
        batch_size: series per batch.
        shuffle: shuffle ties and batch order; ``False`` yields batches shortest first,
            the same every epoch.
        seed: base seed; the order of an epoch depends only on ``(seed, epoch)``.
        drop_last: drop the batch that is not full.  With ``shuffle`` the dropped series
            are drawn at random each epoch (so the longest are not always left out);
            without it they are the longest.
        mix: shuffle within windows of ``mix * batch_size`` neighbouring series (in length
            order) before cutting batches, so batch membership varies across epochs;
            ``1`` (default) keeps each batch to the closest lengths.

    Iterating yields lists of dataset indices; every index appears exactly once per
    epoch (less the dropped ones).  ``set_epoch(e)`` selects the epoch the next iteration
    uses; each iteration then moves on to the next epoch, so a loop that never calls
    ``set_epoch`` still gets a new order each epoch.

    >>> from vlrnn.data import LengthBucketSampler
    >>> sampler = LengthBucketSampler([5, 100, 7, 98, 6, 99], batch_size=2, shuffle=False)
    >>> [sorted(b) for b in sampler]          # series of like length batched together
    [[0, 4], [2, 3], [1, 5]]
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False, mix: int = 1) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if isinstance(mix, bool) or not isinstance(mix, (int, np.integer)) or mix < 1:
            raise ValueError(f"mix must be an int >= 1, got {mix!r}")
        self.lengths = np.asarray([int(n) for n in lengths], dtype=np.int64)
        if len(self.lengths) == 0:
            raise ValueError("LengthBucketSampler: no series (lengths is empty)")
        self.batch_size, self.mix = int(batch_size), int(mix)
        self.shuffle, self.seed, self.drop_last = bool(shuffle), int(seed), bool(drop_last)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch``'s order on the next iteration (deterministic given the seed)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n, b = len(self.lengths), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def batches(self, epoch: int) -> List[List[int]]:
        """The batches of ``epoch`` (does not change the sampler's epoch)."""
        n, b = len(self.lengths), self.batch_size
        if not self.shuffle:
            order = np.argsort(self.lengths, kind="stable")
            if self.drop_last:
                order = order[:n - n % b]
            return [order[i:i + b].tolist() for i in range(0, len(order), b)]
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, epoch]))
        idx = rng.permutation(n)
        if self.drop_last and n % b:
            idx = idx[:n - n % b]      # random leftovers, dropped before sorting
        # Stable sort of a random permutation: equal lengths land in random order.
        order = idx[np.argsort(self.lengths[idx], kind="stable")]
        w = b * self.mix
        if w > b:
            order = np.concatenate([rng.permutation(order[i:i + w])
                                    for i in range(0, len(order), w)])
        batches = [order[i:i + b].tolist() for i in range(0, len(order), b)]
        return [batches[j] for j in rng.permutation(len(batches))]

    def __iter__(self) -> Iterator[List[int]]:
        epoch = self.epoch
        self.epoch += 1
        return iter(self.batches(epoch))


def make_loader(dataset: Dataset, batch_size: int = 16, shuffle: bool = True, seed: int = 0,
                bucket: bool = True, drop_last: bool = False, per_series: bool = False,
                **loader_kwargs: Any) -> DataLoader:
    """A ``DataLoader`` yielding ``(x_packed, y_packed)`` batches of ``batch_size`` series.

    ``bucket=True`` batches series of similar length (``LengthBucketSampler`` on
    ``dataset.lengths``); ``bucket=False`` batches them in random (``shuffle``) or dataset
    order.  Shuffling is seeded by ``seed``, so runs repeat.  Other keyword arguments
    (``num_workers``, ``pin_memory``, ...) go to ``DataLoader``. ``per_series=True``
    yields ``(x_packed, y)`` with one target row per series (:func:`collate_series`).

    >>> import pandas as pd
    >>> from vlrnn.data import from_dataframe, make_loader
    >>> df = pd.DataFrame({"id": [1] * 6 + [2] * 4, "t": list(range(6)) + list(range(4)),
    ...                    "u": range(10), "y": range(10)})
    >>> ds = from_dataframe(df, id_col="id", time_col="t", target_cols="y")
    >>> x, y = next(iter(make_loader(ds, batch_size=2, shuffle=False)))
    >>> tuple(x.batch_sizes.tolist())
    (2, 2, 2, 2, 1, 1)
    """
    collate = collate_series if per_series else collate_packed
    for key in ("batch_sampler", "sampler", "collate_fn", "batch_size", "shuffle",
                "generator"):
        if key in loader_kwargs:
            raise TypeError(f"make_loader sets {key!r} itself; build a DataLoader directly "
                            "to choose it")
    if bucket:
        lengths = getattr(dataset, "lengths", None)
        if lengths is None:
            lengths = [int(dataset[i][0].shape[0]) for i in range(len(dataset))]
        sampler = LengthBucketSampler(lengths, batch_size, shuffle=shuffle, seed=seed,
                                      drop_last=drop_last)
        return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate,
                          **loader_kwargs)
    gen: Optional[torch.Generator] = None
    if shuffle:
        gen = torch.Generator().manual_seed(int(seed))
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=gen,
                      drop_last=drop_last, collate_fn=collate, **loader_kwargs)
