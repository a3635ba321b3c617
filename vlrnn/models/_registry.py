"""Whole recurrent models by name: what ``pack_and_train(cell=...)`` and ``vlrnn train
--cell`` build besides the fused torch RNNs. Each entry is called as
``builder(input_size, hidden_size, num_layers=...)`` and returns a model with
``hidden_size`` output features under vlrnn's ``(x, state) -> (y, state)`` contract."""
from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ._lru import LRU
from ._mamba import Mamba
from ._min_rnn import MinGRU, MinLSTM
from ._qrnn import QRNN

__all__ = ["MODELS", "build_named_model"]

#: name -> model class, each called as ``cls(input_size, hidden_size, num_layers=...)``
MODELS: dict[str, Callable[..., nn.Module]] = {
    "qrnn": QRNN, "mingru": MinGRU, "minlstm": MinLSTM, "lru": LRU, "mamba": Mamba}


def build_named_model(name: str, input_size: int, hidden_size: int, num_layers: int = 1,
                      **options) -> nn.Module:
    """``MODELS[name](input_size, hidden_size, num_layers=num_layers, **options)``, or a
    ``ValueError`` naming the known models.

    >>> from vlrnn.models import MODELS, build_named_model
    >>> "mingru" in MODELS
    True
    >>> model = build_named_model("qrnn", input_size=3, hidden_size=8, num_layers=2)
    >>> type(model).__name__
    'QRNN'
    """
    try:
        make = MODELS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(MODELS)}") from None
    return make(input_size, hidden_size, num_layers=num_layers, **options)
