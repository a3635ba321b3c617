"""``Mamba``: the selective state-space model of Gu and Dao (2023), as a residual stack,
under vlrnn's ``(x, state) -> (y, state)`` contract.

Each layer (model width ``H``, inner width ``D = expand * H``, state size ``N``, causal
depthwise convolution of width ``K = conv_size``)::

    v = RMSNorm(u);  [x, z] = W_in v                       (each (T, B, D))
    x = silu(causal_conv(x));  [dt~, B, C] = W_x x           (ranks R, N, N)
    dt = softplus(W_dt dt~ + b_dt);  A = -exp(A_log)         (dt (T, B, D), A (D, N))
    h_t = exp(dt_t A) h_{t-1} + (dt_t x_t) B_t;  y_t = h_t C_t + D_skip x_t
    u' = u + dropout(W_out (y * silu(z)))

The convolution at step ``t`` reads ``x_{t-K+1} .. x_t``: the last ``K - 1`` of its
inputs are part of the carried state (with ``h``), so a sequence cut into blocks gives
exactly what it gives whole. The model is ``Linear(input_size, H)``, the layers, then a
final ``RMSNorm``. The recurrence is :func:`vlrnn.models._selective_scan.selective_scan`,
the convolution and its SiLU :func:`vlrnn.models._causal_conv.causal_conv_silu`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ._causal_conv import causal_conv_silu
from ._scan_base import ScanModel, positive_int, probability
from ._selective_scan import selective_scan

__all__ = ["Mamba", "MambaLayer"]


class MambaLayer(nn.Module):
    """One residual Mamba block on ``(T, B, H)`` rows; state ``(conv (B, K-1, D), h (B, D, N))``.

    Parameters: ``norm`` (RMSNorm), ``in_proj`` ``(2D, H)``, ``conv_weight`` ``(D, K)``,
    ``conv_bias`` ``(D,)``, ``x_proj`` ``(R + 2N, D)``, ``dt_proj`` ``(D, R)`` with bias,
    ``A_log`` ``(D, N)``, ``D`` ``(D,)``, ``out_proj`` ``(H, D)``."""

    def __init__(self, hidden_size: int, state_size: int, conv_size: int, expand: int,
                 dropout: float, dt_rank: int | None = None, dt_min: float = 1e-3,
                 dt_max: float = 0.1):
        super().__init__()
        H, N, K = hidden_size, state_size, conv_size
        Di = expand * H
        R = dt_rank or math.ceil(H / 16)
        self.hidden_size, self.state_size, self.conv_size = H, N, K
        self.inner_size, self.dt_rank, self.dropout = Di, R, dropout
        self.norm = nn.RMSNorm(H)
        self.in_proj = nn.Linear(H, 2 * Di, bias=False)
        bound = 1 / math.sqrt(K)
        self.conv_weight = nn.Parameter(torch.empty(Di, K).uniform_(-bound, bound))
        self.conv_bias = nn.Parameter(torch.empty(Di).uniform_(-bound, bound))
        self.x_proj = nn.Linear(Di, R + 2 * N, bias=False)
        self.dt_proj = nn.Linear(R, Di)
        with torch.no_grad():  # dt = softplus(bias) log-uniform in [dt_min, dt_max]
            nn.init.uniform_(self.dt_proj.weight, -R ** -0.5, R ** -0.5)
            dt = torch.exp(torch.rand(Di) * (math.log(dt_max) - math.log(dt_min))
                           + math.log(dt_min)).clamp_min(1e-4)
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        self.A_log = nn.Parameter(torch.log(torch.arange(1, N + 1, dtype=torch.get_default_dtype()))
                                  .repeat(Di, 1))
        self.D = nn.Parameter(torch.ones(Di))
        self.out_proj = nn.Linear(Di, H, bias=False)

    def forward(self, u: torch.Tensor, conv0: torch.Tensor, h0: torch.Tensor,
                last: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        T, B, _ = u.shape
        K, N, R = self.conv_size, self.state_size, self.dt_rank
        x, z = self.in_proj(self.norm(u)).chunk(2, -1)
        # causal depthwise conv over [the K-1 carried inputs, x]: K shifted multiply-adds
        xc = torch.cat([conv0.transpose(0, 1), x], 0)                    # (T+K-1, B, D)
        x = causal_conv_silu(xc, self.conv_weight, self.conv_bias)
        dt_low, Bm, Cm = self.x_proj(x).split([R, N, N], -1)
        dt = F.softplus(self.dt_proj(dt_low))
        y, h_last = selective_scan(x, dt, -torch.exp(self.A_log), Bm, Cm, h0, last)
        y = torch.addcmul(y, x, self.D) * F.silu(z)
        out = u + F.dropout(self.out_proj(y), self.dropout, self.training)
        # new conv state: each sequence's last K-1 inputs x (rows t+1 .. t+K-1 of xc)
        flat = xc.reshape((T + K - 1) * B, -1)
        end = torch.arange(T - 1, T, device=u.device) * B + torch.arange(B, device=u.device) \
            if last is None else last
        idx = end.unsqueeze(1) + B * torch.arange(1, K, device=u.device).unsqueeze(0)
        conv_last = flat.index_select(0, idx.reshape(-1)).view(B, K - 1, self.inner_size)
        return out, conv_last, h_last


class Mamba(ScanModel):
    r"""Deep Mamba: ``Linear(input_size, H)``, ``num_layers`` residual Mamba blocks, RMSNorm.

    Args:
        input_size: number of input features ``F``.
        hidden_size: model width ``H`` (features of ``y``).
        num_layers: stacked residual Mamba blocks.
        state_size: SSM state size ``N`` per channel.
        conv_size: width ``K`` of the causal depthwise convolution.
        expand: inner width ``D = expand * H``.
        dropout: ``F.dropout`` on every block's output before the residual add,
            training mode only; replayed exactly by the block engine.
        dt_rank: rank of the step-size projection (default ``ceil(H / 16)``).
        batch_first: dense input and output are ``(B, T, *)``; packed input unaffected.
        bidirectional: every layer is a forward and a reverse one-layer ``Mamba`` (each
            with its own encoder and final norm; the reverse one reads each sequence
            backwards, its convolution looking at later steps), layer ``l + 1`` reading
            their joined ``2 H`` outputs, ``dropout`` also between layers (NOTE [scan
            direction stacks]). For non-causal uses (classifying or encoding whole
            sequences). The block engine cannot run the reverse direction block by block:
            wrap the model in :class:`vlrnn.Blockwise`, which does.

    Inputs: ``x``, ``state``
        - **x**: dense ``(T, B, F)`` (``(B, T, F)`` if ``batch_first``) or a
          ``PackedSequence`` with ``data`` ``(N_rows, F)``, sorted or not.
        - **state** (optional): a pair ``(conv, h)``: ``conv`` ``(L, B, K - 1, D)``, each
          layer's last ``K - 1`` convolution inputs (oldest first), and ``h``
          ``(L, B, D, N)``, the SSM states, ``L = num_layers * num_directions`` (layer
          major, forward first); batch in the caller's order; ``None``: zeros.

    Outputs: ``y``, ``new_state``
        - **y**: same form as ``x`` with ``H`` features (``2 H`` bidirectional:
          ``[forward, reverse]``).
        - **new_state**: ``(conv, h)`` as ``state``, each sequence's at its own last
          step (the reverse direction's: after reading back to its first); passed back
          in, a unidirectional model continues the sequences exactly.

    Attributes:
        encoder: ``nn.Linear(F, H)``. layers: ``nn.ModuleList`` of :class:`MambaLayer`.
        norm: the final ``nn.RMSNorm(H)``. directions (bidirectional only, instead of
        these three): ``nn.ModuleList`` of ``[forward, reverse]`` one-layer ``Mamba``
        models. state_batch_dim: ``1``.

    Example:
        >>> import torch, vlrnn
        >>> from vlrnn.models import Mamba
        >>> rnn = Mamba(3, 8, num_layers=2, state_size=4)
        >>> y, (conv, h) = rnn(torch.randn(50, 4, 3))
        >>> y.shape, conv.shape, h.shape
        (torch.Size([50, 4, 8]), torch.Size([2, 4, 3, 16]), torch.Size([2, 4, 16, 4]))
        >>> out = vlrnn.block_loss(rnn, None, torch.randn(50, 4, 3), None, block_len=16)
        >>> out.state[1].shape
        torch.Size([2, 4, 16, 4])
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 state_size: int = 16, conv_size: int = 4, expand: int = 2,
                 dropout: float = 0.0, *, dt_rank: int | None = None,
                 batch_first: bool = False, bidirectional: bool = False):
        super().__init__()
        self.input_size = positive_int("input_size", input_size)
        self.hidden_size = positive_int("hidden_size", hidden_size)
        self.num_layers = positive_int("num_layers", num_layers)
        self.state_size = positive_int("state_size", state_size)
        self.conv_size = positive_int("conv_size", conv_size)
        self.expand = positive_int("expand", expand)
        self.dropout = probability("dropout", dropout)
        self.batch_first = bool(batch_first)
        self.bidirectional = bool(bidirectional)
        if self.bidirectional:  # NOTE [scan direction stacks]
            self.directions = nn.ModuleList(nn.ModuleList(
                Mamba(self.input_size if l == 0 else 2 * self.hidden_size, self.hidden_size,
                      1, self.state_size, self.conv_size, self.expand, self.dropout,
                      dt_rank=dt_rank, batch_first=batch_first) for _ in range(2))
                for l in range(self.num_layers))
            return
        self.encoder = nn.Linear(self.input_size, self.hidden_size)
        self.layers = nn.ModuleList(
            MambaLayer(self.hidden_size, self.state_size, self.conv_size, self.expand,
                       self.dropout, dt_rank) for _ in range(self.num_layers))
        self.norm = nn.RMSNorm(self.hidden_size)

    @property
    def output_size(self) -> int:
        """Features of ``y``: ``hidden_size`` (twice that when bidirectional)."""
        return self.hidden_size * (2 if self.bidirectional else 1)

    @property
    def inner_size(self) -> int:
        """``D = expand * hidden_size``."""
        return self.expand * self.hidden_size

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"state_size={self.state_size}, conv_size={self.conv_size}, "
                f"expand={self.expand}, dropout={self.dropout}, batch_first={self.batch_first}"
                + (", bidirectional=True" if self.bidirectional else ""))

    def state_shapes(self) -> list[tuple[str, tuple[int, ...]]]:
        return [("conv", (self.conv_size - 1, self.inner_size)),
                ("h", (self.inner_size, self.state_size))]

    def _run(self, inp: torch.Tensor, states: list[torch.Tensor],
             last: torch.Tensor | None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if self.bidirectional:
            return self._run_directions(inp, states, last)
        u = self.encoder(inp)
        convs, hs = [], []
        for l, layer in enumerate(self.layers):
            u, conv, h = layer(u, states[0][l], states[1][l], last)
            convs.append(conv)
            hs.append(h)
        return self.norm(u), [torch.stack(convs), torch.stack(hs)]
