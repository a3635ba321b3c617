"""``StandardScaler``: per-column mean/std standardisation of features or targets."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Union

import torch
from torch.nn.utils.rnn import PackedSequence

from ._dataset import SeriesDataset

Data = Union[SeriesDataset, PackedSequence, torch.Tensor, Sequence[torch.Tensor]]


class StandardScaler:
    """Standardise each column to mean 0 and std 1: ``(v - mean) / std``.

    Fit it on the training split only, then apply it to every split (and invert it on
    predictions).  One scaler handles one side of a dataset: the features ``x`` (default)
    or, with ``targets=True``, the targets ``y``; use two scalers to scale both.

    ``fit``/``transform``/``inverse_transform`` accept:
      * a ``SeriesDataset`` (reads/writes ``x``, or ``y`` when ``targets=True``;
        ``transform`` returns a new dataset, the input is not changed),
      * a tensor ``(..., C)`` or a ``PackedSequence`` whose ``.data`` is ``(N, C)``,
      * a list of tensors ``(T_i, C)`` (returns a list).
    ``C`` is the number of columns the scaler was fitted on.  Statistics are float64
    (population std, ``ddof=0``); a constant column gets std 1 so it maps to 0 instead
    of dividing by zero.

    Attributes (after ``fit``): ``mean``, ``std`` (float64 tensors ``(C,)``), ``columns``
    (column names when fitted on a dataset, else ``None``).

    >>> import pandas as pd
    >>> from vlrnn.data import StandardScaler, from_dataframe
    >>> df = pd.DataFrame({"id": [0, 0, 0, 1, 1], "t": [0, 1, 2, 0, 1],
    ...                    "u": [10.0, 20.0, 30.0, 40.0, 50.0], "y": [1.0, 2.0, 3.0, 4.0, 5.0]})
    >>> ds = from_dataframe(df, id_col="id", time_col="t", target_cols="y")
    >>> scaled = StandardScaler().fit(ds).transform(ds)
    >>> (x0, _), (x1, _) = scaled[0], scaled[1]
    >>> round(float(x0.mean()), 3), round(float(x1.mean()), 3)
    (-0.707, 1.061)
    """

    def __init__(self, *, targets: bool = False) -> None:
        self.targets = bool(targets)
        self.mean: Optional[torch.Tensor] = None
        self.std: Optional[torch.Tensor] = None
        self.columns: Optional[List[str]] = None

    def __repr__(self) -> str:
        side = "targets" if self.targets else "features"
        state = f"{len(self.mean)} columns" if self.mean is not None else "not fitted"
        return f"StandardScaler({side}, {state})"

    @property
    def fitted(self) -> bool:
        return self.mean is not None

    # -- helpers ---------------------------------------------------------------------
    def _side(self, ds: SeriesDataset):
        return (ds.ys, ds.target_cols) if self.targets else (ds.xs, ds.feature_cols)

    def _rows(self, data: Data) -> List[torch.Tensor]:
        """``data`` as a list of 2-D ``(rows, C)`` tensors (for fitting)."""
        if isinstance(data, SeriesDataset):
            return self._side(data)[0]
        if isinstance(data, PackedSequence):
            return [data.data]
        if isinstance(data, torch.Tensor):
            return [data.reshape(-1, data.shape[-1]) if data.dim() else data.reshape(1, 1)]
        out = list(data)
        for t in out:
            if not isinstance(t, torch.Tensor) or t.dim() != 2:
                raise TypeError("StandardScaler expects a SeriesDataset, a tensor, a "
                                "PackedSequence or a list of 2-D tensors (T_i, C); got a list "
                                f"holding {type(t).__name__}"
                                + (f" of shape {tuple(t.shape)}" if isinstance(t, torch.Tensor)
                                   else ""))
        return out

    def _check_fitted(self) -> None:
        if self.mean is None:
            raise RuntimeError("StandardScaler is not fitted; call fit(train) first")

    def _check_columns(self, n: int, names: Optional[Sequence[str]] = None) -> None:
        if n != len(self.mean):
            raise ValueError(f"StandardScaler was fitted on {len(self.mean)} columns "
                             f"{self.columns or ''}; got data with {n} columns")
        if names is not None and self.columns is not None and list(names) != self.columns:
            raise ValueError(f"StandardScaler was fitted on columns {self.columns}; got a "
                             f"dataset with {'target' if self.targets else 'feature'} "
                             f"columns {list(names)}")

    # -- fitting ---------------------------------------------------------------------
    def fit(self, data: Data) -> "StandardScaler":
        """Compute per-column mean and std over all rows of all series of ``data``."""
        rows = self._rows(data)
        if not rows or sum(int(r.shape[0]) for r in rows) == 0:
            raise ValueError("StandardScaler.fit: no rows to fit on")
        widths = {int(r.shape[1]) for r in rows}
        if len(widths) != 1:
            raise ValueError(f"StandardScaler.fit: series have different column counts "
                             f"{sorted(widths)}")
        # Two passes in float64: exact enough for long series of float32 values.
        n = sum(int(r.shape[0]) for r in rows)
        mean = sum(r.detach().double().sum(0).cpu() for r in rows) / n
        var = sum(((r.detach().double().cpu() - mean) ** 2).sum(0) for r in rows) / n
        std = var.sqrt()
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all()):
            raise ValueError("StandardScaler.fit: data has NaN or inf values")
        # A constant column: its std is 0 up to rounding of the mean; scale it by 1.
        std = torch.where(std <= 1e-12 * mean.abs().clamp_min(1.0), torch.ones_like(std), std)
        self.mean, self.std = mean, std
        self.columns = list(self._side(data)[1]) if isinstance(data, SeriesDataset) else None
        return self

    def fit_transform(self, data: Data) -> Any:
        return self.fit(data).transform(data)

    # -- applying --------------------------------------------------------------------
    def _apply(self, data: Data, inverse: bool) -> Any:
        self._check_fitted()

        def f(t: torch.Tensor) -> torch.Tensor:
            self._check_columns(int(t.shape[-1]) if t.dim() else 1)
            if not t.is_floating_point():
                raise TypeError(f"StandardScaler expects floating tensors, got {t.dtype}")
            mean, std = self.mean.to(t), self.std.to(t)
            return t * std + mean if inverse else (t - mean) / std

        if isinstance(data, SeriesDataset):
            tensors, names = self._side(data)
            self._check_columns(len(names), names)
            out = [f(t) for t in tensors]
            return data.replace(ys=out) if self.targets else data.replace(xs=out)
        if isinstance(data, PackedSequence):
            return data._replace(data=f(data.data))
        if isinstance(data, torch.Tensor):
            return f(data)
        return [f(t) for t in self._rows(data)]

    def transform(self, data: Data) -> Any:
        """``(v - mean) / std`` per column; same kind and shape as ``data``."""
        return self._apply(data, inverse=False)

    def inverse_transform(self, data: Data) -> Any:
        """``v * std + mean`` per column (undo ``transform``); same kind as ``data``."""
        return self._apply(data, inverse=True)

    # -- saving ----------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        """Plain tensors, lists and bools, so it can go into a checkpoint via ``torch.save``."""
        self._check_fitted()
        return {"mean": self.mean.clone(), "std": self.std.clone(),
                "columns": None if self.columns is None else list(self.columns),
                "targets": self.targets}

    def load_state_dict(self, state: Dict[str, Any]) -> "StandardScaler":
        missing = [k for k in ("mean", "std") if k not in state]
        if missing:
            raise ValueError(f"StandardScaler.load_state_dict: missing key(s) {missing}; "
                             f"got {sorted(state)}")
        mean = torch.as_tensor(state["mean"], dtype=torch.float64)
        std = torch.as_tensor(state["std"], dtype=torch.float64)
        if mean.shape != std.shape or mean.dim() != 1:
            raise ValueError(f"StandardScaler.load_state_dict: mean and std must both be (C,), "
                             f"got {tuple(mean.shape)} and {tuple(std.shape)}")
        self.mean, self.std = mean.clone(), std.clone()
        cols = state.get("columns")
        self.columns = None if cols is None else list(cols)
        self.targets = bool(state.get("targets", self.targets))
        return self
