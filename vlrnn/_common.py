"""Rules that many modules share, written once: the batch type, argument checks, how an
error message lists offending values, and what state a torch RNN expects.

A leaf module: it imports nothing from vlrnn, so every subpackage may import it.
"""
from __future__ import annotations

from typing import Any, Callable, List, Sequence, Tuple, Union

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

# A batch of sequences as the engine and the models take it: a PackedSequence, or a
# dense tensor (T, B, F) (B, T, F when batch-first).
Batch = Union[torch.Tensor, PackedSequence]

SHOW = 5  # how many offending values an error message lists


def show(items: Sequence[Any], n: int = SHOW, fmt: Callable[[Any], str] = repr) -> str:
    """The first ``n`` of ``items`` for an error message, and how many there are in all.

    >>> show(range(8))
    '0, 1, 2, 3, 4, ... (8 in all)'
    """
    items = list(items)
    text = ", ".join(fmt(i) for i in items[:n])
    return text + (f", ... ({len(items)} in all)" if len(items) > n else "")


def positive_int(name: str, value: Any) -> int:
    """``value`` if it is an int >= 1 (not a bool), else a ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be a positive int, got {value!r} ({type(value).__name__})")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def probability(name: str, value: Any) -> float:
    """``value`` as a float in ``[0, 1)``, else a ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1), got {value!r}")
    return float(value)


def check_rnn_state(rnn: nn.RNNBase, state: Any, n_batch: int) -> List[torch.Tensor]:
    """The initial state a torch RNN expects (``(h_0, c_0)`` for an LSTM, ``h_0``
    otherwise, each ``(layers * directions, B, H)``), as a list of its tensors, or a
    ``ValueError`` that says what was expected and what came."""
    n_lay = rnn.num_layers * (2 if rnn.bidirectional else 1)
    name = type(rnn).__name__
    shapes: List[Tuple[int, ...]]
    if isinstance(rnn, nn.LSTM):
        h_out = getattr(rnn, "proj_size", 0) or rnn.hidden_size
        shapes, form = [(n_lay, n_batch, h_out), (n_lay, n_batch, rnn.hidden_size)], \
            "a pair (h_0, c_0)"
        ok = isinstance(state, (tuple, list)) and len(state) == 2 and all(
            isinstance(t, torch.Tensor) for t in state)
        got = list(state) if ok else []
    else:
        shapes, form = [(n_lay, n_batch, rnn.hidden_size)], "one tensor h_0"
        ok = isinstance(state, torch.Tensor)
        got = [state] if ok else []
    expected = "shape " + " and ".join(str(s) for s in shapes) + f" ({form})"
    if not ok:
        what = (f"a {type(state).__name__} of {len(state)} item(s)"
                if isinstance(state, (tuple, list)) else type(state).__name__)
        raise ValueError(f"initial state of {name}: expected {expected}, got {what}")
    for i, (t, shape) in enumerate(zip(got, shapes)):
        if tuple(t.shape) != shape:
            raise ValueError(f"initial state of {name}: expected {expected}, got tensor {i} "
                             f"of shape {tuple(t.shape)}")
    return got
