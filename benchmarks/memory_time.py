"""Peak memory and time of vlrnn against plain BPTT, each configuration in a fresh process.

Model: 2-layer nn.LSTM (16 inputs, hidden 128), batch 16, a linear head with an MSE loss
per step, block_len 256, float32, dense time-major input. Methods:

- ``plain``: ordinary BPTT, ``vlrnn.full_backward`` (one nn.LSTM call, whole graph kept);
- ``vlrnn``: ``vlrnn.block_backward``;
- ``handloop``: a bare hand-written block loop over the same kernels (no-grad pass keeping
  boundary states, then blocks last to first with ``torch.autograd.backward``), the floor
  for what the engine's own bookkeeping may cost.

Each (method, T) runs ``--reps`` times in its own process, methods interleaved so that
they share the machine's noise; the table reports medians and the ratio of medians to
plain BPTT. Memory is the peak RSS of the process (``resource.getrusage``) and, to remove
what the process holds anyway, the peak above the RSS measured once the model and
inputs exist. ``--check`` also compares float64 gradients of vlrnn and plain BPTT.

    python benchmarks/memory_time.py --quick          # about a minute
    python benchmarks/memory_time.py                  # the README table (~1 hour)
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import markdown, medians, plot_loglog, rss_mb, run_worker, spawn  # noqa: E402

FULL = {"plain": [1000, 4000, 16000, 64000], "vlrnn_only": [100_000, 1_000_000]}
QUICK = {"plain": [500, 2000, 8000], "vlrnn_only": [32_000]}
CONFIG = dict(n_in=16, hidden=128, layers=2, batch=16, block_len=256)


# -- worker: one configuration in this process ---------------------------------------------
def build(T: int, dtype):
    import torch
    from torch import nn
    torch.manual_seed(0)
    c = CONFIG
    model = nn.LSTM(c["n_in"], c["hidden"], num_layers=c["layers"]).to(dtype)
    head = nn.Linear(c["hidden"], 1).to(dtype)
    x = torch.randn(T, c["batch"], c["n_in"], dtype=dtype)
    y = torch.randn(T, c["batch"], 1, dtype=dtype)
    mse = nn.MSELoss(reduction="none")
    return model, head, x, y, (lambda out, tgt: mse(head(out), tgt))


def hand_loop(model, loss_fn, x, y, block_len):
    """What a careful user would write by hand: no engine, same kernels."""
    import torch
    T, B = x.shape[:2]
    starts = list(range(0, T, block_len))
    bounds, h = [], None
    with torch.no_grad():
        for s in starts:
            bounds.append(h)
            _, h = model(x[s:s + block_len], h)
    g = None
    for s, h0 in zip(reversed(starts), reversed(bounds)):
        if h0 is not None:
            h0 = tuple(t.detach().requires_grad_() for t in h0)
        out, h1 = model(x[s:s + block_len], h0)
        loss = loss_fn(out.reshape(-1, out.shape[-1]), y[s:s + block_len].reshape(-1, 1)).sum() / (T * B)
        if g is None:
            loss.backward()
        else:
            torch.autograd.backward([loss, *h1], [None, *g])
        g = None if h0 is None else tuple(t.grad for t in h0)


def worker(method: str, T: int, iters: int) -> dict:
    import torch

    import vlrnn
    model, head, x, y, loss_fn = build(T, torch.float32)
    base = rss_mb()
    bl = CONFIG["block_len"]
    run = {
        "plain": lambda: vlrnn.full_backward(model, loss_fn, x, y),
        "vlrnn": lambda: vlrnn.block_backward(model, loss_fn, x, y, block_len=bl),
        "handloop": lambda: hand_loop(model, loss_fn, x, y, bl),
    }[method]
    times = []
    for _ in range(iters):
        model.zero_grad(set_to_none=True)
        head.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    peak = rss_mb()
    return dict(method=method, T=T, seconds=min(times), rss_base_mb=base, rss_peak_mb=peak,
                extra_mb=peak - base)


def check(T: int) -> dict:
    """float64: max relative gradient error of vlrnn against plain BPTT."""
    import torch

    import vlrnn
    model, head, x, y, loss_fn = build(T, torch.float64)
    params = list(model.parameters()) + list(head.parameters())
    vlrnn.full_backward(model, loss_fn, x, y)
    ref = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    vlrnn.block_backward(model, loss_fn, x, y, block_len=CONFIG["block_len"])
    err = max(((p.grad - r).abs().max() / r.abs().max()).item() for p, r in zip(params, ref))
    return dict(T=T, max_rel_err=err)


# -- driver ---------------------------------------------------------------------------------
def fmt_table(rows: list) -> str:
    return markdown(rows, [("T", "T", ","), ("method", "method", ""),
                           ("peak RSS (MB)", "rss_peak_mb", ".0f"),
                           ("above model+inputs (MB)", "extra_mb", ".0f"),
                           ("time (s)", "seconds", ".2f"), ("time / plain", "ratio", ".2f")])


def plot(rows: list, path: Path) -> bool:
    return plot_loglog(rows, (("plain", "o-"), ("vlrnn", "s-"), ("handloop", "x--")),
                       "peak RSS above model+inputs (MB)",
                       "2-layer LSTM, hidden 128, batch 16, block 256 (CPU, float32)", path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small T, one rep: about a minute")
    p.add_argument("--reps", type=int, default=None, help="processes per configuration "
                   "(default 3, 1 with --quick)")
    p.add_argument("--iters", type=int, default=2, help="timed steps per process (min taken)")
    p.add_argument("--check", action="store_true", help="also compare float64 gradients")
    p.add_argument("--methods", default="plain,vlrnn,handloop")
    p.add_argument("--out", default=str(HERE / "results"), help="folder for CSV and plot")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per process")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process "
                   "(default 1: on a shared machine, spinning OpenMP threads make "
                   "timings meaningless)")
    p.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        return run_worker(a.worker, worker, check)

    grid = QUICK if a.quick else FULL
    reps = a.reps or (1 if a.quick else 3)
    methods = a.methods.split(",")
    jobs = [(m, T) for T in grid["plain"] for m in methods]
    jobs += [("vlrnn", T) for T in grid["vlrnn_only"] if "vlrnn" in methods]
    results = {}
    for rep in range(reps):  # interleaved: every method sees the same machine load
        for m, T in jobs:
            if T in grid["vlrnn_only"] and rep > 0:
                continue  # the longest runs once: there is no plain run to compare with
            iters = a.iters if T <= 100_000 else 1
            r = spawn(__file__, [m, T, iters, a.threads], a.timeout)
            results.setdefault((m, T), []).append(r)
            status = r.get("error") or f"{r['seconds']:.2f}s, peak {r['rss_peak_mb']:.0f} MB"
            print(f"[rep {rep + 1}/{reps}] {m:8s} T={T:>9,}: {status}", flush=True)
    rows = medians(results, ["seconds", "rss_peak_mb", "extra_mb"])
    plain = {r["T"]: r["seconds"] for r in rows if r["method"] == "plain" and "seconds" in r}
    for r in rows:
        r["ratio"] = r["seconds"] / plain[r["T"]] if "seconds" in r and r["T"] in plain else None
    rows.sort(key=lambda r: (r["T"], methods.index(r["method"])))

    print()
    print(fmt_table(rows))
    vl = sorted((r["T"], r["extra_mb"]) for r in rows if r["method"] == "vlrnn" and "extra_mb" in r)
    if len(vl) >= 2:
        print(f"\nvlrnn memory above model+inputs: {vl[0][1]:.0f} MB at T={vl[0][0]:,}, "
              f"{vl[-1][1]:.0f} MB at T={vl[-1][0]:,} ({vl[-1][1] / max(vl[0][1], 1):.2f}x)")
    if a.check:
        for T in grid["plain"][:3]:
            c = spawn(__file__, ["check", T, a.threads], a.timeout)
            print(f"float64 gradient check T={T:,}: " +
                  (c.get("error") or f"max relative error {c['max_rel_err']:.1e}"))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "memory_time_quick" if a.quick else "memory_time"
    import csv
    with open(out / f"{name}.csv", "w", newline="") as f:
        keys = ["T", "method", "rss_peak_mb", "extra_mb", "seconds", "ratio", "reps", "error"]
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    if plot(rows, out / f"{name}.png"):
        print(f"plot: {out / f'{name}.png'}")
    print(f"table: {out / f'{name}.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
