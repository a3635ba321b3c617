"""Measured ceilings of the scan models against nn.LSTM: each model timed with its
recurrence and with it replaced by an identity, and a chain of just its matmuls.

For every model (hidden ``H``, ``--layers`` layers, the defaults of
:mod:`scan_models_speed`) three variants go through ``vlrnn.block_backward`` (the
engine's no-graph forward pass, then each block recomputed and backpropagated), timed in
turn with ``nn.LSTM`` in every round (medians of this process's CPU time):

* ``model``: the model as it is.
* ``no scan``: the same model with its recurrence replaced by an identity (MinGRU and
  MinLSTM: ``h = h~`` and ``dL/dh~ = dL/dh``; LRU: ``x = B v``; Mamba: ``y = dt x``, the
  state passed through): what the model would cost with a free scan.
* ``matmuls``: a chain of ``nn.Linear`` layers of the model's weight shapes (the GLU's,
  ``in_proj``'s and the gates' row blocks as one matmul whose first block is passed on),
  nothing else: what it would cost with every element-wise pass free.

The speed against nn.LSTM of the last two is the ceiling of any work on the scan and on
the element-wise passes respectively (on this machine, for this ``H``).

    python benchmarks/scan_models_floor.py --hidden 128 256 --steps 4096 --repeats 3
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_shape_arguments, write_table  # noqa: E402
from model_speed import dense, engine_step, interleaved  # noqa: E402
from scan_models_speed import EXTRA, MODELS, build  # noqa: E402

from vlrnn.models import _lru, _mamba, _min_rnn_layer  # noqa: E402
from vlrnn.models._scan_base import ScanModel  # noqa: E402


def _identity_lerp(a, cand, h0, out=None):
    return cand if out is None else out


def _identity_reverse(a, g, g_last, reverse=False, out=None):
    return g if out is None or out is g else out.copy_(g)


def _identity_lti_last(lam, b, x0, last=None):
    return b, _lru._read_last(b, last)


def _identity_selective(x, dt, A, Bm, Cm, h0, last=None, chunk=None, method=None):
    return dt * x, h0


# module attribute -> identity stand-in, per model (NOTE: looked up at call time)
NO_SCAN = {
    "MinGRU": [(_min_rnn_layer, "lerp_scan", _identity_lerp),
               (_min_rnn_layer, "chunked_scan", _identity_reverse)],
    "LRU": [(_lru, "lti_scan_last", _identity_lti_last),
            (_lru, "_forward_loop", lambda lam, b, x0, out: b)],
    "Mamba": [(_mamba, "selective_scan", _identity_selective)],
}
NO_SCAN["MinLSTM"] = NO_SCAN["MinGRU"]
NO_SCAN["LRU-half"] = NO_SCAN["LRU"]


@contextlib.contextmanager
def patched(patches):
    saved = [(m, n, getattr(m, n)) for m, n, _ in patches]
    for m, n, f in patches:
        setattr(m, n, f)
    try:
        yield
    finally:
        for m, n, f in saved:
            setattr(m, n, f)


def without_scan(name: str, step):
    """``step`` run with ``name``'s recurrence replaced by an identity."""
    def run() -> None:
        with patched(NO_SCAN[name]):
            step()
    return run


class MatmulChain(ScanModel):
    """``x -> Linear -> narrow -> Linear ...`` over ``(T, B, F)``: ``spec`` is a list of
    ``(n_in, n_out, n_pass)``, each a ``Linear(n_in, n_out)`` whose first ``n_pass``
    output features feed the next; a one-number state so the engine sees a model."""

    batch_first = False

    def __init__(self, spec: list[tuple[int, int, int]]):
        super().__init__()
        self.input_size, self.num_layers, self.spec = spec[0][0], 1, spec
        self.lins = nn.ModuleList(nn.Linear(i, o) for i, o, _ in spec)

    @property
    def output_size(self) -> int:
        return self.spec[-1][2]

    def state_shapes(self):
        return [("h", (1,))]

    def _run(self, inp, states, last):
        y = inp
        for lin, (_, _, n_pass) in zip(self.lins, self.spec):
            y = F.linear(y, lin.weight, lin.bias).narrow(-1, 0, n_pass)
        return y, [states[0] + y[-1, :, :1].unsqueeze(0)]


def matmul_spec(name: str, F_: int, H: int, L: int) -> list[tuple[int, int, int]]:
    """The weight shapes a model multiplies per step, in order (see the module doc)."""
    if name in ("MinGRU", "MinLSTM"):
        k = 2 if name == "MinGRU" else 3
        return [(F_ if l == 0 else H, k * H, H) for l in range(L)]
    if name in ("LRU", "LRU-half"):  # B (2N x H), C (H x 2N), the GLU (2H x H)
        N2 = 2 * H if name == "LRU" else 2 * max(1, H // 2)
        return [(F_, H, H)] + [s for _ in range(L)
                               for s in ((H, N2, N2), (N2, H, H), (H, 2 * H, H))]
    D, N, R = 2 * H, 16, -(-H // 16)  # Mamba: in_proj, x_proj (dt part on), dt_proj, out
    return [(F_, H, H)] + [s for _ in range(L) for s in
                           ((H, 2 * D, D), (D, R + 2 * N, R), (R, D, D), (D, H, H))]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_shape_arguments(p)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS + EXTRA)
    p.add_argument("--out", default=None, help="write the table to this markdown file")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    F_, T, B, L = a.input, a.steps, a.batch, a.layers
    lines = [f"{a.threads} torch thread(s), float32, CPU clock, medians of {a.repeats} "
             f"interleaved rounds after {a.warmup} warm-up; dense T={T}, B={B}, F={F_}, {L} "
             f"layers, block {a.block}; command: python benchmarks/scan_models_floor.py "
             + " ".join(sys.argv[1:] if argv is None else argv), "",
             "| hidden | model | model ms | no scan ms | matmuls ms | nn.LSTM ms | speed | "
             "no scan: speed | matmuls: speed | load |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    rows = []
    for H in a.hidden:
        torch.manual_seed(0)
        x, y = dense(B, T, F_, H)
        runs = {"nn.LSTM": engine_step(build("nn.LSTM", F_, H, L), x, y, a.block)}
        for n in a.models:
            runs[n] = engine_step(build(n, F_, H, L), x, y, a.block)
            runs[f"{n} no scan"] = without_scan(n, engine_step(build(n, F_, H, L), x, y,
                                                               a.block))
            runs[f"{n} matmuls"] = engine_step(MatmulChain(matmul_spec(n, F_, H, L)), x, y,
                                               a.block)
        load0 = os.getloadavg()[0]
        med = {k: statistics.median(v) * 1e3
               for k, v in interleaved(runs, a.repeats, a.warmup).items()}
        load = f"{load0:.1f}-{os.getloadavg()[0]:.1f}"
        lstm = med["nn.LSTM"]
        for n in a.models:
            m, ns, mm = med[n], med[f"{n} no scan"], med[f"{n} matmuls"]
            rows.append({"H": H, "model": n, "ms": m, "no_scan_ms": ns, "matmuls_ms": mm,
                         "lstm_ms": lstm})
            lines.append(f"| {H} | {n} | {m:.0f} | {ns:.0f} | {mm:.0f} | {lstm:.0f} | "
                         f"{lstm / m:.2f}x | {lstm / ns:.2f}x | {lstm / mm:.2f}x | {load} |")
        print("\n".join(lines[-len(a.models):]), flush=True)
    text = "\n".join(lines)
    write_table(text, a.out)


if __name__ == "__main__":
    main()
