"""Chunked scans of a first-order linear recurrence over dim 0 (QRNN's "forget-mult").

The recurrence ``c_t = a_t c_{t-1} + b_t`` over ``T`` steps of ``S`` elements each is run
as ``m`` chunks of ``k`` steps, all chunks at once (``m k`` = T up to a few leftover steps):

1. each chunk from a zero start, keeping only its end value (a rolling ``(m, S)`` buffer),
   and the product of its ``a`` (one reduction);
2. a loop over the ``m`` chunks: the true value entering each chunk (its "carry");
3. each chunk again from its carry, writing every step.

That is about ``2 k + m`` tensor ops (``k ~ sqrt(T)``) instead of ``T``, and no full-size
temporaries: the step loop's per-op cost is what dominates at small ``S`` on a CPU. Only
products of ``a`` (in ``[0, 1]`` for a QRNN) and sums appear, no division or logarithm,
so the scan is as stable as the step loop (saturated gates underflow to their true 0).

Each ``torch`` op on an ``(m, S)`` slice ``[:, j]`` of a ``(m, k, S)`` view reads ``m``
contiguous runs of ``S`` elements: cheap to address, no copies.
"""
from __future__ import annotations

from typing import Optional

import torch

__all__ = ["lerp_scan", "chunked_scan"]


# about this many bytes of (m, S) rolling buffer stay in a CPU core's cache between steps
_CACHE_BYTES = 128 * 1024
# steps at least this large run the plain loop: one pass over the data, and the per-op
# overhead of its T ops is small next to the work of each
_LOOP_ROW_BYTES = 32 * 1024


