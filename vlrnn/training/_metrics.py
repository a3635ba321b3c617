"""Scores in the target's own units: accuracy, MAE, RMSE, and the naive baselines'.

``epoch_metrics`` builds the ``metrics=`` callable a :class:`vlrnn.Trainer` calls after
each epoch on the validation batches; ``regression_scores`` and ``classification_scores``
are what ``TrainedModel.evaluate`` reports. Missing (NaN) targets count nowhere: every
mean divides by the observed targets only.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from ..engine._bptt import block_loss, block_outputs
from ._helpers import engine_block_len

if TYPE_CHECKING:
    from ._task import Task


def regression_scores(pred: np.ndarray, true: np.ndarray, prefix: str = "") -> Dict[str, float]:
    """``{prefix}mae``, ``{prefix}rmse`` over the entries where ``true`` and ``pred`` are
    finite (same shapes)."""
    pred, true = np.asarray(pred, dtype=float), np.asarray(true, dtype=float)
    seen = np.isfinite(true) & np.isfinite(pred)
    if not seen.any():
        return {f"{prefix}mae": float("nan"), f"{prefix}rmse": float("nan")}
    err = pred[seen] - true[seen]
    return {f"{prefix}mae": float(np.abs(err).mean()),
            f"{prefix}rmse": float(np.sqrt((err ** 2).mean()))}


def classification_scores(pred: np.ndarray, true: np.ndarray, prefix: str = ""
                          ) -> Dict[str, float]:
    """``{prefix}accuracy`` over the entries where ``true`` (class ids, NaN = missing)
    is observed."""
    true = np.asarray(true, dtype=float)
    seen = np.isfinite(true)
    if not seen.any():
        return {f"{prefix}accuracy": float("nan")}
    return {f"{prefix}accuracy": float((np.asarray(pred)[seen] == true[seen]).mean())}


def epoch_metrics(task: Task, block_len: int
                  ) -> Callable[[nn.Module, Iterable], Dict[str, float]]:
    """The per-epoch ``metrics(model, batches)`` of a task (see :class:`vlrnn.Trainer`).

    Step tasks compare each packed output row with the same target row; series tasks
    read ``model.readout`` of each sequence's final state. Regression values are
    inverse-scaled by the task's global target scaler first, so MAE and RMSE are in
    target units (series-scaled forecasts: in the scaled units the loss sees).
    """
    level, targets = task.level, task.scalers.targets
    classify = task.kind == "classification"

    def outputs(model: nn.Module, x: Any) -> torch.Tensor:
        if level == "series":
            # only the final states: the outputs of every step would take memory that
            # grows with the series length (block_loss without a loss streams the blocks)
            steps = engine_block_len(model, x, block_len)
            return model.readout(block_loss(model, None, x, None, block_len=steps).state)
        y, _ = block_outputs(model, x, block_len=block_len)
        return y.data if isinstance(y, PackedSequence) else y.reshape(-1, y.shape[-1])

    def metrics(model: nn.Module, batches: Iterable) -> Dict[str, float]:
        preds, trues = [], []
        for x, y in batches:
            out = outputs(model, x)
            true = y.data if isinstance(y, PackedSequence) else y.reshape(out.shape[0], -1)
            if classify:
                preds.append(out.argmax(1).double().cpu().numpy())
                trues.append(true[:, 0].double().cpu().numpy())
            else:
                if targets is not None:
                    out, true = targets.inverse_transform(out), targets.inverse_transform(
                        true.to(out.dtype))
                preds.append(out.double().cpu().numpy())
                trues.append(true.double().cpu().numpy())
        pred, true = np.concatenate(preds), np.concatenate(trues)
        if classify:
            return classification_scores(pred, true)
        return regression_scores(pred, true)

    return metrics
