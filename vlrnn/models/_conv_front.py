"""``ConvFront``: causal 1-D convolutions in front of a recurrent model, streamed by block.

Convolutions over time find local shapes (a bump, an edge) that a recurrent layer alone
learns slowly; fully convolutional classifiers are strong on the UCR archive. To run
under the block engine with the exact gradient, the convolutions are causal (output at
step ``t`` reads input steps ``t-k+1..t``) and their state is the last ``k - 1`` input
rows of each layer (zeros before a sequence's first step), so a sequence cut into blocks
gives exactly the output of the whole sequence at once. Each layer is
``Conv1d -> ReLU``, or with ``norm="layer"`` ``Conv1d -> LayerNorm (per step, over
channels) -> ReLU``; normalising per step keeps every row independent of the batch and
of the block cut (BatchNorm would not).

``ConvThen(front, rnn, skip=False)`` chains the front end and a recurrent model as one
model under vlrnn's ``(x, state) -> (y, state)`` contract; with ``skip=True`` its output
at each step is the rnn's output and the front end's side by side (``H + C`` features),
so that a pooled head reads the convolution features directly too.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from ._inputs import dense_time_major

__all__ = ["ConvFront", "ConvThen"]

Batch = torch.Tensor | PackedSequence


def _packed_rows(batch_sizes: torch.Tensor, sorted_indices: torch.Tensor | None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(t, b)`` of each ``.data`` row of a packed batch (``b`` in input order)."""
    sizes = batch_sizes.tolist()
    t = torch.cat([torch.full((n,), i, dtype=torch.long) for i, n in enumerate(sizes)])
    j = torch.cat([torch.arange(n) for n in sizes])
    b = j if sorted_indices is None else sorted_indices.cpu()[j]
    return t, b


