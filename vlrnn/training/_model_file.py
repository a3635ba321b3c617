"""The file :meth:`vlrnn.TrainedModel.save` writes and :meth:`~vlrnn.TrainedModel.load`
reads: its layout (:data:`MODEL_FORMAT`), writing it atomically, and reading it back
checked (format, task, weights against the model its settings describe)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import pandas as pd
import torch
from torch import nn

from . import _checkpoint_files as ckpt_io
from ._model_config import build_model
from ._task import Task

#: the saved file's layout: ``/2`` stores the task (``Task.to_dict``) beside the model's
#: settings; ``/1`` files (development versions before the task type) are refused
MODEL_FORMAT = "vlrnn.TrainedModel/2"


def write_model_file(model: nn.Module, task: Task, settings: Dict[str, Any],
                     history: pd.DataFrame, path: Union[str, Path]) -> Path:
    """Write ``model``'s weights (on the CPU), ``task`` (:meth:`Task.to_dict`),
    ``settings`` and ``history`` (one record per epoch) to ``path`` atomically; plain
    values and tensors only. Returns the path written."""
    from .. import __version__

    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return ckpt_io.save_atomic({
        "format": MODEL_FORMAT, "vlrnn_version": __version__,
        "task": task.to_dict(), "config": dict(settings), "model": state,
        "history": history.to_dict("records")}, path)


def read_model_file(path: Union[str, Path], device: Union[str, torch.device, None] = None,
                    *, cell_class: Optional[type] = None, trusted: bool = False
                    ) -> Tuple[nn.Module, pd.DataFrame, Task, Dict[str, Any]]:
    """Read a file written by :func:`write_model_file`: ``(model, history, task,
    settings)``, the model rebuilt from the settings, its weights loaded, on ``device``
    (default CPU). ``cell_class`` and ``trusted`` as in :meth:`vlrnn.TrainedModel.load`.

    Raises:
        FileNotFoundError: no file at ``path``.
        vlrnn.CheckpointError: (a ``ValueError``) the file is damaged, truncated, not a
            vlrnn model, from an unknown version, or needs full unpickling.
        ValueError: the saved weights do not match the model the settings describe.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no saved model at {p}")
    data = ckpt_io.load(p, trusted=trusted)
    if data.get("format") == "vlrnn.TrainedModel/1":
        raise ckpt_io.CheckpointError(
            f"{p} was saved by a development version of vlrnn before the task type "
            f"(format 'vlrnn.TrainedModel/1'; this version reads {MODEL_FORMAT!r}): "
            "train the model again and save it")
    if data.get("format") != MODEL_FORMAT:
        raise ckpt_io.CheckpointError(
            f"{p} is not a saved vlrnn TrainedModel (format {data.get('format')!r}, "
            f"expected {MODEL_FORMAT!r}; a Trainer checkpoint resumes with --resume)")
    try:
        task = Task.from_dict(data["task"])
    except (KeyError, TypeError, ValueError) as err:
        raise ckpt_io.CheckpointError(f"{p}: the saved task is not valid: {err}") from None
    config = data["config"]
    model = build_model(config, task, cell_class, trusted=trusted).to(
        dtype=getattr(torch, config.get("dtype", "float32")))
    try:
        model.load_state_dict(data["model"])
    except RuntimeError as err:
        raise ValueError(f"{p}: saved weights do not match the model its config "
                         f"describes: {str(err).splitlines()[0]}") from None
    model.to(device or "cpu")
    history = pd.DataFrame(data.get("history", []))
    return model, history, task, config
