"""``MeanOfModels``: several trained models run side by side, their outputs averaged.

An ensemble of the same model trained from different seeds is one of the surest ways
to generalise better from few series. Under vlrnn's ``(x, state) -> (y, state)``
contract it is one more model: the state is the tuple of the members' states (each
keeps its own batch dim, which must be the same for all), ``y`` is the mean of the
members' outputs, and for series tasks ``readout`` averages the members' readouts
(class probabilities for classification, returned as log-probabilities so that a
softmax of them gives the mean probability).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

__all__ = ["MeanOfModels"]

Batch = torch.Tensor | PackedSequence


def _batch_dim(m: nn.Module) -> int:
    if isinstance(m, nn.RNNBase):
        return 1
    return int(getattr(m, "state_batch_dim", 0))


class MeanOfModels(nn.Module):
    """The mean of ``members`` (same input, same output layout).

    Args:
        members: models with the same calling convention and the same state batch dim.
        probabilities: ``readout`` averages softmax probabilities (classification) and
            returns their log; ``False``: it averages the raw readouts (regression).

    >>> import torch
    >>> from torch import nn
    >>> from vlrnn.models import MeanOfModels, WithHead
    >>> a, b = WithHead(nn.GRU(2, 4), nn.Linear(4, 1)), WithHead(nn.GRU(2, 4), nn.Linear(4, 1))
    >>> x = torch.randn(10, 3, 2)
    >>> y, _ = MeanOfModels([a, b])(x, None)
    >>> torch.allclose(y, (a(x, None)[0] + b(x, None)[0]) / 2, atol=1e-6)
    True
    """

    def __init__(self, members: Sequence[nn.Module], probabilities: bool = False):
        super().__init__()
        members = list(members)
        if not members:
            raise ValueError("MeanOfModels needs at least one member model")
        dims = {_batch_dim(m) for m in members}
        if len(dims) != 1:
            raise ValueError(f"members carry the batch on different state dims {sorted(dims)}")
        self.members = nn.ModuleList(members)
        self.probabilities = bool(probabilities)
        self.state_batch_dim = dims.pop()

    @property
    def batch_first(self) -> bool:
        return bool(getattr(self.members[0], "batch_first", False))

    @property
    def reads_whole_sequence(self) -> bool:
        """Whether a member must read whole sequences in one call (bidirectional)."""
        return any(getattr(m, "reads_whole_sequence", False) for m in self.members)

    def forward(self, x: Batch, state: tuple[Any, ...] | None = None
                ) -> tuple[Batch, tuple[Any, ...]]:
        states = [None] * len(self.members) if state is None else list(state)
        if len(states) != len(self.members):
            raise ValueError(f"MeanOfModels state must hold {len(self.members)} member "
                             f"states, got {len(states)}")
        outs, new = [], []
        for m, s in zip(self.members, states):
            y, s2 = m(x, s)
            outs.append(y)
            new.append(s2)
        if isinstance(outs[0], PackedSequence):
            mean = torch.stack([o.data for o in outs]).mean(0)
            y = outs[0]._replace(data=mean)
        else:
            y = torch.stack(outs).mean(0)
        return y, tuple(new)

    def readout(self, state: tuple[Any, ...]) -> torch.Tensor:
        """``(B, n_out)``: the members' readouts averaged (see the class docstring)."""
        rows = torch.stack([m.readout(s) for m, s in zip(self.members, state)])
        if self.probabilities:
            return torch.log(torch.softmax(rows, dim=-1).mean(0).clamp_min(1e-30))
        return rows.mean(0)
