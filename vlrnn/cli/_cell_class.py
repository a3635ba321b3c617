"""``vlrnn predict --cell-class SPEC``: the custom cell class a saved model needs, named on
the command line as ``FILE.py:CLASS`` or ``MODULE:CLASS`` (``CLASS`` may be dotted,
``Outer.Inner``).

The class is the caller's own code, imported because the caller named it: the model file
still never chooses what runs (``TrainedModel.load`` checks the class against the name the
file records)."""
from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any


def load_cell_class(spec: str) -> type:
    """The class ``spec`` names: ``path/to/cells.py:MyCell`` runs that file as a module,
    ``package.module:MyCell`` imports the module; either way ``MyCell`` must be an
    ``nn.Module`` subclass.

    >>> load_cell_class("torch.nn:GRUCell")
    <class 'torch.nn.modules.rnn.GRUCell'>

    Raises:
        ValueError: ``spec`` is not ``FILE.py:CLASS`` or ``MODULE:CLASS``, the module has
            no such name, or it is not an ``nn.Module`` class.
        FileNotFoundError: the file does not exist.
        ImportError: the module cannot be imported.
    """
    from torch import nn

    where, sep, qualname = spec.rpartition(":")
    if not sep or not where or not qualname:
        raise ValueError(f"--cell-class expects FILE.py:CLASS or MODULE:CLASS, got {spec!r}")
    obj: Any = _module(where)
    for part in qualname.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"--cell-class {spec}: {where} defines no {qualname!r}")
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        raise ValueError(f"--cell-class {spec}: {qualname!r} is not an nn.Module class "
                         f"(it is {type(obj).__name__})")
    return obj


def _module(where: str) -> Any:
    """The module of a ``.py`` file (run under a name of its own) or of an import path."""
    if not where.endswith(".py"):
        return importlib.import_module(where)
    path = Path(where)
    if not path.is_file():
        raise FileNotFoundError(f"--cell-class: no file {path}")
    name = f"_vlrnn_cell_class_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"--cell-class: cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # as an import does: dataclasses and pickling look it up
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
