"""A diagonal linear time-invariant recurrence ``x_t = lam * x_{t-1} + b_t`` over dim 0
(the LRU's), for a whole block in a few tensor operations, differentiable by autograd.

With ``lam`` the same at every step, a chunk of ``k`` steps is a small Toeplitz matrix
per channel, ``L[n, j, s] = lam_n^(j - s)`` (``s <= j``), so:

1. every chunk from a zero start: one batched matmul ``L @ b`` over all chunks;
2. the value entering each chunk (its "carry"): a loop over the ``m = T / k`` chunks,
   ``carry_{i+1} = lam^k carry_i + end_i``;
3. every step: ``x[i, j] = local[i, j] + lam^(j + 1) carry_i``, one broadcast pass.

Powers are formed as ``exp(p log lam)`` with ``log lam = -exp(nu) + i exp(theta)`` given
(never by repeated multiplication or division), ``p <= k``, and ``|lam| <= 1``; the carry
loop is the plain recurrence over chunks, so the scan is as stable as the step loop over
any length (no long products, no ``1 / lam``).
"""
from __future__ import annotations

from typing import Optional

import torch

__all__ = ["lti_scan"]

MAX_CHUNK = 64


def _chunk(T: int) -> int:
    k = 1
    while k * k < T and k < MAX_CHUNK:
        k *= 2
    return k


def lti_scan(log_lam: torch.Tensor, b: torch.Tensor, x0: torch.Tensor,
             chunk: Optional[int] = None) -> torch.Tensor:
    """Solve ``x_t = lam * x_{t-1} + b_t`` (``t = 0 .. T-1``, ``x_{-1} = x0``).

    Args:
        log_lam: ``(N,)`` complex, ``log lam`` (real part <= 0 for a stable recurrence).
        b: ``(T, B, N)`` complex inputs.
        x0: ``(B, N)`` complex state before step 0.
        chunk: steps per chunk (default: about ``sqrt(T)``, at most 64).

    Returns:
        ``x`` ``(T, B, N)`` complex; differentiable w.r.t. ``log_lam``, ``b``, ``x0``.
    """
    T, B, N = b.shape
    k = chunk or _chunk(T)
    m = -(-T // k)
    if m * k != T:  # zero inputs after the end: computed, then cut off
        b = torch.cat([b, b.new_zeros(m * k - T, B, N)])
    steps = torch.arange(k, dtype=log_lam.real.dtype, device=b.device)
    diff = steps[:, None] - steps[None, :]                              # (k, k): j - s
    lower = diff >= 0
    # L[n, j, s] = lam_n^(j-s) on and below the diagonal, 0 above
    L = torch.exp(diff.clamp_min(0)[None] * log_lam[:, None, None]) * lower
    # 1. local[i, j] = sum_{s <= j} lam^(j-s) b[i, s]: (N, k, k) @ (N, k, m B)
    bv = b.view(m, k, B, N).permute(3, 1, 0, 2).reshape(N, k, m * B)
    local = torch.matmul(L, bv).view(N, k, m, B).permute(2, 1, 3, 0)  # (m, k, B, N)
    # 2. carries: the value before each chunk
    lam_k = torch.exp(k * log_lam)
    carry = [x0]
    for i in range(m - 1):
        carry.append(lam_k * carry[-1] + local[i, k - 1])
    carries = torch.stack(carry)                                        # (m, B, N)
    # 3. x[i, j] = local[i, j] + lam^(j+1) carry[i]
    powers = torch.exp((steps + 1)[:, None] * log_lam[None, :])         # (k, N)
    x = local + powers[None, :, None, :] * carries[:, None]
    return x.reshape(m * k, B, N)[:T]