def chunk_len(T: int, row_bytes: int = 0) -> int:
    """Steps per chunk for a ``T``-step block whose steps have ``row_bytes`` bytes each
    (``T``, i.e. one chunk: the plain step loop).

    The chunked scan reads the data twice and the loop once, but the loop makes ``T``
    tensor ops where the scan makes about ``2 k + T / k``. Small steps (per-op overhead
    dominates): the smallest power of two ``k`` with ``k * k >= T``, doubled while the
    ``(m, S)`` buffers the sweeps update at every step outgrow the cache (and ``m >= 4``
    remains). Steps of ``_LOOP_ROW_BYTES`` or more: the loop. Measured on a 2-core CPU at
    ``T = 256``: ``k = 16`` best up to 4 KB steps, ``k = 32`` at 16 KB, the loop about as
    fast as the best ``k`` at 32 KB and 1.4x faster at 64 KB."""
    if row_bytes >= _LOOP_ROW_BYTES:
        return max(T, 1)
    k = 1
    while k * k < T:
        k *= 2
    while (T // k) * row_bytes > _CACHE_BYTES and T // (2 * k) >= 4:
        k *= 2
    return k


def lerp_scan(a: torch.Tensor, z: torch.Tensor, c0: torch.Tensor,
              out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``c_t = a_t c_{t-1} + (1 - a_t) z_t`` with ``c_{-1} = c0`` (QRNN's cell with
    ``a = 1 - f``), one ``torch.lerp`` per step. Not differentiable.

    ``a``, ``z``: ``(T, *S)``; ``c0``: ``(*S)``; ``out``: ``None`` or a contiguous
    ``(T, *S)`` tensor to write into, which may be ``a`` or ``z`` itself (both are read at
    step ``t`` before ``c_t`` is written). Returns ``c`` ``(T, *S)`` (``out`` if given)."""
    return _forward(a, z, c0, lerp=True, out=out)


def chunked_scan(a: torch.Tensor, b: torch.Tensor, c0: torch.Tensor,
                 reverse: bool = False, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Solve a first-order linear recurrence over dim 0 (not differentiable; see
    :func:`vlrnn.models.linear_scan` for the differentiable one).

    Forwards (``reverse=False``): ``c_t = a_t c_{t-1} + b_t`` with ``c_{-1} = c0``.
    Backwards (``reverse=True``): ``c_t = a_{t+1} c_{t+1} + b_t`` with ``c_{T-1} =
    b_{T-1} + c0`` (``a_0`` unused): the adjoint recurrence, run without flipping.

    ``a``, ``b``: ``(T, *S)``; ``c0``: ``(*S)``; ``out``: ``None`` or a contiguous
    ``(T, *S)`` tensor to write into, which may be ``b`` itself (each ``b_t`` is read
    before ``c_t`` is written over it). Returns ``c`` ``(T, *S)`` (``out`` if given).
    """
    if reverse:
        return _backward(a, b, c0, out)
    return _forward(a, b, c0, lerp=False, out=out)


def _forward(a: torch.Tensor, b: torch.Tensor, c0: torch.Tensor, lerp: bool,
             out: Optional[torch.Tensor] = None) -> torch.Tensor:
    T, S = b.shape[0], b.shape[1:]
    if out is None:
        out = torch.empty_like(b, memory_format=torch.contiguous_format)
    if T == 0:
        return out
    k = chunk_len(T, b.numel() // T * b.element_size())
    m = T // k
    if m < 2:  # short block: the plain loop
        _forward_loop(a, b, c0, out, 0, T, lerp)
        return out
    n = m * k  # chunks cover [0, n); the leftover steps [n, T) are looped
    av, bv = a[:n].reshape((m, k) + S), b[:n].reshape((m, k) + S)
    a_j, b_j, o_j = av.unbind(1), bv.unbind(1), out[:n].view((m, k) + S).unbind(1)
    # 1. every chunk from a zero start (the last chunk's end is not needed, but sweeping
    # all chunks reuses the per-step views: fewer small ops), and its product of a
    # lerp(b, prev, a) = b + a (prev - b) = a prev + (1 - a) b
    step = torch.lerp if lerp else _affine
    if lerp:
        end = torch.addcmul(b_j[0], a_j[0], b_j[0], value=-1)  # (1 - a) b
    else:
        end = b_j[0].clone()
    for j in range(1, k):
        step(b_j[j], end, a_j[j], out=end)
    prod = av.prod(1)
    # 2. carry[i]: c just before chunk i's first step
    carry = torch.empty((m,) + S, dtype=b.dtype, device=b.device)
    carry[0] = c0
    cs, ends, prods = carry.unbind(0), end.unbind(0), prod.unbind(0)
    for i in range(1, m):
        torch.addcmul(ends[i - 1], prods[i - 1], cs[i - 1], out=cs[i])
    # 3. every step of every chunk from its carry
    prev = carry
    for j in range(k):
        prev = step(b_j[j], prev, a_j[j], out=o_j[j])
    if n < T:
        _forward_loop(a, b, out[n - 1], out, n, T, lerp)
    return out


def _affine(b: torch.Tensor, prev: torch.Tensor, a: torch.Tensor,
            out: torch.Tensor) -> torch.Tensor:
    """``a prev + b``, in ``torch.lerp``'s argument order."""
    return torch.addcmul(b, a, prev, out=out)


def _forward_loop(a, b, c, out, start: int, stop: int, lerp: bool) -> None:
    step = torch.lerp if lerp else _affine
    for t in range(start, stop):
        c = step(b[t], c, a[t], out=out[t])


def _backward(a: torch.Tensor, b: torch.Tensor, c0: torch.Tensor,
              out: Optional[torch.Tensor] = None) -> torch.Tensor:
    T, S = b.shape[0], b.shape[1:]
    if out is None:
        out = torch.empty_like(b, memory_format=torch.contiguous_format)
    if T == 0:
        return out
    k = chunk_len(T, b.numel() // T * b.element_size())
    m = T // k
    if m < 2:
        _backward_loop(a, b, torch.add(b[T - 1], c0, out=out[T - 1]), out, 0, T - 1)
        return out
    r = T - m * k  # chunks cover [r, T); the leftover steps [0, r) are looped
    av, bv = a[r:].reshape((m, k) + S), b[r:].reshape((m, k) + S)
    a_j, b_j, o_j = av.unbind(1), bv.unbind(1), out[r:].view((m, k) + S).unbind(1)
    # a_next[i]: the multiplier of the value after chunk i (the next chunk's first step,
    # or c0, with multiplier 1, after the last chunk) in chunk i's last step
    a_next = torch.empty((m,) + S, dtype=b.dtype, device=b.device)
    a_next[:-1] = av[1:, 0]
    a_next[-1] = 1
    # 1. every chunk from a zero value after it (chunk 0's is not needed; see _forward),
    # and the multiplier of that value in the chunk's first step
    first = b_j[k - 1].clone()
    for j in range(k - 2, -1, -1):
        torch.addcmul(b_j[j], a_j[j + 1], first, out=first)
    prod = av[:, 1:].prod(1).mul_(a_next)
    # 2. after[i]: the value just after chunk i
    after = torch.empty((m,) + S, dtype=b.dtype, device=b.device)
    after[m - 1] = c0
    vs, firsts, prods = after.unbind(0), first.unbind(0), prod.unbind(0)
    for i in range(m - 1, 0, -1):
        torch.addcmul(firsts[i], prods[i], vs[i], out=vs[i - 1])
    # 3. every step of every chunk from the value after it
    nxt = torch.addcmul(b_j[k - 1], a_next, after, out=o_j[k - 1])
    for j in range(k - 2, -1, -1):
        nxt = torch.addcmul(b_j[j], a_j[j + 1], nxt, out=o_j[j])
    if r:
        _backward_loop(a, b, out[r], out, 0, r)
    return out


def _backward_loop(a, b, c, out, start: int, stop: int) -> None:
    """``out[t] = b[t] + a[t + 1] out[t + 1]`` for ``t`` from ``stop - 1`` down to
    ``start``; ``c`` is ``out[stop]``."""
    for t in range(stop - 1, start - 1, -1):
        c = torch.addcmul(b[t], a[t + 1], c, out=out[t])
