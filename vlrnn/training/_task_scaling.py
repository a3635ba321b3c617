"""How a task's inputs and targets are scaled (``scale=`` of :func:`vlrnn.pack_and_train`).

Modes (:data:`SCALE_MODES`):

- ``"global"``: one mean/std per column from the training series
  (:class:`~vlrnn.data.StandardScaler`), for the features and numeric targets.
- ``"series"``: each series by its own statistics
  (:mod:`vlrnn.data._series_scaling`). Series tasks: the whole series' mean/std (the
  whole series is the input, so this reads nothing it should not). Per-step tasks and
  forecasts: causal, row ``t`` by the statistics of rows ``0..t`` only, so a prediction
  never depends on a later row. Forecast targets are the change from an anchor at the
  forecast's origin, in units of that series' mean absolute one-step change up to the
  origin; outputs get the scale and the anchor back. The anchor (``anchor=``,
  :data:`ANCHORS`) is a damped-trend exponential smoothing forecast from the origin's
  past (``"holt"``, the default: :func:`~vlrnn.data._smoothing.causal_holt`) or the last
  observed value (``"last"``). Forecast inputs are the
  causal z-scores beside the global ones (the training series' mean/std per column,
  which tell a series' level among the others) and each target's last one-step change in
  the targets' own unit (the local trend, in the units the forecast is a multiple of):
  ``2 F + K`` input features. Targets of per-step
  regression and of series regression (not among the inputs) keep the global scaler.
- ``None``: nothing scaled.

All methods take and return :class:`~vlrnn.data.SeriesDataset` objects whose ``xs`` are
the raw inputs (``(T_i, F)``) and whose ``ys`` are the task's targets
(:func:`vlrnn.training._frames.task_dataset`); datasets are never changed in place.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch

from ..data import SeriesDataset, StandardScaler
from ..data._series_scaling import causal_diff_scale, scale_series
from ..data._smoothing import causal_holt


class _TaskFields(Protocol):
    """What scaling reads of a task (:class:`vlrnn.training.Task`, which holds the
    scalers: a protocol here keeps the import one way)."""

    kind: str
    level: str
    horizon: int | None
    target_cols: tuple[str, ...]

    @property
    def target_inputs(self) -> list[int]: ...

__all__ = ["ANCHORS", "DEFAULT_ANCHOR", "SCALE_MODES", "Scalers", "check_anchor",
           "check_scale", "default_scale"]

SCALE_MODES = ("global", "series", None)
#: what a series-scaled forecast is the change from (``anchor=``)
ANCHORS = ("holt", "last")
#: ``anchor=None`` for series-scaled forecasts (docs/benchmarks/real-data.md)
DEFAULT_ANCHOR = "holt"


def default_scale(task: _TaskFields) -> str:
    """The mode ``scale=True`` means for a task (measurements:
    docs/benchmarks/real-data.md): ``"series"`` for forecasts (panels whose series
    differ in level by orders of magnitude; the forecast is a change from an anchor in
    the series' own units); ``"global"`` for every other task, where differences in
    level between series or steps often carry the class or the value (per-series
    scaling removes them; archive sets that are z-normalised per series already lose
    nothing)."""
    if task.horizon:
        return "series"
    return "global"


def check_scale(scale: Any, default: str | None) -> str | None:
    """``scale=`` as a mode: ``True`` -> ``default`` (the task's), ``False`` -> ``None``."""
    if scale is True:
        return default
    if scale is False or scale is None:
        return None
    if scale in ("global", "series"):
        return scale
    raise ValueError(f"scale must be 'global', 'series', None or True (the task's default), "
                     f"got {scale!r}")


def check_anchor(anchor: Any, per_step: bool) -> str | None:
    """``anchor=`` for a task: one of :data:`ANCHORS` (``None``: :data:`DEFAULT_ANCHOR`)
    where ``per_step`` (a series-scaled forecast), else it must be ``None``."""
    if anchor is not None and anchor not in ANCHORS:
        raise ValueError(f"anchor must be one of {ANCHORS} (or None for the default), got "
                         f"{anchor!r}")
    if not per_step:
        if anchor is not None:
            raise ValueError(f"anchor={anchor!r} sets what a forecast is the change from: "
                             "it needs a forecast (horizon=) with scale='series'")
        return None
    return DEFAULT_ANCHOR if anchor is None else anchor


@dataclass(frozen=True, eq=False)
class Scalers:
    """The scaling a model was trained with.

    Attributes:
        features: the global feature scaler (``mode="global"``, and series-scaled
            forecasts, whose inputs hold both), else ``None``.
        targets: the global target scaler (numeric targets, ``mode="global"``, and per-step
            or series regression under ``"series"``), else ``None``.
        mode: ``"global"``, ``"series"`` or ``None``.
        anchor: what a ``"series"`` forecast is the change from (:data:`ANCHORS`):
            ``"last"``, the last observed value at the origin, or ``"holt"``, the
            damped-trend smoothing forecast from the origin's past
            (:func:`~vlrnn.data._smoothing.causal_holt`); ``None`` for other tasks.
    """

    features: StandardScaler | None
    targets: StandardScaler | None
    mode: str | None = "global"
    anchor: str | None = None

    @classmethod
    def fit(cls, train: SeriesDataset, task: _TaskFields, mode: str | None,
            anchor: str | None = None) -> Scalers:
        """Fit on the raw training series for ``task`` (``anchor``: see the class;
        ``None`` -> :data:`DEFAULT_ANCHOR` for series-scaled forecasts)."""
        per_step = mode == "series" and bool(task.horizon)
        anchor = check_anchor(anchor, per_step)
        if mode is None:
            return cls(None, None, None)
        level, kind = task.level, task.kind
        h = task.horizon or 1
        targets = None
        if kind == "regression" and not (mode == "series" and task.horizon):
            targets = nan_scaler([y[:1] for y in train.ys] if level == "series"
                                 else train.ys, repeat=h)
        # series-scaled forecasts read the global z-scores beside the causal ones: the
        # level of a series among the others often carries its future (fertility panel)
        both = mode == "series" and bool(task.horizon)
        features = StandardScaler().fit(train) if mode == "global" or both else None
        return cls(features, targets, mode, anchor)

    # -- inputs ---------------------------------------------------------------------------
    def inputs(self, ds: SeriesDataset, task: _TaskFields) -> SeriesDataset:
        """The inputs as the model reads them."""
        if self.mode == "global" and self.features is not None:
            return self.features.transform(ds)
        if self.mode == "series":
            own = scale_series(ds.xs, causal=task.level != "series")
            if self.features is None:
                return ds.replace(xs=own)
            glob = self.features.transform(list(ds.xs))
            meta = ds._meta()
            cols = [*ds.feature_cols, *(f"{c}@global" for c in ds.feature_cols)]
            parts = [own, glob]
            if task.horizon:  # (always: ``features`` is set for forecasts only)
                parts.append([_changes(x, task) for x in ds.xs])
                cols += [f"{c}@change" for c in task.target_cols]
            meta["feature_cols"] = cols
            return SeriesDataset([torch.cat(p, dim=1) for p in zip(*parts)], ds.ys, **meta)
        return ds

    # -- targets --------------------------------------------------------------------------
    def _forecast_stats(self, xs: list[torch.Tensor], task: _TaskFields
                        ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``(loc, scale)`` ``(T_i, h * K)`` of each raw input series: the anchor's
        forecasts (the targets' last observed values, or their damped-trend smoothing
        forecasts) and the targets' causal mean absolute change repeated per step ahead."""
        nows = [x[:, task.target_inputs].double() for x in xs]
        h = int(task.horizon or 1)
        locs = causal_holt(nows, h) if self.anchor == "holt" else \
            [now.repeat(1, h) for now in nows]
        return [(loc, causal_diff_scale(now).repeat(1, h)) for loc, now in zip(locs, nows)]

    def _per_step(self, task: _TaskFields) -> bool:
        return self.mode == "series" and bool(task.horizon)

    def scale_targets(self, ds: SeriesDataset, task: _TaskFields) -> SeriesDataset:
        """``ds`` (raw inputs) with its numeric targets in the units the loss sees."""
        if self._per_step(task):
            names = [ds.feature_cols[c] for c in task.target_inputs]
            if names != list(task.target_cols):
                raise ValueError(f"expected the targets {list(task.target_cols)} as the last "
                                 f"inputs, got {names}")
            stats = self._forecast_stats(list(ds.xs), task)
            ys = [((y.double() - loc) / scale).to(y.dtype)
                  for y, (loc, scale) in zip(ds.ys, stats)]
            return ds.replace(ys=ys)
        if self.targets is not None:
            return self.targets.transform(ds)
        return ds

    def values(self, raw: torch.Tensor, x: torch.Tensor | None, task: _TaskFields
               ) -> torch.Tensor:
        """Model outputs -> target units.

        Args:
            raw: ``(T, n_out)`` outputs of one series (per-step tasks) or ``(B, n_out)``
                (series tasks, ``x=None``).
            x: the series' raw inputs ``(T, F)`` (needed by ``"series"`` forecasts).
        """
        if self._per_step(task):
            if x is None:
                raise ValueError("series-scaled forecasts need the series' raw inputs")
            return self.series_values([raw], [x], task)[0]
        if self.targets is not None:
            return self.targets.inverse_transform(raw)
        return raw

    def series_values(self, raws: list[torch.Tensor], xs: list[torch.Tensor],
                      task: _TaskFields) -> list[torch.Tensor]:
        """:meth:`values` of several series of a per-step task (``raws[i]`` ``(T_i,
        n_out)``, ``xs[i]`` the raw inputs ``(T_i, F)``), a forecast's anchors computed
        for all of them together rather than series by series."""
        if not self._per_step(task):
            return [self.values(r, x, task) for r, x in zip(raws, xs)]
        stats = self._forecast_stats(list(xs), task)
        return [r.double() * scale[-r.shape[0]:] + loc[-r.shape[0]:]
                for r, (loc, scale) in zip(raws, stats)]

    def __eq__(self, other: object) -> bool:
        """Same mode, anchor and fitted statistics (value by value)."""
        if not isinstance(other, Scalers):
            return NotImplemented
        return _same(self.state_dict(), other.state_dict())

    __hash__ = None  # type: ignore[assignment]

    # -- saving ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"features": None if self.features is None else self.features.state_dict(),
                "targets": None if self.targets is None else self.targets.state_dict(),
                "mode": self.mode, "anchor": self.anchor}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Scalers:
        f, t = state.get("features"), state.get("targets")
        mode = state.get("mode", "global" if f is not None else None)
        if mode not in SCALE_MODES:
            raise ValueError(f"saved scale mode must be one of {SCALE_MODES}, got {mode!r}")
        anchor = state.get("anchor")
        if anchor is None and mode == "series" and state.get("features") is not None:
            anchor = "last"   # written before anchors: forecasts were changes from it
        return cls(None if f is None else StandardScaler().load_state_dict(f),
                   None if t is None else StandardScaler(targets=True).load_state_dict(t),
                   mode, check_anchor(anchor, anchor is not None))


def _changes(x: torch.Tensor, task: _TaskFields) -> torch.Tensor:
    """``(T, K)``: each target's last one-step change in units of its causal mean
    absolute change (the unit the forecast targets are in; 0 at the first step)."""
    now = x[:, task.target_inputs].double()
    d = torch.zeros_like(now)
    d[1:] = now[1:] - now[:-1]
    return (d / causal_diff_scale(now)).to(x.dtype)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
                and a.shape == b.shape and bool(torch.equal(a.double(), b.double())))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def nan_scaler(ys: list[torch.Tensor], repeat: int = 1) -> StandardScaler:
    """A target ``StandardScaler`` from the observed (finite) values of ``ys``
    (``(T_i, K)`` each); columns repeated ``repeat`` times (one block per horizon step)."""
    rows = torch.cat([y.detach().double().cpu() for y in ys])
    k = rows.shape[1] // repeat
    rows = rows.reshape(-1, k) if repeat == 1 else rows[:, :k]
    seen = torch.isfinite(rows)
    n = seen.sum(0).clamp_min(1)
    zero = torch.zeros_like(rows)
    mean = torch.where(seen, rows, zero).sum(0) / n
    var = (torch.where(seen, rows - mean, zero) ** 2).sum(0) / n
    std = var.sqrt()
    std = torch.where(std <= 1e-12 * mean.abs().clamp_min(1.0), torch.ones_like(std), std)
    return StandardScaler(targets=True).load_state_dict(
        {"mean": mean.repeat(repeat), "std": std.repeat(repeat), "targets": True})
