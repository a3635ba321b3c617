"""vlrnn's schedules against what a PyTorch user would otherwise write.

Each configuration runs in a fresh process (peak RSS from ``resource.getrusage``), the
methods interleaved so that they share the machine's noise.

``compare`` (2-layer LSTM, 16 inputs, hidden 128, batch 16, block 256, float32):

- ``plain``: plain BPTT (``vlrnn.full_backward``);
- ``checkpoint``: a hand-written ``torch.utils.checkpoint`` block loop;
- ``truncated``: truncated BPTT, window = block_len, state detached between windows
  (fast but inexact: its gradient's cosine similarity with the exact one is reported);
- ``flat``, ``two_level``, ``revolve``: ``vlrnn.block_backward(..., schedule=...)``
  (``revolve`` with its default ceil(log2 K) + 2 states; ``recursive`` is its alias);
- ``bisection``: what ``recursive`` was before it became an alias of ``revolve`` (keep
  boundary 0, rebuild by repeated bisection), defined here for comparison.

``slope`` (1-layer LSTM, 16 inputs, hidden 32, batch 4, input read block by block from a
``.npy`` file): peak RSS of each schedule at T = 1e4, 1e5, 1e6 and the log-log slope.

``huge``: the same small model over T = 1e7 steps (a 2.5 GB ``.npy`` input) with
``two_level`` and ``revolve``.

``counts``: no timing, exact: K one-step blocks of a tiny GRU; every block forward call
the engine makes (all of them, and those without a graph) and the most boundary states
held at once, per schedule.

    python benchmarks/schedules.py compare [--quick] [--methods flat,revolve]
    python benchmarks/schedules.py slope
    python benchmarks/schedules.py huge --data-dir /tmp/vlrnn-bench
    python benchmarks/schedules.py counts [--quick]
    python benchmarks/schedules.py interleave [--methods bisection,revolve] [--reps 3]

``interleave``: one process, the schedules alternating, time and calls at T = 1e5.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import markdown, medians, plot_loglog, rss_mb, spawn  # noqa: E402

BIG = dict(n_in=16, hidden=128, layers=2, batch=16)
SMALL = dict(n_in=16, hidden=32, layers=1, batch=4)
BLOCK = 256
SLOPE_METHODS = ("flat", "two_level", "bisection", "revolve")
THREADS = [1]  # torch threads per worker process (--threads)


# -- the old "recursive" schedule, for comparison -------------------------------------------
def bisection(n_blocks: int):
    """vlrnn's ``recursive`` schedule before it became ``revolve``: keep boundary 0 only;
    to reach ``k`` from ``start``, keep the midpoints of repeated bisection."""
    from vlrnn.engine._schedules import Schedule

    class Bisection(Schedule):
        name = "bisection"

        def keep(self, k):
            return k == 0

        def rebuild(self, start, k):
            points, p = [], start
            while p < k:
                p += max(1, (k - p + 1) // 2)
                points.append(p)
            return points

    return Bisection(n_blocks)


def schedule_arg(method: str):
    return bisection if method == "bisection" else method


# -- worker --------------------------------------------------------------------------------
def build(cfg, dtype=None):
    import torch
    from torch import nn
    torch.manual_seed(0)
    model = nn.LSTM(cfg["n_in"], cfg["hidden"], num_layers=cfg["layers"])
    head = nn.Linear(cfg["hidden"], 1)
    if dtype is not None:
        model, head = model.to(dtype), head.to(dtype)
    mse = nn.MSELoss(reduction="none")
    return model, head, (lambda out, tgt: mse(head(out), tgt))


def checkpoint_loop(model, loss_fn, x, y, block_len):
    """What a PyTorch user writes today: one torch.utils.checkpoint per block."""
    from torch.utils.checkpoint import checkpoint
    T, B = x.shape[:2]

    def block(xb, yb, *h):
        out, (hn, cn) = model(xb, tuple(h) if h else None)
        loss = loss_fn(out.reshape(-1, out.shape[-1]), yb.reshape(-1, yb.shape[-1])).sum()
        return loss / (T * B), hn, cn

    total, h = 0.0, ()
    for s in range(0, T, block_len):
        loss, hn, cn = checkpoint(block, x[s:s + block_len], y[s:s + block_len], *h,
                                  use_reentrant=False)
        total = total + loss
        h = (hn, cn)
    total.backward()


def truncated(model, loss_fn, x, y, block_len):
    """Truncated BPTT: the state is carried forward but detached between windows."""
    T, B = x.shape[:2]
    h = None
    for s in range(0, T, block_len):
        out, h = model(x[s:s + block_len], h)
        loss = loss_fn(out.reshape(-1, out.shape[-1]),
                       y[s:s + block_len].reshape(-1, y.shape[-1])).sum() / (T * B)
        loss.backward()
        h = tuple(t.detach() for t in h)


def inputs(cfg, T, data_dir):
    """(x, y): in-memory tensors, or memmaps of .npy files when ``data_dir`` is given."""
    import numpy as np
    import torch
    if data_dir:
        x = np.load(os.path.join(data_dir, f"x_{T}.npy"), mmap_mode="r")
        y = np.load(os.path.join(data_dir, f"y_{T}.npy"), mmap_mode="r")
        return x, y
    g = torch.Generator().manual_seed(1)
    return (torch.randn(T, cfg["batch"], cfg["n_in"], generator=g),
            torch.randn(T, cfg["batch"], 1, generator=g))


def worker(method: str, T: int, cfg_name: str, data_dir: str) -> dict:
    import torch

    import vlrnn
    cfg = BIG if cfg_name == "big" else SMALL
    model, head, loss_fn = build(cfg)
    x, y = inputs(cfg, T, data_dir or None)
    params = list(model.parameters()) + list(head.parameters())
    base = rss_mb()
    t0 = time.perf_counter()
    if method == "plain":
        vlrnn.full_backward(model, loss_fn, x, y)
    elif method == "checkpoint":
        checkpoint_loop(model, loss_fn, x, y, BLOCK)
    elif method == "truncated":
        truncated(model, loss_fn, x, y, BLOCK)
    else:
        vlrnn.block_backward(model, loss_fn, x, y, block_len=BLOCK,
                             schedule=schedule_arg(method))
    seconds = time.perf_counter() - t0
    peak = rss_mb()
    row = dict(method=method, T=T, seconds=seconds, rss_peak_mb=peak, extra_mb=peak - base)
    if method == "truncated":  # how far from the exact gradient
        got = torch.cat([p.grad.flatten() for p in params])
        for p in params:
            p.grad = None
        vlrnn.block_backward(model, loss_fn, x, y, block_len=BLOCK)
        exact = torch.cat([p.grad.flatten() for p in params])
        row["cosine"] = float(torch.nn.functional.cosine_similarity(got, exact, dim=0))
    return row


def check(method: str, T: int) -> dict:
    """float64: max relative gradient error against plain BPTT."""
    import torch

    import vlrnn
    model, head, loss_fn = build(BIG, torch.float64)
    x, y = inputs(BIG, T, None)
    x, y = x.double(), y.double()
    params = list(model.parameters()) + list(head.parameters())
    vlrnn.full_backward(model, loss_fn, x, y)
    ref = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    if method == "checkpoint":
        checkpoint_loop(model, loss_fn, x, y, BLOCK)
    else:
        vlrnn.block_backward(model, loss_fn, x, y, block_len=BLOCK,
                             schedule=schedule_arg(method))
    err = max(((p.grad - r).abs().max() / r.abs().max()).item() for p, r in zip(params, ref))
    return dict(method=method, T=T, max_rel_err=err)


# -- driver ---------------------------------------------------------------------------------
def write_npy(data_dir: Path, T: int, cfg) -> None:
    """x_T.npy (T, B, 16) and y_T.npy (T, B, 1), float32, written in chunks."""
    import numpy as np
    xp, yp = data_dir / f"x_{T}.npy", data_dir / f"y_{T}.npy"
    if xp.exists() and yp.exists():
        return
    rng = np.random.default_rng(1)
    for path, shape in ((xp, (T, cfg["batch"], cfg["n_in"])), (yp, (T, cfg["batch"], 1))):
        arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
        step = 1_000_000
        for s in range(0, T, step):
            arr[s:s + step] = rng.standard_normal((min(step, T - s),) + shape[1:], dtype=np.float32)
        arr.flush()
        del arr


def run_grid(jobs, reps, timeout, cfg_name, data_dir=""):
    results = {}
    for rep in range(reps):
        for method, T in jobs:
            r = spawn(__file__, [method, T, cfg_name, data_dir or "-", THREADS[0]], timeout)
            results.setdefault((method, T), []).append(r)
            status = r.get("error") or f"{r['seconds']:.2f}s, peak {r['rss_peak_mb']:.0f} MB"
            print(f"[rep {rep + 1}/{reps}] {method:10s} T={T:>10,}: {status}", flush=True)
    return medians(results, ["seconds", "rss_peak_mb", "extra_mb", "cosine"])


def compare(a) -> str:
    Ts = [2000, 8000] if a.quick else [4000, 16000, 64000]
    methods = (a.methods.split(",") if a.methods else
               ["plain", "checkpoint", "truncated", "flat", "two_level", "bisection", "revolve"])
    jobs = [(m, T) for T in Ts for m in methods]
    rows = run_grid(jobs, a.reps or (1 if a.quick else 3), a.timeout, "big")
    plain = {r["T"]: r["seconds"] for r in rows if r["method"] == "plain" and r.get("seconds")}
    for r in rows:
        r["ratio"] = r["seconds"] / plain[r["T"]] if r.get("seconds") and r["T"] in plain else None
    checks = {}
    for m in [m for m in methods if m not in ("plain", "truncated")]:
        c = spawn(__file__, ["check", m, 2000, THREADS[0]], a.timeout)
        checks[m] = c.get("max_rel_err")
    for r in rows:
        if r["method"] in checks and checks[r["method"]] is not None:
            r["exact"] = f"{checks[r['method']]:.0e}"
        elif r.get("cosine") is not None:
            r["exact"] = f"cos {r['cosine']:.3f}"
    return markdown(rows, [("T", "T", ","), ("method", "method", ""),
                           ("peak RSS (MB)", "rss_peak_mb", ".0f"),
                           ("above model+inputs (MB)", "extra_mb", ".0f"),
                           ("time (s)", "seconds", ".2f"), ("time / plain", "ratio", ".2f"),
                           ("gradient vs plain (float64 rel. err.)", "exact", "")])


def slope(a) -> str:
    Ts = [10_000, 100_000] if a.quick else [10_000, 100_000, 1_000_000]
    data_dir = Path(a.data_dir or tempfile.mkdtemp(prefix="vlrnn-bench-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    for T in Ts:
        write_npy(data_dir, T, SMALL)
    jobs = [(m, T) for T in Ts for m in SLOPE_METHODS]
    rows = run_grid(jobs, a.reps or 1, a.timeout, "small", str(data_dir))
    out = markdown(rows, [("T", "T", ","), ("schedule", "method", ""),
                          ("peak RSS (MB)", "rss_peak_mb", ".0f"),
                          ("above model (MB)", "extra_mb", ".1f"), ("time (s)", "seconds", ".1f")])
    lines = [out, ""]
    if plot_slope(rows, HERE / "results" / "schedules_slope.png"):
        lines.append(f"plot: {HERE / 'results' / 'schedules_slope.png'}")
    for m in SLOPE_METHODS:
        pts = sorted((r["T"], r["extra_mb"]) for r in rows if r["method"] == m and r.get("extra_mb"))
        if len(pts) >= 2:
            (t0, m0), (t1, m1) = pts[0], pts[-1]
            lines.append(f"{m}: memory above the model grows {m1 / m0:.2f}x from T={t0:,} to "
                         f"T={t1:,}: log-log slope {math.log(m1 / m0) / math.log(t1 / t0):.2f}")
    return "\n".join(lines)


def plot_slope(rows, path: Path) -> bool:
    return plot_loglog(rows, (("flat", "o-"), ("two_level", "s-"), ("bisection", "^-"),
                              ("revolve", "D-")),
                       "peak RSS above model (MB)",
                       "1-layer LSTM, hidden 32, batch 4, input streamed from a .npy file", path)


def huge(a) -> str:
    T = 10_000_000
    data_dir = Path(a.data_dir or tempfile.mkdtemp(prefix="vlrnn-bench-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    write_npy(data_dir, T, SMALL)
    size = (data_dir / f"x_{T}.npy").stat().st_size / 2**30
    print(f"input: {data_dir / f'x_{T}.npy'} ({size:.2f} GB), written in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    rows = run_grid([(m, T) for m in a.schedules.split(",")], 1, a.timeout, "small",
                    str(data_dir))
    return markdown(rows, [("T", "T", ","), ("schedule", "method", ""),
                           ("peak RSS (MB)", "rss_peak_mb", ".0f"), ("time (s)", "seconds", ".0f")])


def count_calls(schedule, n_blocks: int) -> dict:
    """Block forward calls (all; without a graph) and the most boundary states held at
    once, for one ``block_backward`` over ``n_blocks`` one-step blocks."""
    import torch
    from torch import nn

    import vlrnn
    from vlrnn.engine._runner import BlockRunner
    torch.manual_seed(0)
    model, head = nn.GRU(2, 3), nn.Linear(3, 1)
    calls, no_grad, held = [0], [0], [0]

    def hook(module, args, out):
        calls[0] += 1
        no_grad[0] += not torch.is_grad_enabled()

    model.register_forward_hook(hook)
    orig = BlockRunner.rebuild

    def rebuild(self, x_data, start, k, into):
        orig(self, x_data, start, k, into)
        held[0] = max(held[0], len(self.boundary) + len(into))

    BlockRunner.rebuild = rebuild
    try:
        x, y = torch.randn(n_blocks, 2, 2), torch.randn(n_blocks, 2, 1)
        vlrnn.block_backward(model, lambda o, t: (head(o) - t) ** 2, x, y, block_len=1,
                             schedule=schedule)
    finally:
        BlockRunner.rebuild = orig
    # a schedule that rebuilds nothing holds what the forward pass kept (flat: all K)
    return dict(calls=calls[0], no_grad=no_grad[0], held=held[0] or n_blocks)


def counts(a) -> str:
    import math

    from vlrnn.engine._schedules import revolve_calls, revolve_with
    Ks = [64, 1000] if a.quick else [64, 1000, 10_000]
    rows = []
    for K in Ks:
        held = {}
        for name in ("flat", "two_level", "bisection", "revolve", "revolve@bisection",
                     "revolve@two_level"):
            if "@" in name:  # revolve holding as many states as the other schedule
                s = held[name.split("@")[1]] - 1
                sched, label = revolve_with(s), f"revolve, s={s}"
            else:
                sched, label = schedule_arg(name), name
                s = math.ceil(math.log2(K)) + 2
                label += f", s={s}" if name == "revolve" else ""
            t0 = time.perf_counter()
            r = count_calls(sched, K)
            if name.startswith("revolve"):
                assert r["calls"] == revolve_calls(K, s), (K, s, r)  # the binomial optimum
            held[name] = r["held"]
            rows.append(dict(K=K, schedule=label, per_block=r["calls"] / K, **r))
            print(f"K={K:>6,} {label:22s} {r} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return markdown(rows, [("K", "K", ","), ("schedule", "schedule", ""),
                           ("states held at once", "held", ","),
                           ("block forward calls", "calls", ","),
                           ("of them without a graph", "no_grad", ","),
                           ("calls per block", "per_block", ".2f")])


def interleave(a) -> str:
    """One process, the schedules alternating (they share the machine's noise): time and
    block forward calls of ``block_backward`` on the small model, T = 100,000 (10,000
    with --quick)."""
    import torch

    import vlrnn
    torch.set_num_threads(a.threads)
    T = 10_000 if a.quick else 100_000
    methods = (a.methods or "bisection,revolve").split(",")
    model, _, loss_fn = build(SMALL)
    x, y = inputs(SMALL, T, None)
    calls = [0]
    model.register_forward_hook(lambda *args: calls.__setitem__(0, calls[0] + 1))
    results = {}
    for rep in range(a.reps or 3):
        for m in methods:
            calls[0] = 0
            t0 = time.perf_counter()
            vlrnn.block_backward(model, loss_fn, x, y, block_len=BLOCK, schedule=schedule_arg(m))
            row = dict(method=m, T=T, seconds=time.perf_counter() - t0, calls=calls[0])
            results.setdefault((m, T), []).append(row)
            print(f"[rep {rep + 1}] {m:10s} {row['seconds']:.2f}s, {calls[0]} calls", flush=True)
    rows = medians(results, ["seconds", "calls"])
    return markdown(rows, [("T", "T", ","), ("schedule", "method", ""),
                           ("median time (s)", "seconds", ".2f"),
                           ("block forward calls", "calls", ",")])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("mode", choices=["compare", "slope", "huge", "counts", "interleave"],
                   nargs="?",
                   default="compare")
    p.add_argument("--quick", action="store_true", help="small T, one rep")
    p.add_argument("--reps", type=int, default=None, help="processes per configuration")
    p.add_argument("--data-dir", default=None, help="where to write the .npy inputs")
    p.add_argument("--timeout", type=float, default=7200, help="seconds per process")
    p.add_argument("--out", default=None, help="also write the table to this file")
    p.add_argument("--schedules", default="two_level,revolve",
                   help="huge mode: schedules to run (default two_level,revolve)")
    p.add_argument("--methods", default=None,
                   help="compare/interleave mode: methods to run (default: all / "
                   "bisection,revolve)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process "
                   "(default 1: on a shared machine, spinning OpenMP threads make "
                   "timings meaningless)")
    p.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--worker":
        import torch
        w = argv[1:]
        torch.set_num_threads(int(w[-1]))
        if w[0] == "check":
            print(json.dumps(check(w[1], int(w[2]))))
        else:
            print(json.dumps(worker(w[0], int(w[1]), w[2], "" if w[3] == "-" else w[3])))
        return 0
    a = p.parse_args(argv)
    THREADS[0] = a.threads
    modes = dict(compare=compare, slope=slope, huge=huge, counts=counts, interleave=interleave)
    table = modes[a.mode](a)
    print("\n" + table)
    if a.out:
        Path(a.out).write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
