"""Recurrent state as a (nested) tuple/list of tensors: flatten, narrow, gather, and the
final state assembled from the blocks in which sequences end.

A model's state is whatever it returns as ``new_state``: one tensor (``nn.GRU``'s
``h_n``), a tuple (``nn.LSTM``'s ``(h_n, c_n)``) or any nesting of tuples and lists
(``StackedRNN``'s one entry per layer). Every tensor in it has the batch on the same
dimension, ``batch_dim``. The engine works on the flat list of tensors and rebuilds the
structure only when it calls the model.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import torch
from torch import nn

Spec = Any  # None for a tensor leaf, else (type, [child specs])


def flatten(state: Any) -> Tuple[List[torch.Tensor], Spec]:
    """Flat list of the tensors in ``state`` (depth first) and the spec to rebuild it."""
    if isinstance(state, torch.Tensor):
        return [state], None
    if isinstance(state, (tuple, list)):
        leaves: List[torch.Tensor] = []
        specs = []
        for item in state:
            sub, spec = flatten(item)
            leaves.extend(sub)
            specs.append((len(sub), spec))
        return leaves, (type(state), specs)
    raise TypeError(
        "recurrent state must be a tensor or a (nested) tuple/list of tensors, "
        f"got {type(state).__name__}"
    )


def unflatten(leaves: Sequence[torch.Tensor], spec: Spec) -> Any:
    """Inverse of :func:`flatten`."""
    if spec is None:
        return leaves[0]
    kind, specs = spec
    items, i = [], 0
    for n, sub in specs:
        items.append(unflatten(leaves[i : i + n], sub))
        i += n
    return kind(items)


def narrow(leaves: Sequence[torch.Tensor], batch_dim: int, start: int, stop: int) -> List[torch.Tensor]:
    """Rows ``[start, stop)`` of the batch dimension of every tensor (views, no copy)."""
    return [t.narrow(batch_dim, start, stop - start) for t in leaves]


def default_batch_dim(model: nn.Module) -> int:
    """Where the batch is in ``model``'s state: 1 for ``nn.RNNBase``, else the model's
    ``state_batch_dim`` attribute, else 0. DDP/DataParallel wrappers are looked through."""
    inner = getattr(model, "module", model)
    if isinstance(inner, nn.RNNBase):
        return 1
    return int(getattr(inner, "state_batch_dim", 0))


def check_batch(leaves: Sequence[torch.Tensor], batch_dim: int, expected: int, what: str) -> None:
    """Raise ``ValueError`` unless every tensor has ``expected`` rows on ``batch_dim``."""
    for i, t in enumerate(leaves):
        if t.dim() <= batch_dim:
            raise ValueError(
                f"{what}: tensor {i} has shape {tuple(t.shape)}, which has no batch "
                f"dimension {batch_dim} (state_batch_dim); expected batch size {expected}"
            )
        if t.shape[batch_dim] != expected:
            raise ValueError(
                f"{what}: tensor {i} has batch size {t.shape[batch_dim]} on dim {batch_dim} "
                f"(shape {tuple(t.shape)}), expected {expected} to match the input's batch"
            )


def detach_all(leaves: Sequence[torch.Tensor], requires_grad: Optional[bool] = None) -> List[torch.Tensor]:
    """Detached copies (sharing memory); with ``requires_grad`` set, fresh graph leaves."""
    out = []
    for t in leaves:
        d = t.detach()
        if requires_grad and d.is_floating_point():
            d.requires_grad_(True)
        out.append(d)
    return out


def assemble_final(enders: Sequence[Optional[List[torch.Tensor]]], batch_dim: int) -> List[torch.Tensor]:
    """Final state, sorted order, from each block's enders: later blocks' enders come
    first, since sorted order puts the longest sequences first."""
    pieces = [e for e in reversed(enders) if e is not None]
    if len(pieces) == 1:
        return list(pieces[0])
    return [torch.cat(parts, batch_dim) for parts in zip(*pieces)]
