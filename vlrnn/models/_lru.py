"""``LRU``: the Linear Recurrent Unit of Orvieto, Smith, Gu, Fernando, Gulcehre, Pascanu
and De (ICML 2023), in the residual stack the paper trains it in, under vlrnn's
``(x, state) -> (y, state)`` contract.

Each layer (pre-norm residual block, model width ``H``, complex state size ``N``)::

    v_t  = LayerNorm(u_t)
    x_t  = lam * x_{t-1} + gamma * (B v_t)          (complex, diagonal lam, (N,))
    lam  = exp(-exp(nu) + i exp(theta))              (exponential parameterisation)
    y_t  = Re(C x_t) + D * v_t
    u'_t = u_t + dropout(GLU(W dropout(GELU(y_t))))   (W: H -> 2H, GLU back to H)

with ``|lam|`` drawn uniformly on the ring ``[r_min, r_max]``, phases in ``[0,
max_phase]``, and ``gamma = sqrt(1 - |lam|^2)`` (trained as ``gamma_log``) normalising
the input so that the state's variance does not blow up as ``|lam| -> 1``. The model
is ``Linear(input_size, H)``, then the layers, then a final ``LayerNorm``. Everything
but the recurrence acts on each step alone, and the recurrence is run by
:func:`vlrnn.models._lti_scan.lti_scan` (a fused complex multiply-add per step,
stable over any length).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ._lti_scan import _forward_loop, _read_last, lti_scan_last
from ._scan_base import ScanModel, positive_int, probability

__all__ = ["LRU", "LRULayer"]

_sigmoid_backward = torch.ops.aten.sigmoid_backward


def _glu_forward(y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """``[a, b] = y W^T + bias`` as one matmul ``(T, B, 2H)``, ``sigmoid(b)`` written over
    ``b``; returns that buffer and ``a * sigmoid(b)`` ``(T, B, H)``."""
    H = weight.shape[0] // 2
    ab = F.linear(y, weight, bias)
    s = ab[..., H:].sigmoid_()
    return ab, torch.mul(ab[..., :H], s)


class _GLU(torch.autograd.Function):
    """The GLU ``a * sigmoid(b)`` of ``Linear(H, 2H)``: one matmul forwards (the halves
    are column blocks of its output), and backwards both halves' gradients written into
    one ``(T, B, 2H)`` buffer, so the input, weight and bias gradients are one matmul or
    sum each (autograd through two half matmuls: two of each and a sum of the input's;
    measured 6% faster at H = 128, 11% at 256, forward and backward)."""

    @staticmethod
    def forward(ctx, y, weight, bias):
        ab, out = _glu_forward(y, weight, bias)
        ctx.save_for_backward(y, weight, ab)
        return out

    @staticmethod
    def backward(ctx, g):
        if torch.is_grad_enabled():
            raise RuntimeError("the LRU's GLU has first derivatives only")
        y, weight, ab = ctx.saved_tensors
        H = weight.shape[0] // 2
        a, s = ab[..., :H], ab[..., H:]
        d = torch.empty_like(ab)
        torch.mul(g, s, out=d[..., :H])                    # dL/da
        db = torch.mul(g, a, out=d[..., H:])
        _sigmoid_backward.grad_input(db, s, grad_input=db)  # dL/db
        d2 = d.view(-1, 2 * H)
        need_y, need_w, need_b = ctx.needs_input_grad
        dy = d2.mm(weight).view(y.shape) if need_y else None
        dw = d2.t().mm(y.reshape(-1, y.shape[-1])) if need_w else None
        return dy, dw, d2.sum(0) if need_b else None


class LRULayer(nn.Module):
    """One residual LRU block on ``(T, B, H)`` rows; state ``(B, 2N)`` real: ``[Re x, Im x]``.

    Parameters: ``nu_log``, ``theta_log``, ``gamma_log`` ``(N,)``; ``B_re``, ``B_im``
    ``(N, H)``; ``C_re``, ``C_im`` ``(H, N)``; ``D`` ``(H,)``; ``norm`` (LayerNorm),
    ``mlp`` (``Linear(H, 2H)`` before a GLU)."""

    def __init__(self, hidden_size: int, state_size: int, r_min: float, r_max: float,
                 max_phase: float, dropout: float):
        super().__init__()
        H, N = hidden_size, state_size
        self.hidden_size, self.state_size, self.dropout = H, N, dropout
        u1, u2 = torch.rand(N), torch.rand(N)
        nu_log = torch.log(-0.5 * torch.log(u1 * (r_max ** 2 - r_min ** 2) + r_min ** 2))
        theta_log = torch.log(max_phase * u2.clamp_min(1e-4))
        gamma_log = torch.log(torch.sqrt(1 - torch.exp(-torch.exp(nu_log)) ** 2))
        self.nu_log = nn.Parameter(nu_log)
        self.theta_log = nn.Parameter(theta_log)
        self.gamma_log = nn.Parameter(gamma_log)
        self.B_re = nn.Parameter(torch.randn(N, H) / math.sqrt(2 * H))
        self.B_im = nn.Parameter(torch.randn(N, H) / math.sqrt(2 * H))
        self.C_re = nn.Parameter(torch.randn(H, N) / math.sqrt(N))
        self.C_im = nn.Parameter(torch.randn(H, N) / math.sqrt(N))
        self.D = nn.Parameter(torch.randn(H))
        self.norm = nn.LayerNorm(H)
        self.mlp = nn.Linear(H, 2 * H)

    def log_lambda(self) -> torch.Tensor:
        """``log lam = -exp(nu_log) + i exp(theta_log)``, ``(N,)`` complex."""
        return torch.complex(-torch.exp(self.nu_log), torch.exp(self.theta_log))

    def _projections(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(w_in (2N, H), w_out (H, 2N))`` real weights over interleaved ``[Re, Im]``
        pairs: ``w_in`` gives ``gamma * (B v)`` as rows that are complex numbers as they
        are (a view, no copy); ``w_out`` gives ``Re(C x) = C_re Re x - C_im Im x`` in one
        matmul."""
        N, H = self.state_size, self.hidden_size
        gamma = torch.exp(self.gamma_log).unsqueeze(1)
        w_in = torch.stack([self.B_re * gamma, self.B_im * gamma], 1).reshape(2 * N, H)
        return w_in, torch.stack([self.C_re, -self.C_im], -1).reshape(H, 2 * N)

    def forward(self, u: torch.Tensor, x0: torch.Tensor, last: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        if not torch.is_grad_enabled():
            return self._forward_no_graph(u, x0, last)
        T, B, _ = u.shape
        N = self.state_size
        v = self.norm(u)
        w_in, w_out = self._projections()
        b = torch.view_as_complex(F.linear(v, w_in).view(T, B, N, 2))
        x, x_last = lti_scan_last(torch.exp(self.log_lambda()), b,
                                  torch.complex(x0[:, :N], x0[:, N:]), last)
        xr = torch.view_as_real(x)                                        # (T, B, N, 2)
        y = torch.addcmul(F.linear(xr.view(T, B, 2 * N), w_out), self.D, v)
        y = F.dropout(F.gelu(y), self.dropout, self.training)
        y = _GLU.apply(y, self.mlp.weight, self.mlp.bias)
        y = F.dropout(y, self.dropout, self.training)
        x_last = torch.view_as_real(x_last)                                # (B, N, 2)
        return u + y, torch.cat([x_last[..., 0], x_last[..., 1]], -1)

    def _forward_no_graph(self, u: torch.Tensor, x0: torch.Tensor, last: torch.Tensor | None
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`forward` without a graph (the engine's forward pass): the same ops and
        random draws in the same order, written in place where ``forward`` allocates
        (the scan over its input, the skip, the GLU's gate, the residual)."""
        T, B, _ = u.shape
        N = self.state_size
        v = self.norm(u)
        w_in, w_out = self._projections()
        b = torch.view_as_complex(F.linear(v, w_in).view(T, B, N, 2))
        # x_t written over b_t (each b_t is read before x_t is written there)
        x = _forward_loop(torch.exp(self.log_lambda()), b, torch.complex(x0[:, :N], x0[:, N:]),
                          b)
        x_last = torch.view_as_real(_read_last(x, last))
        y = F.linear(torch.view_as_real(x).view(T, B, 2 * N), w_out).addcmul_(self.D, v)
        y = F.dropout(F.gelu(y), self.dropout, self.training)
        out = _glu_forward(y, self.mlp.weight, self.mlp.bias)[1]
        out = F.dropout(out, self.dropout, self.training).add_(u)
        return out, torch.cat([x_last[..., 0], x_last[..., 1]], -1)


class LRU(ScanModel):
    r"""Deep LRU: ``Linear(input_size, H)``, ``num_layers`` residual LRU blocks, LayerNorm.

    Args:
        input_size: number of input features ``F``.
        hidden_size: model width ``H`` (features of ``y``).
        num_layers: stacked residual LRU blocks.
        dropout: ``F.dropout`` inside every block (after the GELU and after the GLU, as
            the paper), training mode only; replayed exactly by the block engine.
        state_size: complex state size ``N`` per layer (default ``hidden_size``).
        r_min, r_max: ``|lam|`` drawn on the ring between them at initialisation (close
            to 1: long memory).
        max_phase: phases of ``lam`` drawn in ``[0, max_phase]``.
        batch_first: dense input and output are ``(B, T, *)``; packed input unaffected.
        bidirectional: every layer is a forward and a reverse one-layer ``LRU`` (each with
            its own encoder and final norm; the reverse one reads each sequence backwards),
            layer ``l + 1`` reading their joined ``2 H`` outputs, ``dropout`` also between
            layers (NOTE [scan direction stacks]). For non-causal uses (classifying or
            encoding whole sequences). The block engine cannot run the reverse direction
            block by block: wrap the model in :class:`vlrnn.Blockwise`, which does.

    Inputs: ``x``, ``state``
        - **x**: dense ``(T, B, F)`` (``(B, T, F)`` if ``batch_first``) or a
          ``PackedSequence`` with ``data`` ``(N_rows, F)``, sorted or not.
        - **state** (optional): ``(num_layers * num_directions, B, 2 N)`` real: each
          layer's complex state as ``[real parts, imaginary parts]`` (layer major, forward
          first); batch in the caller's order; ``None``: zeros.

    Outputs: ``y``, ``new_state``
        - **y**: same form as ``x`` with ``H`` features (``2 H`` bidirectional:
          ``[forward, reverse]``).
        - **new_state**: ``(num_layers * num_directions, B, 2 N)``, each sequence's state
          at its own last step (the reverse direction's: after reading back to its first);
          passed back in, a unidirectional model continues the sequences exactly.

    Attributes:
        encoder: ``nn.Linear(F, H)``. layers: ``nn.ModuleList`` of :class:`LRULayer`.
        norm: the final ``nn.LayerNorm(H)``. directions (bidirectional only, instead of
        these three): ``nn.ModuleList`` of ``[forward, reverse]`` one-layer ``LRU`` models.
        state_batch_dim: ``1``.

    Example:
        >>> import torch, vlrnn
        >>> from vlrnn.models import LRU
        >>> rnn = LRU(3, 8, num_layers=2, state_size=16)
        >>> y, h = rnn(torch.randn(50, 4, 3))
        >>> y.shape, h.shape
        (torch.Size([50, 4, 8]), torch.Size([2, 4, 32]))
        >>> out = vlrnn.block_loss(rnn, None, torch.randn(50, 4, 3), None, block_len=16)
        >>> out.state.shape
        torch.Size([2, 4, 32])
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 dropout: float = 0.0, *, state_size: int | None = None,
                 r_min: float = 0.9, r_max: float = 0.999, max_phase: float = 2 * math.pi,
                 batch_first: bool = False, bidirectional: bool = False):
        super().__init__()
        self.input_size = positive_int("input_size", input_size)
        self.hidden_size = positive_int("hidden_size", hidden_size)
        self.num_layers = positive_int("num_layers", num_layers)
        self.state_size = positive_int("state_size", state_size if state_size is not None
                                       else self.hidden_size)
        self.dropout = probability("dropout", dropout)
        if not 0.0 <= r_min < r_max <= 1.0:
            raise ValueError(f"need 0 <= r_min < r_max <= 1, got r_min={r_min}, r_max={r_max}")
        self.r_min, self.r_max, self.max_phase = float(r_min), float(r_max), float(max_phase)
        self.batch_first = bool(batch_first)
        self.bidirectional = bool(bidirectional)
        if self.bidirectional:  # NOTE [scan direction stacks]
            self.directions = nn.ModuleList(nn.ModuleList(
                LRU(self.input_size if l == 0 else 2 * self.hidden_size, self.hidden_size, 1,
                    self.dropout, state_size=self.state_size, r_min=r_min, r_max=r_max,
                    max_phase=max_phase, batch_first=batch_first) for _ in range(2))
                for l in range(self.num_layers))
            return
        self.encoder = nn.Linear(self.input_size, self.hidden_size)
        self.layers = nn.ModuleList(
            LRULayer(self.hidden_size, self.state_size, r_min, r_max, max_phase, self.dropout)
            for _ in range(self.num_layers))
        self.norm = nn.LayerNorm(self.hidden_size)

    @property
    def output_size(self) -> int:
        """Features of ``y``: ``hidden_size`` (twice that when bidirectional)."""
        return self.hidden_size * (2 if self.bidirectional else 1)

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"state_size={self.state_size}, dropout={self.dropout}, r_min={self.r_min}, "
                f"r_max={self.r_max}, batch_first={self.batch_first}"
                + (", bidirectional=True" if self.bidirectional else ""))

    def state_shapes(self) -> list[tuple[str, tuple[int, ...]]]:
        return [("h", (2 * self.state_size,))]

    def _run(self, inp: torch.Tensor, states: list[torch.Tensor],
             last: torch.Tensor | None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if self.bidirectional:
            return self._run_directions(inp, states, last)
        u = self.encoder(inp)
        finals = []
        for l, layer in enumerate(self.layers):
            u, x_last = layer(u, states[0][l], last)
            finals.append(x_last)
        return self.norm(u), [torch.stack(finals)]
