"""Two checkouts of vlrnn side by side: the same training workloads, each in fresh
processes, alternating between the two, so that a refactor's cost in time and memory is
measured as a ratio in one run (shared machines are noisy; never compare across runs).

Workloads (one thread, float32, packed ragged batch of 16 sequences, lengths T down to
T/2, a 2-layer model, one ``block_backward`` per repetition after a warm-up call):
``lstm`` (nn.LSTM, hidden 128, flat schedule), ``lstm_revolve`` (the same under
``schedule="revolve"``), ``stacked_gru`` (``StackedRNN`` over GRU cells), ``qrnn``
(``QRNN``), ``outputs`` (``block_outputs`` then backward of a loss on the outputs).
Reported per workload: median seconds per call and median peak RSS (VmHWM) of each
checkout, and new / old.

    python benchmarks/compare_versions.py --old /path/to/old/checkout --reps 5
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORKLOADS = ["lstm", "lstm_revolve", "stacked_gru", "qrnn", "outputs"]


def worker(name: str, steps: int, calls: int) -> dict:
    import torch
    from torch import nn
    from torch.nn.utils.rnn import pack_sequence

    import vlrnn
    from vlrnn.memory import peak_rss_mb
    from vlrnn.models import QRNN, StackedRNN, WithHead

    torch.set_num_threads(1)
    torch.manual_seed(0)
    hidden, inputs = 128, 32
    if name.startswith("lstm") or name == "outputs":
        rnn = nn.LSTM(inputs, hidden, num_layers=2)
    elif name == "stacked_gru":
        rnn = StackedRNN(inputs, hidden, num_layers=2, cell="gru")
    else:
        rnn = QRNN(inputs, hidden, num_layers=2)
    model = WithHead(rnn, nn.Linear(hidden, 1))
    lengths = [steps - (steps // 2) * i // 15 for i in range(16)]
    x = pack_sequence([torch.randn(n, inputs) for n in lengths])
    y = pack_sequence([torch.randn(n, 1) for n in lengths])
    loss_fn = nn.MSELoss(reduction="none")
    schedule = "revolve" if name == "lstm_revolve" else "flat"

    def call() -> None:
        model.zero_grad(set_to_none=True)
        if name == "outputs":
            out, _ = vlrnn.block_outputs(model, x, block_len=256)
            (out.data - y.data).pow(2).mean().backward()
        else:
            vlrnn.block_backward(model, loss_fn, x, y, block_len=256, schedule=schedule)

    call()  # warm-up: allocator and kernels
    times = []
    for _ in range(calls):
        t0 = time.process_time()
        call()
        times.append(time.process_time() - t0)
    return {"seconds": statistics.median(times), "peak_mb": peak_rss_mb()}


def spawn(checkout: Path, name: str, steps: int, calls: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(checkout), OMP_NUM_THREADS="1")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, str(steps), str(calls)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(checkout))
    if res.returncode != 0:
        return {"error": (res.stderr.strip().splitlines() or ["?"])[-1][:120]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        print(json.dumps(worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--old", type=Path, required=True, help="the other checkout's root")
    p.add_argument("--new", type=Path, default=HERE.parent, help="default: this checkout")
    p.add_argument("--steps", type=int, default=4096, help="longest sequence (T)")
    p.add_argument("--calls", type=int, default=3, help="timed calls per process")
    p.add_argument("--reps", type=int, default=5, help="fresh processes per checkout")
    p.add_argument("--workloads", nargs="+", default=WORKLOADS, choices=WORKLOADS)
    p.add_argument("--out", type=Path, default=None, help="also write the table here")
    a = p.parse_args()
    runs = {(w, side): [] for w in a.workloads for side in ("old", "new")}
    for rep in range(a.reps):
        for w in a.workloads:
            # alternate which checkout goes first, so that drift in load hits both
            for side in (("old", "new") if rep % 2 == 0 else ("new", "old")):
                r = spawn(a.old if side == "old" else a.new, w, a.steps, a.calls)
                runs[(w, side)].append(r)
                print(f"rep {rep} {w} {side}: {r}", file=sys.stderr, flush=True)
    lines = [f"T={a.steps}, batch 16, hidden 128, 2 layers, block 256, one thread; median of "
             f"{a.reps} fresh processes x {a.calls} calls (CPU seconds per call)", "",
             "| workload | old s | new s | new/old time | old peak MB | new peak MB | new/old peak |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for w in a.workloads:
        med = {}
        for side in ("old", "new"):
            ok = [r for r in runs[(w, side)] if "error" not in r]
            if not ok:
                med[side] = None
                continue
            med[side] = (statistics.median(r["seconds"] for r in ok),
                         statistics.median(r["peak_mb"] for r in ok))
        if med["old"] is None or med["new"] is None:
            err = next(r["error"] for s in ("old", "new") for r in runs[(w, s)] if "error" in r)
            lines.append(f"| {w} | error: {err} | | | | | |")
            continue
        (to, mo), (tn, mn) = med["old"], med["new"]
        lines.append(f"| {w} | {to:.3f} | {tn:.3f} | {tn / to:.2f} | {mo:.0f} | {mn:.0f} | "
                     f"{mn / mo:.2f} |")
    table = "\n".join(lines)
    print(table)
    if a.out is not None:
        a.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
