"""Plain BPTT through a *packed ragged* nn.LSTM/nn.GRU batch on the CPU against vlrnn.

torch's packed CPU kernels slow down faster than linearly with the number of steps in
one call (their backward time per step grows with the sequence length), so plain BPTT
over a long ragged batch gets very slow; vlrnn calls the model on blocks of
``block_len`` steps, so its time per step stays flat. Each (model, method, T) runs in a
fresh process (plain runs are capped by ``--timeout``); the batch holds ``--batch``
sequences with lengths drawn in ``[T/2, T]`` (unsorted, the longest exactly ``T``),
16 inputs, hidden 64, one layer, a linear head with an MSE loss per step, float32,
one torch thread. Methods: ``plain`` (``vlrnn.full_backward``: one call on the whole
batch, whole graph kept), ``vlrnn`` (``vlrnn.block_backward``, block 256, same
``nn.LSTM``/``nn.GRU``), ``vlrnn StackedRNN`` (the same cell as
``vlrnn.models.StackedRNN``, whose fused path runs dense kernels per block).

    python benchmarks/ragged_long.py                 # README table, T = 1k .. 32k
    python benchmarks/ragged_long.py --quick         # T = 256, 512 (CI)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from common import rss_mb, spawn  # noqa: E402

METHODS = ("plain", "vlrnn", "vlrnn StackedRNN")
CONFIG = dict(n_in=16, hidden=64, block_len=256)


def worker(kind: str, method: str, T: int, batch: int) -> dict:
    import torch
    from torch import nn
    from torch.nn.utils.rnn import pack_sequence

    import vlrnn
    from vlrnn.models import StackedRNN
    torch.set_num_threads(1)
    torch.manual_seed(0)
    c = CONFIG
    g = torch.Generator().manual_seed(1)
    lengths = torch.randint(T // 2, T + 1, (batch,), generator=g).tolist()
    lengths[0] = T
    x = pack_sequence([torch.randn(n, c["n_in"], generator=g) for n in lengths],
                      enforce_sorted=False)
    y = pack_sequence([torch.randn(n, 1, generator=g) for n in lengths], enforce_sorted=False)
    if method == "vlrnn StackedRNN":
        model = StackedRNN(c["n_in"], c["hidden"], cell=kind)
    else:
        model = {"lstm": nn.LSTM, "gru": nn.GRU}[kind](c["n_in"], c["hidden"])
    head = nn.Linear(c["hidden"], 1)
    loss_fn = lambda out, tgt: (head(out) - tgt) ** 2  # noqa: E731
    # torch imports sympy (about 1-3 s) on the first backward given explicit gradients,
    # once per process; done before the clock starts, so that it counts for no method
    import torch.fx.experimental.symbolic_shapes  # noqa: F401
    base = rss_mb()
    # CPU time of this one-thread process: what other processes on a shared machine take
    # does not count (the cap, --timeout, is on elapsed time)
    t0 = time.process_time()
    if method == "plain":
        vlrnn.full_backward(model, loss_fn, x, y)
    else:
        vlrnn.block_backward(model, loss_fn, x, y, block_len=c["block_len"])
    sec = time.process_time() - t0
    return dict(seconds=sec, extra_mb=rss_mb() - base, steps=sum(lengths))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", nargs=4, metavar=("KIND", "METHOD", "T", "BATCH"))
    p.add_argument("--kinds", nargs="+", default=["lstm", "gru"])
    p.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384, 32768])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per plain run")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=None, help="markdown file for the table")
    a = p.parse_args(argv)
    if a.worker:
        kind, method, T, batch = a.worker
        method = method.replace("_", " ")
        print(json.dumps(worker(kind, method, int(T), int(batch))))
        return
    if a.quick:
        a.lengths, a.kinds = [256, 512], ["lstm"]
    script = str(Path(__file__).resolve())
    lines = [f"packed ragged batch of {a.batch} sequences, lengths in [T/2, T], 16 inputs, "
             f"hidden 64, 1 layer, float32, one thread, one run per cell in a fresh process, "
             f"CPU seconds; plain capped at {a.timeout:.0f} s elapsed; load average "
             f"{os.getloadavg()[0]:.1f} at start",
             "", "| cell | T | plain s | vlrnn s | vlrnn StackedRNN s | plain / vlrnn StackedRNN |",
             "|---|---:|---:|---:|---:|---:|"]
    plain_dead = {k: False for k in a.kinds}
    for T in a.lengths:
        for kind in a.kinds:
            res = {}
            for method in METHODS:
                if method == "plain" and plain_dead[kind]:
                    res[method] = {"error": "skipped"}
                    continue
                timeout = a.timeout if method == "plain" else 10 * a.timeout
                res[method] = spawn(script, [kind, method.replace(" ", "_"), T, a.batch],
                                    timeout)
                if method == "plain" and "error" in res[method]:
                    plain_dead[kind] = True

            def cell(m):
                err = res[m].get("error", "")  # noqa: B023 (run within this iteration)
                if err == "skipped":
                    return f"not run (> {a.timeout:.0f} at a shorter T)"
                if "timed out" in err:
                    return f"> {a.timeout:.0f} (timeout)"
                return err or f"{res[m]['seconds']:.2f}"  # noqa: B023 (run within this iteration)
            ratio = (f"{res['plain']['seconds'] / res['vlrnn StackedRNN']['seconds']:.1f}x"
                     if "error" not in res["plain"] and "error" not in res["vlrnn StackedRNN"]
                     else "")
            lines.append(f"| {kind.upper()} | {T} | {cell('plain')} | {cell('vlrnn')} | "
                         f"{cell('vlrnn StackedRNN')} | {ratio} |")
            print(lines[-1], flush=True)
    text = "\n".join(lines)
    print("\n" + text)
    if a.out:
        Path(a.out).write_text(f"command: python benchmarks/ragged_long.py "
                               f"{' '.join(argv or sys.argv[1:])}\n\n{text}\n")


if __name__ == "__main__":
    main()
