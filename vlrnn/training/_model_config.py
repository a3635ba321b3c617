"""The model a saved config describes: the cell it names, resolved without running code
the file chooses, and the model built from it (:func:`build_model`)."""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Dict, Optional

from torch import nn

from ..engine._blockwise import Blockwise
from ..models import (
    MODELS,
    ConvFront,
    ConvThen,
    MeanOfModels,
    SequenceModel,
    StackedRNN,
    WithHead,
    build_named_model,
)

if TYPE_CHECKING:
    from ._task import Task

FUSED = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


def cell_name(cell: Any) -> str:
    """How the cell is recorded in the config: a fused name or ``module:qualname``."""
    if isinstance(cell, str):
        if cell.lower() not in FUSED and cell.lower() not in MODELS:
            raise ValueError(f"unknown cell {cell!r}; expected one of "
                             f"{sorted(FUSED) + sorted(MODELS)} or an nn.Module cell class "
                             "(run by vlrnn.models.StackedRNN)")
        return cell.lower()
    if isinstance(cell, type) and issubclass(cell, nn.Module):
        return f"{cell.__module__}:{cell.__qualname__}"
    raise ValueError(f"cell must be 'lstm', 'gru', 'rnn' or an nn.Module cell class called as "
                     f"cell(input_size, hidden_size), got {cell!r}")


# Cell classes a saved config may name and loading builds without being told: torch's
# own cells. Looked up in this table, never imported by the name a file gives.
KNOWN_CELLS: Dict[str, type] = {f"{c.__module__}:{c.__qualname__}": c
                                for c in (nn.LSTMCell, nn.GRUCell, nn.RNNCell)}


def _cell_class(name: str, cell_class: Optional[type], trusted: bool) -> type:
    """The cell class for a config's ``module:qualname``. A file never chooses which code
    runs: a known cell (:data:`KNOWN_CELLS`), the class the caller passes (checked against
    the recorded name), or, only with ``trusted=True``, the class the name imports."""
    module, _, qualname = name.partition(":")
    if cell_class is None and name in KNOWN_CELLS:
        return KNOWN_CELLS[name]
    if cell_class is not None:
        if getattr(cell_class, "__qualname__", None) != qualname:
            raise ValueError(f"the file records the cell {name!r}, but cell_class is "
                             f"{getattr(cell_class, '__qualname__', cell_class)!r}: pass the "
                             "class the model was trained with")
        return cell_class
    if not trusted:
        raise ValueError(f"the model uses the custom cell {name!r}: pass the class "
                         "(TrainedModel.load(path, cell_class=...); vlrnn predict "
                         "--cell-class FILE.py:CLASS); vlrnn does not import code a file "
                         "names, unless you trust the file (trusted=True)")
    try:
        obj: Any = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        raise ValueError(f"cannot import the model's cell class {name!r}; import the module "
                         "that defines it (at top level) before loading") from None
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        raise ValueError(f"the file's cell {name!r} is not an nn.Module class "
                         f"(it is {type(obj).__name__}); refusing to call it")
    return obj


def build_model(config: Dict[str, Any], task: Task, cell_class: Optional[type] = None, *,
                trusted: bool = False) -> nn.Module:
    """The model that the settings ``config`` (``cell``, ``n_features``, ``hidden_size``,
    ``num_layers``, ``front``, ``pool``, ``ensemble``, ``bidirectional``) describe for
    ``task``, in the current default dtype: ``rnn + Linear`` per step
    (:class:`~vlrnn.models.WithHead`), or for series tasks a
    :class:`~vlrnn.models.SequenceModel` reading ``config["pool"]``; ``task.n_outputs``
    output units. ``bidirectional`` (series tasks, fused cells): the rnn reads each
    series both ways, as ``vlrnn.Blockwise`` of a bidirectional ``nn.LSTM``/``nn.GRU``/
    ``nn.RNN`` (``config["block_len"]`` steps a block: the rnn's memory flat in the
    length; the front and the outputs are kept whole), its
    pools ``2 * hidden_size`` wide.

    Fused ``nn.LSTM``/``nn.GRU``/``nn.RNN`` for the named cells; the named models of
    :data:`vlrnn.models.MODELS` (``"mingru"``, ``"minlstm"``, ``"lru"``, ``"mamba"``,
    ``"qrnn"``) with their defaults; a
    :class:`~vlrnn.models.StackedRNN` of a custom cell class otherwise: ``cell_class``
    (its name must match the ``module:qualname`` the config records), or with
    ``trusted=True`` the class that name imports.
    """
    n_members = int(config.get("ensemble", 1) or 1)
    if n_members > 1:
        one = {**config, "ensemble": 1}
        return MeanOfModels([build_model(one, task, cell_class, trusted=trusted)
                             for _ in range(n_members)],
                            probabilities=task.kind == "classification")
    cell, n_in, hidden = config["cell"], config["n_features"], config["hidden_size"]
    layers = config["num_layers"]
    front = config.get("front")
    if front is not None:
        conv = ConvFront(n_in, front["channels"], front["kernel_sizes"],
                         norm=front.get("norm", "layer"), dilations=front.get("dilations"))
        n_in = conv.channels
    bidirectional = bool(config.get("bidirectional", False))
    if bidirectional and (cell not in FUSED or task.level != "series"):
        raise ValueError(f"bidirectional=True needs a series task and one of the cells "
                         f"{sorted(FUSED)}, got cell {cell!r} for a {task.level} task")
    if bidirectional:
        rnn: nn.Module = Blockwise(FUSED[cell](n_in, hidden, num_layers=layers,
                                               bidirectional=True),
                                   block_len=int(config["block_len"]))
        hidden *= 2
    elif cell in FUSED:
        rnn = FUSED[cell](n_in, hidden, num_layers=layers)
    elif cell in MODELS:  # a whole model by name (vlrnn.models.MODELS)
        rnn = build_named_model(cell, n_in, hidden, num_layers=layers)
    else:
        rnn = StackedRNN(n_in, hidden, num_layers=layers,
                         cell=_cell_class(cell, cell_class, trusted))
    if front is not None:
        skip = bool(front.get("skip", False))
        rnn = ConvThen(conv, rnn, skip=skip)
        hidden += conv.channels if skip else 0
    if task.level == "series":
        return SequenceModel(rnn, hidden, task.n_outputs, pool=config["pool"],
                             dropout=float(config.get("head_dropout") or 0.0))
    return WithHead(rnn, nn.Linear(hidden, task.n_outputs))
