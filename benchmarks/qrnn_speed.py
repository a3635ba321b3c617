"""Forward + backward time of one block: QRNN (parallel scan), QRNN (step loop), nn.LSTM.

One block is what the engine runs with a graph: ``model(x, state)`` on ``(T, B, F)``
dense float32 input, a sum-of-squares loss on the outputs, ``loss.backward()``. Models
have the same hidden size and one layer. Each model is timed ``--repeats`` times after
warm-up, interleaved so that they share the machine's noise; the table reports the
median in milliseconds and the ratio to nn.LSTM (below 1 is faster).

A second table times the recurrence alone (``vlrnn.models.linear_scan``, parallel scan
against the step loop, forward + backward) on a few ``(T, B*H)`` shapes: the scan does
``O(log T)`` tensor ops where the loop does ``O(T)``, so it wins when the per-step tensors
are small or the block is long; on big per-step tensors on a CPU both are bound by
memory traffic and the step loop's cache-resident tiles keep up (``--no-scan-table``
skips it).

    python benchmarks/qrnn_speed.py                    # hidden 256, batch 16, T 256, F 256
    python benchmarks/qrnn_speed.py --threads 1 --repeats 15
    python benchmarks/qrnn_speed.py --device cuda      # on a GPU, if there is one
    python benchmarks/qrnn_speed.py --profile --hidden 64 --input 32 --layers 2
                          # where the time goes: torch.profiler's table per op, QRNN
                          # windows 1 and 2 (block forward without a graph, as the
                          # engine's forward pass runs it, then forward + backward)

Through the engine, 2 layers, against hidden size and batch (with a plot):
``python benchmarks/model_speed.py --tables qrnn``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vlrnn.models import QRNN, linear_scan  # noqa: E402

SCAN_SHAPES = [(256, 16 * 256), (256, 16 * 16), (1024, 16 * 64), (4096, 4 * 16)]


def models(n_in: int, hidden: int, layers: int) -> Dict[str, nn.Module]:
    torch.manual_seed(0)
    return {
        "QRNN scan (window 1)": QRNN(n_in, hidden, layers, window=1),
        "QRNN scan (window 2)": QRNN(n_in, hidden, layers, window=2),
        "QRNN step loop (window 1)": QRNN(n_in, hidden, layers, window=1, scan="loop"),
        "nn.LSTM": nn.LSTM(n_in, hidden, layers),
    }


def step_fn(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        model.zero_grad(set_to_none=True)
        y, _ = model(x, None)
        (y ** 2).sum().backward()
    return step


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main(argv: List[str] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=256, help="block length T")
    p.add_argument("--input", type=int, default=256, help="input features F")
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-scan-table", action="store_true", help="skip the scan-only table")
    p.add_argument("--profile", action="store_true",
                   help="print torch.profiler's per-op table for the QRNNs and stop")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = a.device
    x = torch.randn(a.steps, a.batch, a.input, device=dev)
    if a.profile:
        profile_qrnn(a, x)
        return
    runs = {name: step_fn(m.to(dev), x) for name, m in models(a.input, a.hidden, a.layers).items()}
    times: Dict[str, List[float]] = {name: [] for name in runs}
    for _ in range(a.warmup):
        for f in runs.values():
            f()
    for _ in range(a.repeats):
        for name, f in runs.items():  # interleaved: all models see the same noise
            sync(dev)
            t0 = time.perf_counter()
            f()
            sync(dev)
            times[name].append(time.perf_counter() - t0)
    med = {n: statistics.median(t) * 1e3 for n, t in times.items()}
    ref = med["nn.LSTM"]
    print(f"block forward+backward, {dev}, {torch.get_num_threads()} threads: T={a.steps}, "
          f"B={a.batch}, F={a.input}, H={a.hidden}, layers={a.layers}, float32, "
          f"median of {a.repeats}")
    print(f"{'model':<28}{'median ms':>11}{'min ms':>9}{'vs LSTM':>9}{'LSTM / it':>11}")
    for n in runs:
        print(f"{n:<28}{med[n]:>11.2f}{min(times[n]) * 1e3:>9.2f}{med[n] / ref:>9.2f}"
              f"{ref / med[n]:>10.1f}x")
    if not a.no_scan_table:
        scan_table(dev, a.repeats, a.warmup)


def profile_qrnn(a, x: torch.Tensor) -> None:
    """Self time per op of ``--repeats`` engine-like block steps (a forward pass without a
    graph, then forward + backward), QRNN window 1 and 2. The profiler's own cost per op
    inflates the many small ops of the scans; read the shares, not the milliseconds."""
    from torch.profiler import ProfilerActivity, profile
    for name, m in list(models(a.input, a.hidden, a.layers).items())[:2]:
        m = m.to(x.device)
        graph_step = step_fn(m, x)

        def step() -> None:
            with torch.no_grad():
                m(x, None)  # noqa: B023 (run within this iteration)
            graph_step()  # noqa: B023 (run within this iteration)
        for _ in range(a.warmup):
            step()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(a.repeats):
                step()
        print(f"{name}: T={a.steps}, B={a.batch}, F={a.input}, H={a.hidden}, "
              f"layers={a.layers}, {a.repeats} steps, {torch.get_num_threads()} threads")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


def scan_table(dev: str, repeats: int, warmup: int) -> None:
    """linear_scan forward + backward alone: parallel scan against the step loop."""
    print(f"\nlinear_scan forward+backward alone, median ms of {repeats}")
    print(f"{'T':>6}{'B*H':>8}{'parallel':>10}{'loop':>10}{'loop / parallel':>17}")
    for T, n in SCAN_SHAPES:
        a = torch.rand(T, n, device=dev, requires_grad=True)
        b = torch.randn(T, n, device=dev, requires_grad=True)
        res = {}
        for method in ("parallel", "loop"):
            def run() -> None:
                linear_scan(a, b, method=method).sum().backward()  # noqa: B023 (run within this iteration)
            for _ in range(warmup):
                run()
            ts = []
            for _ in range(repeats):
                sync(dev)
                t0 = time.perf_counter()
                run()
                sync(dev)
                ts.append(time.perf_counter() - t0)
            res[method] = statistics.median(ts) * 1e3
        print(f"{T:>6}{n:>8}{res['parallel']:>10.2f}{res['loop']:>10.2f}"
              f"{res['loop'] / res['parallel']:>16.1f}x")


if __name__ == "__main__":
    main()
