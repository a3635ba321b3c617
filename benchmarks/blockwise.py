"""Blockwise against plain autograd: a bidirectional LSTM with attention pooling over time.

Model: ``nn.LSTM(16, 128, num_layers=2, bidirectional=True)``, batch 4, dense time-major
float32 input, then softmax attention pooling over all T steps and a linear head with an
MSE loss on the pooled vector: a loss that couples every step, which ``block_loss``
cannot take. Methods:

- ``plain``: the LSTM called on the whole sequence, ``loss.backward()``;
- ``blockwise``: the same code with ``vlrnn.Blockwise(lstm, block_len=256)`` in its place.

Each (method, T) runs in its own process (``benchmarks/common.py``'s ``spawn``),
methods interleaved so that they share the machine's noise; the table reports medians
and each method's ratio to plain at the same T. Memory is the peak RSS above the RSS
once the model and inputs exist (``vlrnn.memory``). ``--check`` compares float64
gradients of the two methods.

    python benchmarks/blockwise.py --quick       # about two minutes
    python benchmarks/blockwise.py               # the README table (~30 minutes)
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from common import markdown, medians, plot_loglog, rss_mb, run_worker, spawn  # noqa: E402

# T with both methods (reps each), and T with one rep (long runs)
FULL = {"both": [1000, 2000, 5000, 10_000, 20_000], "once": [50_000, 100_000]}
QUICK = {"both": [500, 2000], "once": [5000]}
CONFIG = dict(n_in=16, hidden=128, layers=2, batch=4, block_len=256)


# -- worker: one configuration in this process ---------------------------------------------
def build(T: int, dtype):
    import torch
    from torch import nn
    torch.manual_seed(0)
    c = CONFIG
    lstm = nn.LSTM(c["n_in"], c["hidden"], num_layers=c["layers"], bidirectional=True).to(dtype)
    score = nn.Linear(2 * c["hidden"], 1).to(dtype)
    head = nn.Linear(2 * c["hidden"], 1).to(dtype)
    x = torch.randn(T, c["batch"], c["n_in"], dtype=dtype)
    target = torch.randn(c["batch"], 1, dtype=dtype)
    return lstm, score, head, x, target


def step(rnn, score, head, x, target):
    """Forward and backward of the attention-pooled loss (the user's own code)."""
    import torch
    y, _ = rnn(x)                                  # (T, B, 2H)
    weights = torch.softmax(score(y), dim=0)       # attention over all T steps
    pooled = (weights * y).sum(0)                  # (B, 2H)
    loss = ((head(pooled) - target) ** 2).mean()
    loss.backward()
    return loss.detach()


def make_rnn(method: str, lstm):
    import vlrnn
    return vlrnn.Blockwise(lstm, block_len=CONFIG["block_len"]) if method == "blockwise" else lstm


def worker(method: str, T: int, iters: int) -> dict:
    import torch
    lstm, score, head, x, target = build(T, torch.float32)
    rnn = make_rnn(method, lstm)
    base = rss_mb()
    times = []
    for _ in range(iters):
        for m in (lstm, score, head):
            m.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        step(rnn, score, head, x, target)
        times.append(time.perf_counter() - t0)
    peak = rss_mb()
    return dict(method=method, T=T, seconds=min(times), rss_base_mb=base, rss_peak_mb=peak,
                extra_mb=peak - base)


def check(T: int) -> dict:
    """float64: max relative gradient error of Blockwise against plain autograd."""
    import torch
    lstm, score, head, x, target = build(T, torch.float64)
    params = [*lstm.parameters(), *score.parameters(), *head.parameters()]
    grads = {}
    for method in ("plain", "blockwise"):
        for p in params:
            p.grad = None
        step(make_rnn(method, lstm), score, head, x, target)
        grads[method] = [p.grad.clone() for p in params]
    err = max(((a - b).abs().max() / a.abs().max()).item()
              for a, b in zip(grads["plain"], grads["blockwise"]))
    return dict(T=T, max_rel_err=err)


# -- driver ---------------------------------------------------------------------------------
def fmt_table(rows: list) -> str:
    return markdown(rows, [("T", "T", ","), ("method", "method", ""),
                           ("peak above model+inputs (MB)", "extra_mb", ".0f"),
                           ("memory / plain", "mem_ratio", ".3f"),
                           ("time (s)", "seconds", ".2f"), ("time / plain", "ratio", ".2f"),
                           ("runs", "reps", "")])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small T, one rep: about two minutes")
    p.add_argument("--reps", type=int, default=None,
                   help="processes per configuration (default 3, 1 with --quick)")
    p.add_argument("--iters", type=int, default=2, help="timed steps per process (min taken)")
    p.add_argument("--check", action="store_true", help="also compare float64 gradients")
    p.add_argument("--out", default=str(HERE / "results"), help="folder for CSV and plot")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per process")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        return run_worker(a.worker, worker, check)

    grid = QUICK if a.quick else FULL
    reps = a.reps or (1 if a.quick else 3)
    methods = ["plain", "blockwise"]
    results = {}
    jobs = [(rep, T) for rep in range(reps) for T in grid["both"]] + \
        [(0, T) for T in grid["once"]]
    for rep, T in jobs:  # methods interleaved at each T: they share the machine's load
        iters = a.iters if T <= 20_000 else 1
        for m in (methods if rep % 2 == 0 else methods[::-1]):
            r = spawn(__file__, [m, T, iters, a.threads], a.timeout)
            results.setdefault((m, T), []).append(r)
            status = r.get("error") or f"{r['seconds']:.2f}s, +{r['extra_mb']:.0f} MB"
            print(f"[rep {rep + 1}] {m:9s} T={T:>7,}: {status}", flush=True)
    rows = medians(results, ["seconds", "rss_peak_mb", "extra_mb"])
    plain = {r["T"]: r for r in rows if r["method"] == "plain" and "seconds" in r}
    for r in rows:
        ref = plain.get(r["T"])
        r["ratio"] = r["seconds"] / ref["seconds"] if ref and "seconds" in r else None
        r["mem_ratio"] = r["extra_mb"] / ref["extra_mb"] if ref and "extra_mb" in r else None
    rows.sort(key=lambda r: (r["T"], methods.index(r["method"])))
    print()
    print(fmt_table(rows))
    if a.check:
        for T in grid["both"][:2]:
            c = spawn(__file__, ["check", T, a.threads], a.timeout)
            print(f"float64 gradient check T={T:,}: " +
                  (c.get("error") or f"max relative error {c['max_rel_err']:.1e}"))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "blockwise_quick" if a.quick else "blockwise"
    with open(out / f"{name}.csv", "w", newline="") as f:
        keys = ["T", "method", "extra_mb", "mem_ratio", "seconds", "ratio", "reps", "error"]
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    (out / f"{name}.md").write_text(fmt_table(rows) + "\n")
    if plot_loglog(rows, (("plain", "o-"), ("blockwise", "s-")),
                   "peak RSS above model+inputs (MB)",
                   "bidirectional 2-layer LSTM (128), attention pooling, batch 4 (CPU, float32)",
                   out / f"{name}.png"):
        print(f"plot: {out / f'{name}.png'}")
    print(f"table: {out / f'{name}.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
