"""``SeriesDataset``: one ``(x, y)`` tensor pair per series, plus where its rows came from."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset


class SeriesDataset(Dataset):
    """A list of variable-length series, each an ``(x, y)`` pair of float tensors.

    ``dataset[i]`` is ``(x, y)`` with ``x`` of shape ``(T_i, F)`` (``F = len(feature_cols)``)
    and ``y`` of shape ``(T_i, n_targets)``, rows in time order.  Series are in the order of
    ``ids``.

    Attributes:
        ids: series id of each series (list, dataset order).
        feature_cols, target_cols: names of the ``F`` feature and ``n_targets`` target
            columns, in tensor column order.
        lengths: ``T_i`` of each series (list of ints).
        index: for each series a ``pd.Index`` of the original frame's index labels of its
            rows, in time order: ``index[i][t]`` is the label of row ``t`` of series ``i``,
            so per-step predictions can be put back next to the input frame.
        times: for each series a ``pd.Index`` of its time stamps, in time order.
        id_col, time_col: the names of the id and time columns it was built from.
        categories: for each one-hot encoded column, its categories in encoding order.

    Datasets are not changed in place: ``subset``, ``replace`` and the scalers and splits
    of ``vlrnn.data`` return new datasets that share the unchanged parts.

    >>> import torch
    >>> from vlrnn.data import SeriesDataset
    >>> ds = SeriesDataset([torch.randn(4, 2), torch.randn(3, 2)],
    ...                    [torch.randn(4, 1), torch.randn(3, 1)],
    ...                    ids=["a", "b"], feature_cols=["u", "v"], target_cols=["y"])
    >>> len(ds), ds.lengths
    (2, [4, 3])
    """

    def __init__(self, xs: Sequence[torch.Tensor], ys: Sequence[torch.Tensor], *,
                 ids: Sequence[Any], feature_cols: Sequence[str], target_cols: Sequence[str],
                 index: Optional[Sequence[pd.Index]] = None,
                 times: Optional[Sequence[pd.Index]] = None,
                 id_col: Optional[str] = None, time_col: Optional[str] = None,
                 categories: Optional[Dict[str, list]] = None) -> None:
        xs, ys, ids = list(xs), list(ys), list(ids)
        n = len(xs)
        if index is None:
            index = [pd.RangeIndex(len(x)) for x in xs]
        if times is None:
            times = [pd.RangeIndex(len(x)) for x in xs]
        index, times = [pd.Index(i) for i in index], [pd.Index(t) for t in times]
        for name, seq in (("ys", ys), ("ids", ids), ("index", index), ("times", times)):
            if len(seq) != n:
                raise ValueError(f"SeriesDataset: got {n} xs but {len(seq)} {name}; "
                                 "expected one entry per series")
        feature_cols, target_cols = list(feature_cols), list(target_cols)
        for i, (x, y) in enumerate(zip(xs, ys)):
            if x.dim() != 2 or y.dim() != 2:
                raise ValueError(f"SeriesDataset: series {ids[i]!r}: expected x (T, F) and "
                                 f"y (T, n_targets), got shapes {tuple(x.shape)} and "
                                 f"{tuple(y.shape)}")
            if x.shape[0] != y.shape[0] or len(index[i]) != x.shape[0] \
                    or len(times[i]) != x.shape[0]:
                raise ValueError(f"SeriesDataset: series {ids[i]!r}: x has {x.shape[0]} rows, "
                                 f"y {y.shape[0]}, index {len(index[i])}, times "
                                 f"{len(times[i])}; expected the same number of rows")
            if x.shape[1] != len(feature_cols) or y.shape[1] != len(target_cols):
                raise ValueError(f"SeriesDataset: series {ids[i]!r}: x has {x.shape[1]} "
                                 f"columns and y {y.shape[1]}; expected {len(feature_cols)} "
                                 f"features {feature_cols} and {len(target_cols)} targets "
                                 f"{target_cols}")
        self._xs, self._ys = xs, ys
        self.ids = ids
        self.feature_cols, self.target_cols = feature_cols, target_cols
        self.index, self.times = index, times
        self.id_col, self.time_col = id_col, time_col
        self.categories = dict(categories or {})

    # -- Dataset protocol ------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._xs)

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` of series ``i``: shapes ``(T_i, F)`` and ``(T_i, n_targets)``."""
        return self._xs[i], self._ys[i]

    def __repr__(self) -> str:
        lengths = self.lengths
        span = f"{min(lengths)}..{max(lengths)}" if lengths else "-"
        return (f"SeriesDataset({len(self)} series, lengths {span}, "
                f"features={self.feature_cols}, targets={self.target_cols})")

    # -- shape information -----------------------------------------------------------
    @property
    def lengths(self) -> List[int]:
        """Number of time steps ``T_i`` of each series."""
        return [int(x.shape[0]) for x in self._xs]

    @property
    def n_features(self) -> int:
        return len(self.feature_cols)

    @property
    def n_targets(self) -> int:
        return len(self.target_cols)

    @property
    def xs(self) -> List[torch.Tensor]:
        """Feature tensors, one ``(T_i, F)`` per series (a new list; tensors shared)."""
        return list(self._xs)

    @property
    def ys(self) -> List[torch.Tensor]:
        """Target tensors, one ``(T_i, n_targets)`` per series (a new list; tensors shared)."""
        return list(self._ys)

    # -- new datasets from this one --------------------------------------------------
    def _meta(self) -> dict:
        return dict(ids=self.ids, feature_cols=self.feature_cols, target_cols=self.target_cols,
                    index=self.index, times=self.times, id_col=self.id_col,
                    time_col=self.time_col, categories=self.categories)

    def replace(self, xs: Optional[Sequence[torch.Tensor]] = None,
                ys: Optional[Sequence[torch.Tensor]] = None) -> "SeriesDataset":
        """A new dataset with the same series and metadata but other ``xs`` and/or ``ys``.

        Each replacement must have the shape of what it replaces (checked).
        """
        return SeriesDataset(self._xs if xs is None else xs, self._ys if ys is None else ys,
                             **self._meta())

    def subset(self, indices: Sequence[int]) -> "SeriesDataset":
        """A new dataset of the series at ``indices`` (in that order)."""
        idx = [int(i) for i in indices]
        for i in idx:
            if not -len(self) <= i < len(self):
                raise IndexError(f"series index {i} out of range for {len(self)} series")
        return SeriesDataset([self._xs[i] for i in idx], [self._ys[i] for i in idx],
                             ids=[self.ids[i] for i in idx], feature_cols=self.feature_cols,
                             target_cols=self.target_cols, index=[self.index[i] for i in idx],
                             times=[self.times[i] for i in idx], id_col=self.id_col,
                             time_col=self.time_col, categories=self.categories)

    def slice_steps(self, bounds: Sequence[Tuple[int, int]]) -> "SeriesDataset":
        """A new dataset keeping rows ``[start, stop)`` of each series (one pair per series)."""
        if len(bounds) != len(self):
            raise ValueError(f"slice_steps: got {len(bounds)} (start, stop) pairs for "
                             f"{len(self)} series")
        sl = [slice(int(a), int(b)) for a, b in bounds]
        return SeriesDataset([x[s] for x, s in zip(self._xs, sl)],
                             [y[s] for y, s in zip(self._ys, sl)],
                             ids=self.ids, feature_cols=self.feature_cols,
                             target_cols=self.target_cols,
                             index=[ix[s] for ix, s in zip(self.index, sl)],
                             times=[t[s] for t, s in zip(self.times, sl)], id_col=self.id_col,
                             time_col=self.time_col, categories=self.categories)

    def to_frame(self, values: Optional[Sequence[torch.Tensor]] = None,
                 columns: Optional[Sequence[str]] = None) -> pd.DataFrame:
        """Per-step values as a long frame indexed by the original frame's index labels.

        ``values``: one ``(T_i, k)`` (or ``(T_i,)``) tensor per series in dataset order, e.g.
        a model's predictions; default: the targets.  ``columns``: the ``k`` column names
        (default: ``target_cols`` when ``k`` matches, else ``pred_0..``).  The result has the
        id and time columns followed by the value columns, so
        ``df.join(dataset.to_frame(preds, ["pred"]))`` aligns predictions with the input.
        """
        values = self._ys if values is None else list(values)
        if len(values) != len(self):
            raise ValueError(f"to_frame: got {len(values)} value tensors for {len(self)} series")
        mats = []
        for i, v in enumerate(values):
            v = torch.as_tensor(v).detach().cpu()
            v = v.unsqueeze(-1) if v.dim() == 1 else v
            if v.dim() != 2 or v.shape[0] != self.lengths[i]:
                raise ValueError(f"to_frame: series {self.ids[i]!r} has {self.lengths[i]} "
                                 f"steps; expected values of shape ({self.lengths[i]}, k), "
                                 f"got {tuple(v.shape)}")
            mats.append(v.double().numpy())
        k = mats[0].shape[1] if mats else len(self.target_cols)
        if columns is None:
            columns = self.target_cols if k == len(self.target_cols) else \
                [f"pred_{j}" for j in range(k)]
        columns = list(columns)
        if len(columns) != k:
            raise ValueError(f"to_frame: {k} value columns but {len(columns)} names {columns}")
        index = self.index[0].append(self.index[1:]) if len(self) else pd.Index([])
        data = np.concatenate(mats) if mats else np.zeros((0, k))
        out = pd.DataFrame(data, index=index, columns=columns)
        id_name = self.id_col if self.id_col is not None else "id"
        time_name = self.time_col if self.time_col is not None else "time"
        out.insert(0, time_name, self.times[0].append(self.times[1:]) if len(self) else [])
        out.insert(0, id_name, np.repeat(np.array(self.ids, dtype=object), self.lengths)
                   if len(self) else [])
        return out
