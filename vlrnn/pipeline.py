"""``pack_and_train``: from a long-format DataFrame to a trained model in one call.

Frame -> :func:`vlrnn.data.from_dataframe` -> split by series -> scalers fitted on the
training series -> length-bucketed packed batches -> ``rnn + Linear`` model ->
:class:`vlrnn.Trainer`. The result, a :class:`TrainedModel`, predicts on new frames
(inverse-scaled, aligned with the frame's rows) and saves to / loads from one file.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn.utils.rnn import pack_sequence, pad_packed_sequence

from . import checkpoint as ckpt_io
from .data import StandardScaler, from_dataframe, make_loader, split_series
from .models import StackedRNN, WithHead
from .trainer import Trainer, predict_blocks

FUSED = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
MODEL_FORMAT = "vlrnn.TrainedModel/1"


@dataclass
class Scalers:
    """The scalers fitted on the training series (``None`` when ``scale=False``)."""

    features: Optional[StandardScaler]
    targets: Optional[StandardScaler]

    def state_dict(self) -> Dict[str, Any]:
        return {"features": None if self.features is None else self.features.state_dict(),
                "targets": None if self.targets is None else self.targets.state_dict()}

    @classmethod
    def from_state_dict(cls, state: Dict[str, Any]) -> "Scalers":
        f, t = state.get("features"), state.get("targets")
        return cls(None if f is None else StandardScaler().load_state_dict(f),
                   None if t is None else StandardScaler(targets=True).load_state_dict(t))


def _cell_name(cell: Any) -> str:
    """How the cell is recorded in the config: a fused name or ``module:qualname``."""
    if isinstance(cell, str):
        if cell.lower() not in FUSED:
            raise ValueError(f"unknown cell {cell!r}; expected one of {sorted(FUSED)} or an "
                             "nn.Module cell class (run by vlrnn.models.StackedRNN)")
        return cell.lower()
    if isinstance(cell, type) and issubclass(cell, nn.Module):
        return f"{cell.__module__}:{cell.__qualname__}"
    raise ValueError(f"cell must be 'lstm', 'gru', 'rnn' or an nn.Module cell class called as "
                     f"cell(input_size, hidden_size), got {cell!r}")


def _cell_class(name: str) -> type:
    module, _, qualname = name.partition(":")
    try:
        obj: Any = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        raise ValueError(f"cannot import the model's cell class {name!r}; import the module "
                         "that defines it (at top level) before loading") from None
    return obj


def build_model(config: Dict[str, Any], cell_class: Optional[type] = None) -> WithHead:
    """The ``rnn + Linear`` model a config describes (``cell``, ``n_features``,
    ``hidden_size``, ``num_layers``, ``n_targets``), in the current default dtype.

    Fused ``nn.LSTM``/``nn.GRU``/``nn.RNN`` for the named cells; a
    :class:`~vlrnn.models.StackedRNN` of the cell class otherwise (``cell_class``, or
    imported by the ``module:qualname`` the config records).
    """
    cell, n_in, hidden = config["cell"], config["n_features"], config["hidden_size"]
    layers = config["num_layers"]
    if cell in FUSED:
        rnn: nn.Module = FUSED[cell](n_in, hidden, num_layers=layers)
    else:
        rnn = StackedRNN(n_in, hidden, num_layers=layers, cell=cell_class or _cell_class(cell))
    return WithHead(rnn, nn.Linear(hidden, config["n_targets"]))


class TrainedModel:
    """A model trained by :func:`pack_and_train`, with what it needs to predict.

    Attributes:
        model: the :class:`~vlrnn.models.WithHead` model (rnn + linear head).
        history: per-epoch ``pandas.DataFrame`` (see :class:`vlrnn.Trainer`); losses are
            in scaled target units when ``scale=True``.
        scaler: :class:`Scalers` with ``features`` and ``targets`` (``None`` if unscaled).
        config: plain dict describing data columns, model and training settings.
        trainer: the :class:`vlrnn.Trainer` that trained it (``None`` after ``load``).
    """

    def __init__(self, model: nn.Module, history: pd.DataFrame, scaler: Scalers,
                 config: Dict[str, Any], trainer: Optional[Trainer] = None):
        self.model = model
        self.history = history
        self.scaler = scaler
        self.config = config
        self.trainer = trainer

    def __repr__(self) -> str:
        c = self.config
        return (f"TrainedModel({c['cell']} {c['num_layers']}x{c['hidden_size']}, "
                f"{c['n_features']} features -> targets {c['target_cols']}, "
                f"{len(self.history)} epochs)")

    def _device_dtype(self):
        p = next(self.model.parameters())
        return p.device, p.dtype

    def predict(self, df: pd.DataFrame, *, batch_size: Optional[int] = None,
                block_len: Optional[int] = None) -> pd.DataFrame:
        """Per-step predictions for every row of ``df``.

        ``df`` needs the id, time and feature columns used in training (targets are not
        needed and not read). Each series runs from a zero state over all its rows, in
        time order, streamed in blocks of ``block_len`` steps.

        Returns:
            a frame with ``df``'s index (same rows, same order) and one column
            ``<target>_pred`` per target, in target units (inverse-scaled).
        """
        c = self.config
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"predict expects a pandas DataFrame, got {type(df).__name__}")
        need = [c["id_col"], c["time_col"], *c["feature_cols"]]
        missing = [col for col in need if col not in df.columns]
        if missing:
            raise ValueError(f"column(s) {missing} needed for prediction are not in the "
                             f"frame; it has columns {list(df.columns)}")
        device, dtype = self._device_dtype()
        # Positions as index labels so predictions land on rows whatever df's index is;
        # placeholder targets because the data layer wants them (never read).
        frame = df[need].reset_index(drop=True)
        for t in c["target_cols"]:
            frame[t] = 0.0
        ds = from_dataframe(frame, id_col=c["id_col"], time_col=c["time_col"],
                            target_cols=c["target_cols"], feature_cols=c["feature_cols"],
                            min_length=1, dtype=dtype)
        if self.scaler.features is not None:
            ds = self.scaler.features.transform(ds)
        out = np.full((len(df), len(c["target_cols"])), np.nan)
        bs = int(batch_size or c["batch_size"])
        order = sorted(range(len(ds)), key=lambda i: ds.lengths[i])  # similar lengths batched
        was_training = self.model.training
        self.model.eval()
        try:
            for s in range(0, len(order), bs):
                chunk = order[s:s + bs]
                x = pack_sequence([ds[i][0] for i in chunk], enforce_sorted=False).to(device)
                y, _ = predict_blocks(self.model, x, block_len=block_len or c["block_len"])
                padded, lengths = pad_packed_sequence(y, batch_first=True)  # chunk order
                for j, i in enumerate(chunk):
                    pred = padded[j, :int(lengths[j])]
                    if self.scaler.targets is not None:
                        pred = self.scaler.targets.inverse_transform(pred)
                    out[ds.index[i].to_numpy()] = pred.detach().cpu().double().numpy()
        finally:
            self.model.train(was_training)
        return pd.DataFrame(out, index=df.index, columns=[f"{t}_pred" for t in c["target_cols"]])

    def save(self, path: Union[str, Path]) -> Path:
        """Write model, scalers, config and history to one file (atomically)."""
        from . import __version__

        state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        return ckpt_io.save_atomic({
            "format": MODEL_FORMAT, "vlrnn_version": __version__, "config": dict(self.config),
            "model": state, "scaler": self.scaler.state_dict(),
            "history": self.history.to_dict("records")}, path)

    @classmethod
    def load(cls, path: Union[str, Path], device: Union[str, torch.device, None] = None
             ) -> "TrainedModel":
        """Read a file written by :meth:`save`; the model goes to ``device`` (default CPU)."""
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"no saved model at {p}")
        data = ckpt_io.load(p)
        if data.get("format") != MODEL_FORMAT:
            raise ValueError(f"{p} is not a saved vlrnn TrainedModel (format "
                             f"{data.get('format')!r}, expected {MODEL_FORMAT!r})")
        config = data["config"]
        model = build_model(config).to(dtype=getattr(torch, config.get("dtype", "float32")))
        try:
            model.load_state_dict(data["model"])
        except RuntimeError as err:
            raise ValueError(f"{p}: saved weights do not match the model its config "
                             f"describes: {str(err).splitlines()[0]}") from None
        model.to(device or "cpu")
        history = pd.DataFrame(data.get("history", []))
        return cls(model, history, Scalers.from_state_dict(data["scaler"]), config)


def pack_and_train(df: pd.DataFrame, *, id_col: str, time_col: str,
                   target_cols: Union[str, Sequence[str]],
                   feature_cols: Union[str, Sequence[str], None] = None, cell: Any = "lstm",
                   hidden_size: int = 64, num_layers: int = 2, block_len: int = 256,
                   batch_size: int = 16, epochs: int = 10, lr: float = 1e-3,
                   val_fraction: float = 0.2, seed: int = 0, scale: bool = True,
                   resume: Union[str, Path, None] = None, **trainer_options: Any) -> TrainedModel:
    """Train a recurrent sequence-to-sequence regressor on a long-format frame.

    Args:
        df: one row per (series, time step); series may have any lengths.
        id_col, time_col, target_cols, feature_cols: as in
            :func:`vlrnn.data.from_dataframe` (default features: every other column).
        cell: ``"lstm"``, ``"gru"``, ``"rnn"`` (fused ``nn.LSTM``/``nn.GRU``/``nn.RNN``), or
            an ``nn.Module`` cell class (run by :class:`~vlrnn.models.StackedRNN`; it must
            be importable by name to ``TrainedModel.load``).
        hidden_size, num_layers: size of the recurrent model; a ``Linear`` head maps each
            step's output to the targets.
        block_len: time steps per block of the exact-BPTT engine.
        batch_size: series per batch (series of similar lengths are batched together).
        epochs, lr: training length and Adam learning rate.
        val_fraction: share of whole series held out for validation (``0``: none).
        seed: seeds the split, the model's initialisation, shuffling and dropout.
        scale: standardise features and targets with statistics of the training series.
        resume: a checkpoint folder/file (see ``checkpoint_dir``) to continue from.
        **trainer_options: passed to :class:`vlrnn.Trainer` (``checkpoint_dir``,
            ``progress``, ``device``, ``clip_grad_norm``, ``early_stopping_patience``,
            ``scheduler``, ...).

    Returns:
        :class:`TrainedModel`. The loss is the per-row MSE summed over targets (in scaled
        units when ``scale``), averaged over rows.
    """
    if "optimizer" in trainer_options:
        raise TypeError("pack_and_train builds the model itself, so it cannot take an "
                        "optimizer; pass lr=, or scheduler= as a callable optimizer -> scheduler")
    cell_name = _cell_name(cell)
    dtype = torch.get_default_dtype()
    ds = from_dataframe(df, id_col=id_col, time_col=time_col, target_cols=target_cols,
                        feature_cols=feature_cols, dtype=dtype)
    if val_fraction:
        train, val = split_series(ds, val_fraction, seed=seed)
    else:
        train, val = ds, None
    scalers = Scalers(None, None)
    if scale:
        scalers = Scalers(StandardScaler().fit(train), StandardScaler(targets=True).fit(train))
        train = scalers.targets.transform(scalers.features.transform(train))
        if val is not None:
            val = scalers.targets.transform(scalers.features.transform(val))
    config = {
        "id_col": id_col, "time_col": time_col, "target_cols": list(ds.target_cols),
        "feature_cols": list(ds.feature_cols), "n_features": ds.n_features,
        "n_targets": ds.n_targets, "cell": cell_name, "hidden_size": int(hidden_size),
        "num_layers": int(num_layers), "block_len": int(block_len),
        "batch_size": int(batch_size), "lr": float(lr), "val_fraction": float(val_fraction),
        "seed": int(seed), "scale": bool(scale), "dtype": str(dtype).replace("torch.", ""),
    }
    train_loader = make_loader(train, batch_size=batch_size, shuffle=True, seed=seed)
    val_loader = None if val is None else make_loader(val, batch_size=batch_size,
                                                      shuffle=False)
    torch.manual_seed(seed)  # the model's initial weights depend on the seed alone
    model = build_model(config, cell_class=None if isinstance(cell, str) else cell)
    trainer = Trainer(model, nn.MSELoss(reduction="none"), lr=lr, block_len=block_len,
                      seed=seed, config=config, scaler_state=scalers.state_dict(),
                      **trainer_options)
    history = trainer.fit(train_loader, val_loader, epochs=epochs, resume=resume)
    return TrainedModel(trainer.model, history, scalers, config, trainer)
