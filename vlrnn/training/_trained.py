"""``TrainedModel``: a model trained by :func:`vlrnn.pack_and_train` with what it needs to
predict, forecast, evaluate and be saved: its :class:`~vlrnn.training._task.Task` (task,
columns, classes, scalers, horizon, baselines) and the settings its model was built from."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn.utils.rnn import pack_sequence, pad_packed_sequence

from ..data import SeriesDataset
from ..data._smoothing import causal_holt
from ..engine._bptt import block_loss
from ._forecast_metrics import (
    drift_forecasts,
    naive_scale,
    scaled_scores,
    seasonal_naive_forecasts,
)
from ._frames import task_dataset
from ._helpers import engine_block_len
from ._metrics import classification_scores, regression_scores
from ._model_file import read_model_file, write_model_file
from ._predict import predict_blocks
from ._task import Task, split_config
from ._task_scaling import Scalers
from ._tasks import extend_times, regular_step
from ._trainer import Trainer


class TrainedModel:
    """A model trained by :func:`vlrnn.pack_and_train`, with what it needs to predict.

    Attributes:
        model: the model (:class:`~vlrnn.models.WithHead` for per-step tasks,
            :class:`~vlrnn.models.SequenceModel` for series tasks).
        history: per-epoch ``pandas.DataFrame`` (see :class:`vlrnn.Trainer`); losses in
            scaled target units, ``val_mae``/``val_rmse`` in target units.
        task: the :class:`~vlrnn.training._task.Task` (frozen): what it predicts, from
            which columns, classes, scalers, horizon, season, baselines.
        settings: plain dict of the model and training settings (``cell``,
            ``hidden_size``, ``num_layers``, ``n_features``, ``lr``, ``recipe``, ...).
        trainer: the :class:`vlrnn.Trainer` that trained it (``None`` after ``load``).

    Built as ``TrainedModel(model, history, task, settings)``, or as
    ``TrainedModel(model, history, scalers, config)`` from one flat dict laid out as
    :attr:`config` (e.g. another model's, for one member of an ensemble).

    >>> import tempfile, pathlib
    >>> import numpy as np, pandas as pd
    >>> import vlrnn
    >>> rng = np.random.default_rng(0)
    >>> df = pd.DataFrame({"id": np.repeat([0, 1, 2, 3], 30), "t": np.tile(range(30), 4),
    ...                    "x": rng.normal(size=120)})
    >>> labels = pd.Series(["up", "down", "up", "down"], index=[0, 1, 2, 3])
    >>> model = vlrnn.pack_and_train(df, id_col="id", time_col="t", series_target=labels,
    ...                              hidden_size=8, num_layers=1, steps=20, progress=False)
    >>> model.classes
    ['down', 'up']
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "model.pt"
    >>> _ = model.save(path)                                 # returns the path
    >>> again = vlrnn.TrainedModel.load(path)                  # checksum verified, no code run
    >>> again.predict(df).equals(model.predict(df))
    True
    """

    def __init__(self, model: nn.Module, history: pd.DataFrame, task: Union[Task, Scalers],
                 settings: Dict[str, Any], trainer: Optional[Trainer] = None):
        if isinstance(task, Scalers):  # (scalers, one flat dict laid out as .config)
            task, settings = split_config(settings, task)
        if not isinstance(task, Task):
            raise TypeError(f"TrainedModel expects a Task (or Scalers and a config laid out "
                            f"as TrainedModel.config), got {type(task).__name__}")
        self.model = model
        self.history = history
        self.task = task
        self.settings = dict(settings)
        self.trainer = trainer

    @property
    def config(self) -> Dict[str, Any]:
        """Everything as one plain dict (a new copy): the settings, the task's fields
        (:meth:`Task.describe`: lists, the scale mode) and ``task``, its kind."""
        return {**self.settings, **self.task.describe(), "task": self.task.kind}

    @property
    def scaler(self) -> Scalers:
        """The fitted scalers (``task.scalers``)."""
        return self.task.scalers

    def __repr__(self) -> str:
        c, t = self.settings, self.task
        what = f"series {t.kind}" if t.level == "series" else t.kind
        if t.horizon:
            what = f"forecast {t.horizon} steps of"
        targets = list(t.target_cols) or ""
        return (f"TrainedModel({c['cell']} {c['num_layers']}x{c['hidden_size']}, "
                f"{len(t.feature_cols)} features -> {what} {targets}, "
                f"{len(self.history)} epochs)").replace(" , ", ", ").replace("  ", " ")

    @property
    def classes(self) -> Optional[List[Any]]:
        """Class labels in id order (classification), else ``None``."""
        return None if self.task.classes is None else list(self.task.classes)

    # -- running the model -------------------------------------------------------------
    def _dataset(self, df: pd.DataFrame, with_targets: bool, series_target: Any = None
                 ) -> SeriesDataset:
        t = self.task
        if with_targets and t.level == "series" and series_target is None:
            series_target = t.label_col
            if series_target is None:
                raise ValueError("this model was trained with series_target given as labels; "
                                 "pass evaluate(df, series_target=labels)")
        ds, _ = task_dataset(df, t, with_targets=with_targets, series_target=series_target,
                             min_length=1)
        return ds  # raw inputs: _outputs scales them

    def _outputs(self, ds: SeriesDataset, batch_size: Optional[int],
                 block_len: Optional[int]) -> List[torch.Tensor]:
        """The model's raw outputs per series, dataset order: ``(T_i, n_out)`` per step,
        ``(n_out,)`` per series (head on the final state); ``ds`` holds raw inputs."""
        c = self.settings
        ds = self.scaler.inputs(ds, self.task)
        p = next(self.model.parameters())
        bs = int(batch_size or c["batch_size"])
        order = sorted(range(len(ds)), key=lambda i: ds.lengths[i])  # similar lengths batched
        out: List[Optional[torch.Tensor]] = [None] * len(ds)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                for s in range(0, len(order), bs):
                    chunk = order[s:s + bs]
                    x = pack_sequence([ds[i][0] for i in chunk], enforce_sorted=False)
                    x = x.to(device=p.device, dtype=p.dtype)
                    steps = block_len or c["block_len"]
                    if self.task.level == "series":
                        # the final states only: no outputs kept, memory flat in the length
                        state = block_loss(self.model, None, x, None,
                                           block_len=engine_block_len(self.model, x, steps)
                                           ).state
                        rows = self.model.readout(state)  # chunk order
                        for j, i in enumerate(chunk):
                            out[i] = rows[j].double().cpu()
                        continue
                    y, _ = predict_blocks(self.model, x, block_len=steps)
                    padded, lengths = pad_packed_sequence(y, batch_first=True)  # chunk order
                    for j, i in enumerate(chunk):
                        out[i] = padded[j, :int(lengths[j])].double().cpu()
        finally:
            self.model.train(was_training)
        return out  # type: ignore[return-value]

    def _values(self, raw: torch.Tensor, x: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Regression outputs in target units (``x``: the series' raw inputs ``(T, F)``,
        which per-series scaled forecasts read their level and scale from)."""
        return self.scaler.values(raw, x, self.task)

    def _step_values(self, outs: List[torch.Tensor], ds: SeriesDataset) -> List[torch.Tensor]:
        """:meth:`_values` of every series of a per-step task at once (``ds``: the raw
        inputs)."""
        return self.scaler.series_values(outs, list(ds.xs), self.task)

    # -- public --------------------------------------------------------------------------
    def predict(self, df: pd.DataFrame, *, batch_size: Optional[int] = None,
                block_len: Optional[int] = None) -> pd.DataFrame:
        """Predictions for the series of ``df`` (targets are not needed and not read).

        Each series runs from a zero state over all its rows, in time order, streamed in
        blocks of ``block_len`` steps.

        Returns:
            For per-step tasks, a frame with ``df``'s index (same rows, same order): one
            column ``<target>_pred`` per target (target units, or the class label), for
            classification also ``prob_<class>`` per class; with a horizon, column
            ``<target>_h<k>`` is the forecast made at that row for ``k`` steps later.
            For series tasks, a frame indexed by series id (named as the id column) with
            ``prediction`` (label or value) and, for classification, ``prob_<class>``.
        """
        t = self.task
        ds = self._dataset(df, with_targets=False)
        outs = self._outputs(ds, batch_size, block_len)
        if t.level == "series":
            return self._series_frame(ds, outs)
        if self.classes is not None:
            prob = [torch.softmax(o, dim=1) for o in outs]
            cols = [f"{t.target_cols[0]}_pred"] + [f"prob_{k}" for k in self.classes]
            values = [torch.cat([p.argmax(1, keepdim=True).double(), p], 1) for p in prob]
        else:
            values = self._step_values(outs, ds)
            cols = self._value_columns()
        n = len(df)
        mat = np.full((n, len(cols)), np.nan)
        for ix, v in zip(ds.index, values):
            mat[ix.to_numpy()] = v.numpy()
        res = pd.DataFrame(mat, index=df.index, columns=cols)
        if self.classes is not None:
            res[cols[0]] = pd.Series(np.array(self.classes, dtype=object)[
                mat[:, 0].astype(int)], index=df.index)
        return res

    def _value_columns(self) -> List[str]:
        t = self.task
        if t.horizon:
            return [f"{c}_h{k}" for k in range(1, t.horizon + 1) for c in t.target_cols]
        return [f"{c}_pred" for c in t.target_cols]

    def _series_frame(self, ds: SeriesDataset, outs: List[torch.Tensor]) -> pd.DataFrame:
        index = pd.Index(ds.ids, name=self.task.id_col)
        raw = torch.stack(outs) if outs else torch.zeros(0, self.task.n_outputs)
        if self.classes is None:
            return pd.DataFrame({"prediction": self._values(raw)[:, 0].numpy()}, index=index)
        prob = torch.softmax(raw, dim=1).numpy()
        res = pd.DataFrame({"prediction": np.array(self.classes, dtype=object)[
            prob.argmax(1)]}, index=index)
        for j, k in enumerate(self.classes):
            res[f"prob_{k}"] = prob[:, j]
        return res

    def forecast(self, df: pd.DataFrame, *, batch_size: Optional[int] = None,
                 block_len: Optional[int] = None) -> pd.DataFrame:
        """The ``horizon`` steps after each series' last time stamp.

        Reads every row of each series of ``df`` (features and the targets' own values),
        and extends its time column by the series' regular step (an error naming the
        series if its steps differ).

        Returns:
            a long frame with the id and time columns and one column per target, ``h``
            rows per series (series in sorted id order, time ascending).
        """
        t = self.task
        h = t.horizon
        if not h:
            raise ValueError("forecast needs a model trained with horizon=h; this one "
                             "predicts " + ("one label per series" if t.level ==
                                            "series" else "the targets at every step")
                             + " (use predict)")
        ds = self._dataset(df, with_targets=False)
        steps = [regular_step(s, i, t.time_col) for i, s in zip(ds.ids, ds.times)]
        outs = self._outputs(ds, batch_size, block_len)
        K = len(t.target_cols)
        rows = []
        for i, (sid, v) in enumerate(zip(ds.ids, self._step_values(outs, ds))):
            last = v[-1].reshape(h, K).numpy()
            for k, when in enumerate(extend_times(ds.times[i], steps[i], h)):
                rows.append([sid, when, *last[k]])
        return pd.DataFrame(rows, columns=[t.id_col, t.time_col, *t.target_cols])

    def evaluate(self, df: pd.DataFrame, series_target: Any = None, *,
                 season: Optional[int] = None, batch_size: Optional[int] = None,
                 block_len: Optional[int] = None) -> Dict[str, float]:
        """Scores on ``df`` (which holds the targets) next to a naive baseline's.

        Classification: ``accuracy`` and ``majority_accuracy`` (always the training
        set's most common class). Regression and forecasts, in target units: ``mae``,
        ``rmse`` and ``persistence_mae``, ``persistence_rmse``, where persistence
        predicts the last observed value: the previous step's target (per-step), the
        value at the forecast's origin for every step ahead (horizon), and for a series
        regression, which has no earlier value, the training series' mean label.
        Forecasts also get ``mase`` and ``smape`` with ``persistence_mase``,
        ``persistence_smape``, ``drift_mase``, ``drift_smape``, ``holt_mase`` and
        ``holt_smape`` beside them (the ``h`` steps after every origin; drift = the last
        value plus the mean change since the series' first value per step ahead; holt =
        the damped-trend smoothing forecast ``anchor="holt"`` adds the network's
        correction to, :func:`~vlrnn.data._smoothing.causal_holt`; MASE divided by each series' own in-sample
        one-step naive MAE, see :mod:`vlrnn.training._forecast_metrics`); where the series'
        season is known (``season=`` here or of ``pack_and_train``),
        ``seasonal_naive_mase`` and ``seasonal_naive_smape`` too (the value one season
        before each step ahead). Missing targets count nowhere.

        ``series_target``: the labels, for a model trained on labels given as a Series;
        default: the column it was trained with.
        """
        t = self.task
        if season is not None:
            if not t.horizon:
                raise ValueError("season= gives forecasts a seasonal naive baseline; this "
                                 "model does not forecast (trained without horizon=)")
            t = t.replace(season=season)  # checked as the task checks it
        ds = self._dataset(df, with_targets=True, series_target=series_target)
        outs = self._outputs(ds, batch_size, block_len)
        if t.level == "series":
            true = np.array([float(y[0, 0]) for y in ds.ys])
            raw = torch.stack(outs)
            if self.classes is not None:
                return self._class_scores(raw.argmax(1).numpy(), true)
            pred = self._values(raw)[:, 0].numpy()
            base = np.full_like(true, t.mean_label)
            return {**regression_scores(pred, true),
                    **regression_scores(base, true, "persistence_")}
        if self.classes is not None:
            pred = np.concatenate([o.argmax(1).numpy() for o in outs])
            true = np.concatenate([y[:, 0].double().numpy() for y in ds.ys])
            return self._class_scores(pred, true)
        preds = [v.numpy() for v in self._step_values(outs, ds)]
        trues = [y.double().numpy() for y in ds.ys]
        bases = [self._persistence(ds, i) for i in range(len(ds))]
        pred, true, base = (np.concatenate(v) for v in (preds, trues, bases))
        scores = {**regression_scores(pred, true),
                  **regression_scores(base, true, "persistence_")}
        if t.horizon:
            scores.update(_forecast_scores(t, ds, preds, trues, bases))
        return scores

    def _class_scores(self, pred: np.ndarray, true: np.ndarray) -> Dict[str, float]:
        major = self.classes.index(self.task.majority_class)
        return {**classification_scores(pred, true),
                **classification_scores(np.full(len(true), major), true, "majority_")}

    def _persistence(self, ds: SeriesDataset, i: int) -> np.ndarray:
        """The last observed value at each row, laid out as the targets ``ds.ys[i]``."""
        t = self.task
        y = ds.ys[i].double().numpy()
        if t.horizon:
            now = ds[i][0][:, t.target_inputs].double()  # raw inputs
            return np.tile(now.numpy(), (1, t.horizon))
        prev = pd.DataFrame(y).ffill().shift(1).to_numpy()
        return prev

    # -- saving ----------------------------------------------------------------------------
    def save(self, path: Union[str, Path]) -> Path:
        """Write the model's weights, its task (:meth:`Task.to_dict`: columns, classes,
        scalers, horizon, baselines), its settings and the history to one file
        (atomically); plain values and tensors only (``torch.load(weights_only=True)``
        reads it). The layout: :mod:`vlrnn.training._model_file`."""
        return write_model_file(self.model, self.task, self.settings, self.history, path)

    @classmethod
    def load(cls, path: Union[str, Path], device: Union[str, torch.device, None] = None, *,
             cell_class: Optional[type] = None, trusted: bool = False) -> "TrainedModel":
        """Read a file written by :meth:`save`; the model goes to ``device`` (default CPU).

        Nothing in the file runs: it loads with ``weights_only=True`` and its checksum is
        verified. A model of a custom cell needs ``cell_class=`` (the class it was trained
        with); ``trusted=True`` instead imports the class the file names, and allows
        full unpickling: only for files whose source you trust.

        Raises:
            FileNotFoundError: no file at ``path``.
            vlrnn.CheckpointError: (a ``ValueError``) the file is damaged, truncated, not
                a vlrnn model, from an unknown version, or needs full unpickling.
        """
        model, history, task, config = read_model_file(path, device, cell_class=cell_class,
                                                       trusted=trusted)
        return cls(model, history, task, config)



def _forecast_scores(task: Task, ds: SeriesDataset, preds: List[np.ndarray],
                     trues: List[np.ndarray], bases: List[np.ndarray]) -> Dict[str, float]:
    """MASE and sMAPE of the model, persistence, drift, the damped-trend smoothing
    of ``anchor="holt"`` and (``task.season``) seasonal naive, over every origin's ``h``
    steps; ``ds`` holds the raw inputs."""
    h, K = task.horizon or 1, len(task.target_cols)
    now = [ds[i][0][:, task.target_inputs].double().numpy() for i in range(len(ds))]
    # the series' observed targets: origin values, then the last origin's h steps
    seen = [np.concatenate([v[:1], y[:, :K]]) for v, y in zip(now, trues)]
    scales = [np.tile(naive_scale(v), h) for v in seen]
    drift = [drift_forecasts(v, h) for v in now]
    holt = [f.numpy() for f in causal_holt([torch.from_numpy(v) for v in now], h)]
    out = {**scaled_scores(preds, trues, scales),
           **scaled_scores(bases, trues, scales, "persistence_"),
           **scaled_scores(drift, trues, scales, "drift_"),
           **scaled_scores(holt, trues, scales, "holt_")}
    if task.season:
        seasonal = [seasonal_naive_forecasts(v, h, task.season) for v in now]
        out.update(scaled_scores(seasonal, trues, scales, "seasonal_naive_"))
    return out
