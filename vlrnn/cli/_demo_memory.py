"""Part 2 of ``vlrnn demo``: peak memory against sequence length, vlrnn and plain BPTT.

Each point is one forward + backward of the demo's byte LSTM over one sequence of ``T``
bytes, in a child process of its own (forked, its peak counter reset), measured as peak
resident memory above what the child held at its start (``vlrnn.memory``). Plain BPTT is
measured where it fits the machine comfortably and extended beyond by a straight line
through its measured points (its memory grows linearly with ``T``).
"""
from __future__ import annotations

import multiprocessing as mp
import sys
from typing import Dict, List, Sequence

import torch
from torch.nn.utils.rnn import pack_sequence

from ..engine._bptt import block_backward, full_backward
from ..memory import peak_rss_mb, reset_peak_rss, rss_mb
from ._demo_lm import ByteLSTM, cross_entropy_rows


def _one(method: str, T: int, hidden: int, block_len: int, queue) -> None:
    try:
        torch.set_num_threads(1)
        model = ByteLSTM(hidden)
        seq = torch.randint(0, 256, (T + 1,), generator=torch.Generator().manual_seed(T))
        x, y = pack_sequence([seq[:-1]]), pack_sequence([seq[1:]])
        reset_peak_rss()
        start = rss_mb()
        if method == "vlrnn":
            block_backward(model, cross_entropy_rows, x, y, block_len=block_len)
        else:
            full_backward(model, cross_entropy_rows, x, y)
        queue.put(peak_rss_mb() - start)
    except BaseException as err:  # reported to the parent, which says what failed
        queue.put(f"{type(err).__name__}: {err}")


def measure(method: str, T: int, hidden: int = 128, block_len: int = 256) -> float:
    """MB above the start of a fresh child for one forward + backward over ``T`` bytes."""
    ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_one, args=(method, T, hidden, block_len, queue))
    proc.start()
    try:
        got = queue.get(timeout=600)
    finally:
        proc.join(timeout=60)
    if isinstance(got, str):
        raise RuntimeError(f"measuring {method} at T = {T:,} failed: {got}")
    return float(got)


def memory_curve(lengths: Sequence[int], plain_up_to: int, hidden: int = 128,
                 block_len: int = 256) -> Dict[str, List]:
    """Measured MB for vlrnn at every length, plain BPTT measured up to ``plain_up_to``
    and estimated (linear in ``T``) beyond: ``{"T", "vlrnn", "plain", "plain_measured"}``."""
    Ts = sorted(lengths)
    ours = [measure("vlrnn", T, hidden, block_len) for T in Ts]
    measured = [(T, measure("plain", T, hidden, block_len)) for T in Ts if T <= plain_up_to]
    if len(measured) >= 2:
        (t1, m1), (t2, m2) = measured[-2], measured[-1]
        slope = (m2 - m1) / (t2 - t1)
    else:
        t2, m2 = measured[-1]
        slope = m2 / t2
    plain = [m for _, m in measured] + [m2 + slope * (T - t2) for T in Ts[len(measured):]]
    return {"T": Ts, "vlrnn": ours, "plain": plain, "plain_measured": len(measured),
            "slope_mb_per_step": slope}


def estimate_plain(curve: Dict[str, List], T: int) -> float:
    """Plain BPTT's MB at ``T`` steps, by the line through its measured points."""
    k = curve["plain_measured"] - 1
    return curve["plain"][k] + curve["slope_mb_per_step"] * (T - curve["T"][k])