class ConvFront(nn.Module):
    """Causal convolution layers, ``(x, state) -> (y, state)``.

    Args:
        input_size: features ``F`` of each step.
        channels: output channels of every layer (``C``; the output's feature size).
        kernel_sizes: one kernel size per layer, e.g. ``(7, 5, 3)``.
        norm: ``None`` or ``"layer"`` (LayerNorm over the channels of each step).
        dilations: one dilation per layer (default all 1); layer ``i`` then reads
            ``(k_i - 1) * d_i + 1`` steps and keeps that many minus one as its state.

    Inputs: ``x`` a ``PackedSequence`` (``.data`` ``(N, F)``) or dense time-major
    ``(T, B, F)``; ``state`` ``None`` (zeros) or a tuple with one tensor per layer,
    ``(k - 1, B, C_in)`` (batch on dim 1, input batch order; ``k`` the steps the layer
    reads, ``(kernel - 1) * dilation + 1``): that layer's last ``k - 1`` input rows. Outputs: ``y`` in ``x``'s layout with ``C`` features, and the
    state after each sequence's own last step.

    >>> import torch
    >>> from vlrnn.models import ConvFront
    >>> front = ConvFront(3, channels=8, kernel_sizes=(5, 3))
    >>> x = torch.randn(40, 2, 3)
    >>> y, state = front(x, None)                  # causal: row t reads rows <= t only
    >>> y2, _ = front(x[:25], None)
    >>> y.shape, torch.allclose(y[:25], y2, atol=1e-6)
    (torch.Size([40, 2, 8]), True)
    """

    state_batch_dim = 1

    def __init__(self, input_size: int, channels: int = 64,
                 kernel_sizes: Sequence[int] = (7, 5, 3), norm: str | None = None,
                 dilations: Sequence[int] | None = None):
        super().__init__()
        ks = [int(k) for k in kernel_sizes]
        if not ks or any(k < 1 for k in ks):
            raise ValueError(f"kernel_sizes must be one or more ints >= 1, got {kernel_sizes!r}")
        ds = [1] * len(ks) if dilations is None else [int(d) for d in dilations]
        if len(ds) != len(ks) or any(d < 1 for d in ds):
            raise ValueError(f"dilations must be one int >= 1 per layer ({len(ks)}), got "
                             f"{dilations!r}")
        self.dilations = ds
        if norm not in (None, "layer"):
            raise ValueError(f"norm must be None or 'layer', got {norm!r}")
        self.input_size, self.channels, self.kernel_sizes = int(input_size), int(channels), ks
        widths = [self.input_size] + [self.channels] * len(ks)
        self.convs = nn.ModuleList(nn.Conv1d(widths[i], self.channels, k, dilation=ds[i])
                                   for i, k in enumerate(ks))
        self.norms = nn.ModuleList((nn.LayerNorm(self.channels) if norm else nn.Identity())
                                   for _ in ks)

    def _layers(self, z: torch.Tensor, lengths: torch.Tensor, state: Sequence | None
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """``z`` ``(T, B, F)`` padded, ``lengths`` ``(B,)`` valid steps -> outputs and tails."""
        T, B = z.shape[0], z.shape[1]
        tails: list[torch.Tensor] = []
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            k = (self.kernel_sizes[i] - 1) * self.dilations[i] + 1  # steps it reads
            prev = None if state is None else state[i]
            if prev is None:
                prev = z.new_zeros(k - 1, B, z.shape[2])
            ctx = torch.cat([prev.to(z.dtype), z], dim=0)         # (k - 1 + T, B, C_in)
            if k > 1:  # the last k - 1 valid input rows of each sequence
                idx = lengths.to(z.device)[None, :] + torch.arange(k - 1, device=z.device)[:, None]
                tails.append(ctx.gather(0, idx[:, :, None].expand(-1, -1, z.shape[2])))
            else:
                tails.append(z.new_zeros(0, B, z.shape[2]))
            out = conv(ctx.permute(1, 2, 0)).permute(2, 0, 1)     # (T, B, C)
            z = torch.relu(norm(out))
        assert z.shape[0] == T
        return z, tuple(tails)

    def forward(self, x: Batch, state: Sequence[torch.Tensor] | None = None
                ) -> tuple[Batch, tuple[torch.Tensor, ...]]:
        if state is not None and len(state) != len(self.convs):
            raise ValueError(f"ConvFront state must hold {len(self.convs)} tensors (one per "
                             f"layer), got {len(state)}")
        if isinstance(x, PackedSequence):
            padded, lengths = pad_packed_sequence(x)              # (T, B, F), input order
            z, tails = self._layers(padded, lengths, state)
            t, b = _packed_rows(x.batch_sizes, x.sorted_indices)
            y = PackedSequence(z[t.to(z.device), b.to(z.device)], x.batch_sizes,
                               x.sorted_indices, x.unsorted_indices)
            return y, tails
        steps = dense_time_major(x, False)
        lengths = torch.full((steps.shape[1],), steps.shape[0], dtype=torch.long)
        return self._layers(steps, lengths, state)


class ConvThen(nn.Module):
    """``rnn(front(x))`` as one model; state ``(front_state, rnn_state)``.

    Both parts must carry the batch on dim 1 of their states (``ConvFront`` and
    ``nn.LSTM``/``nn.GRU``/``nn.RNN`` do). ``last_hidden(state)`` gives the rnn's last
    layer hidden state ``(B, H)`` (read by :class:`~vlrnn.models.SequenceModel`; with
    ``skip=True`` the outputs are wider than that, so pool ``("mean", "max")`` only).

    >>> import torch
    >>> from torch import nn
    >>> from vlrnn.models import ConvFront, ConvThen
    >>> model = ConvThen(ConvFront(3, channels=8), nn.GRU(8, 16))
    >>> y, state = model(torch.randn(50, 2, 3), None)
    >>> y.shape, model.last_hidden(state).shape
    (torch.Size([50, 2, 16]), torch.Size([2, 16]))
    """

    state_batch_dim = 1

    def __init__(self, front: nn.Module, rnn: nn.Module, skip: bool = False):
        super().__init__()
        self.skip = bool(skip)
        inner = getattr(rnn, "module", rnn)  # vlrnn.Blockwise runs .module
        if int(getattr(rnn, "state_batch_dim", 1 if isinstance(inner, nn.RNNBase) else 0)) != 1:
            raise ValueError("ConvThen needs an rnn whose state has the batch on dim 1 "
                             "(nn.LSTM, nn.GRU, nn.RNN)")
        self.front, self.rnn = front, rnn

    @property
    def bidirectional(self) -> bool:
        """The rnn's (a bidirectional rnn makes the whole model read whole sequences)."""
        return bool(getattr(self.rnn, "bidirectional", False))

    def forward(self, x: Batch, state: tuple[Any, Any] | None = None) -> tuple[Batch, Any]:
        f_state, r_state = (None, None) if state is None else state
        z, f_new = self.front(x, f_state)
        y, r_new = self.rnn(z, r_state)
        if self.skip:
            if isinstance(y, PackedSequence):
                y = y._replace(data=torch.cat([y.data, z.data], dim=1))
            else:
                y = torch.cat([y, z], dim=-1)
        return y, (f_new, r_new)

    def last_hidden(self, state: tuple[Any, Any]) -> torch.Tensor:
        from ._pooled import last_hidden
        return last_hidden(self.rnn, state[1])
