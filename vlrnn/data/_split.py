"""Train/validation splits: by whole series, or by the end of every series."""
from __future__ import annotations

import math
from typing import Tuple

import numpy as np

from ._dataset import SeriesDataset


def _check_fraction(val_fraction: float) -> float:
    try:
        f = float(val_fraction)
    except (TypeError, ValueError):
        raise TypeError(f"val_fraction must be a number, got {val_fraction!r}") from None
    if not 0.0 < f < 1.0:
        raise ValueError(f"val_fraction must be strictly between 0 and 1, got {val_fraction!r}")
    return f


def split_series(dataset: SeriesDataset, val_fraction: float = 0.2, seed: int = 0
                 ) -> Tuple[SeriesDataset, SeriesDataset]:
    """Split whole series into ``(train, val)``.

    About ``val_fraction`` of the series (rounded, at least one, and at least one left
    for training) go to ``val``, drawn at random with ``seed``.  Both parts keep dataset
    order, and each series keeps its id, index and times.

    >>> import pandas as pd
    >>> from vlrnn.data import from_dataframe, split_series
    >>> df = pd.DataFrame({"id": [i for i in range(10) for _ in range(3)],
    ...                    "t": list(range(3)) * 10, "u": range(30), "y": range(30)})
    >>> train, val = split_series(from_dataframe(df, id_col="id", time_col="t",
    ...                                          target_cols="y"), val_fraction=0.2)
    >>> len(train), len(val)                  # whole series held out
    (8, 2)
    """
    f = _check_fraction(val_fraction)
    n = len(dataset)
    if n < 2:
        raise ValueError(f"split_series needs at least 2 series to put one in each part, got "
                         f"{n}; use split_time(dataset, val_fraction) to hold out the end of "
                         "each series instead")
    n_val = min(max(int(math.floor(n * f + 0.5)), 1), n - 1)
    perm = np.random.default_rng(np.random.SeedSequence([int(seed)])).permutation(n)
    val = np.sort(perm[:n_val])
    train = np.setdiff1d(np.arange(n), val)  # sorted
    return dataset.subset(train.tolist()), dataset.subset(val.tolist())


def split_time(dataset: SeriesDataset, val_fraction: float = 0.2
               ) -> Tuple[SeriesDataset, SeriesDataset]:
    """Hold out the last ``val_fraction`` of the steps of every series.

    A series of ``T`` steps gives its first ``T - v`` steps to ``train`` and its last
    ``v = round(T * val_fraction)`` to ``val``, with ``1 <= v <= T - 1``; a series with a
    single step cannot be split (``ValueError`` naming it).  Both parts hold every series,
    with the same ids, and the index and times of the rows they keep.  A model scored
    on ``val`` starts from a fresh state unless you carry over the state at the end of
    ``train``.

    >>> import pandas as pd
    >>> from vlrnn.data import from_dataframe, split_time
    >>> df = pd.DataFrame({"id": [0] * 10 + [1] * 10, "t": list(range(10)) * 2,
    ...                    "u": range(20), "y": range(20)})
    >>> train, val = split_time(from_dataframe(df, id_col="id", time_col="t",
    ...                                        target_cols="y"), val_fraction=0.2)
    >>> [x.shape[0] for x, _ in train], [x.shape[0] for x, _ in val]
    ([8, 8], [2, 2])
    """
    f = _check_fraction(val_fraction)
    lengths = dataset.lengths
    short = [i for i, T in zip(dataset.ids, lengths) if T < 2]
    if short:
        shown = ", ".join(repr(i) for i in short[:5]) + (", ..." if len(short) > 5 else "")
        raise ValueError(f"split_time: {len(short)} series have a single step and cannot give "
                         f"one to each part: id(s) {shown}; drop them (from_dataframe("
                         "min_length=2, short_series='drop')) or use split_series")
    cuts = [T - min(max(int(math.floor(T * f + 0.5)), 1), T - 1) for T in lengths]
    train = dataset.slice_steps([(0, c) for c in cuts])
    val = dataset.slice_steps([(c, T) for c, T in zip(cuts, lengths)])
    return train, val
