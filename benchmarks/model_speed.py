"""Model speed through the block engine: StackedRNN (fused and step loop) against torch's
fused nn.LSTM/nn.GRU/nn.RNN, QRNN against nn.LSTM, and a custom cell under the split-cell
protocol against its plain step loop.

Every figure is the time of one ``vlrnn.block_backward`` call (forward pass, then the
reverse block pass: block forward + backward for every block) on a ragged packed batch
(lengths drawn in ``[T/2, T]``, unsorted) or a dense one, float32, one torch thread.
All models of a table run in one process, interleaved round by round so that they
share the machine's noise; the table gives medians and the speed ratio to the
reference (``speed vs ref`` = ref time / model time: above 1 is faster).

    python benchmarks/model_speed.py                      # all tables, README figures
    python benchmarks/model_speed.py --quick              # small sizes, a few repeats (CI)
    python benchmarks/model_speed.py --tables stacked --repeats 9
    python benchmarks/model_speed.py --tables qrnn --steps 1024 --qrnn-batches 4 16 64
                                          # QRNN ratio plot: results/qrnn_speed.png
    python benchmarks/model_speed.py --tables qrnn --keep-heap ...
                                          # no re-allocation page faults (see keep_heap)
    python benchmarks/model_speed.py --tables qrnn --processes 3 ...
                                          # median ratios over 3 fresh processes for
                                          # each (batch, hidden): the figures to quote
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import torch
from torch import nn
from torch.nn.utils.rnn import pack_sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import vlrnn  # noqa: E402
from vlrnn.models import QRNN, StackedRNN  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def ragged(batch: int, T: int, n_in: int, n_out: int, seed: int = 0):
    """Packed ``(x, y)``: ``batch`` sequences with lengths in ``[T/2, T]``, unsorted."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(T // 2, T + 1, (batch,), generator=g).tolist()
    lengths[0] = T
    xs = [torch.randn(n, n_in, generator=g) for n in lengths]
    ys = [torch.randn(n, n_out, generator=g) for n in lengths]
    return pack_sequence(xs, enforce_sorted=False), pack_sequence(ys, enforce_sorted=False)


def dense(batch: int, T: int, n_in: int, n_out: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(T, batch, n_in, generator=g), torch.randn(T, batch, n_out, generator=g)


def engine_step(model: nn.Module, x, y, block_len: int) -> Callable[[], None]:
    """One training step's gradient through the engine (the thing being timed)."""
    def mse(out, tgt):
        return (out - tgt) ** 2

    def step() -> None:
        model.zero_grad(set_to_none=True)
        vlrnn.block_backward(model, mse, x, y, block_len=block_len)
    return step


# CPU seconds of this process by default: with one torch thread, the time other processes
# on a shared machine take from us does not count (wall time moved ratios by +-15% at load 2-3)
CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
clock = CLOCKS["cpu"]


def interleaved(runs: Dict[str, Callable[[], None]], repeats: int, warmup: int
                ) -> Dict[str, List[float]]:
    """Seconds per call of each run (on ``clock``), ``repeats`` rounds, the runs in turn
    in each round."""
    for _ in range(warmup):
        for f in runs.values():
            f()
    times: Dict[str, List[float]] = {n: [] for n in runs}
    for _ in range(repeats):
        for name, f in runs.items():
            t0 = clock()
            f()
            times[name].append(clock() - t0)
    return times


def table(title: str, rows: Sequence[Tuple[str, str]], times: Dict[str, List[float]]) -> str:
    """Markdown: model, reference, median ms, speed vs reference (ref / model)."""
    med = {n: statistics.median(t) * 1e3 for n, t in times.items()}
    lines = [f"**{title}**", "", "| model | reference | median ms | ref ms | speed vs ref |",
             "|---|---|---:|---:|---:|"]
    for name, ref in rows:
        lines.append(f"| {name} | {ref} | {med[name]:.1f} | {med[ref]:.1f} | "
                     f"{med[ref] / med[name]:.2f}x |")
    return "\n".join(lines)


# -- StackedRNN against torch's fused stacks ------------------------------------------------
TORCH = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


class TorchStack(nn.Module):
    """Single-layer nn.LSTM/GRU/RNN modules stacked, for per-layer sizes (torch has no
    such option); state: one torch state per layer, batch on dim 1."""
    state_batch_dim = 1

    def __init__(self, kind: str, n_in: int, sizes: Sequence[int]):
        super().__init__()
        self.layers = nn.ModuleList(TORCH[kind](i, h) for i, h in zip([n_in, *sizes], sizes))
        self.hidden_size = sizes[-1]

    def forward(self, x, state=None):
        state = state or [None] * len(self.layers)
        finals = []
        for layer, s in zip(self.layers, state):
            x, s = layer(x, s)
            finals.append(s)
        return x, tuple(finals)


def stacked_table(a) -> str:
    H, L, F, B, T = a.hidden, 2, a.input, a.batch, a.steps
    out = []
    for kind in a.cells:
        torch.manual_seed(0)
        ref = f"nn.{kind.upper()}"
        models = {
            ref: TORCH[kind](F, H, L),
            f"{ref} dropout 0.2": TORCH[kind](F, H, L, dropout=0.2).train(),
            "StackedRNN": StackedRNN(F, H, L, cell=kind),
            "StackedRNN residual+layer_norm+dropout 0.2": StackedRNN(
                F, H, L, cell=kind, residual=True, layer_norm=True, dropout=0.2).train(),
            f"torch layers [{H}, {H // 2}]": TorchStack(kind, F, [H, H // 2]),
            f"StackedRNN sizes [{H}, {H // 2}]": StackedRNN(F, [H, H // 2], cell=kind),
            "StackedRNN step loop (fused=False)": StackedRNN(F, H, L, cell=kind, fused=False),
        }
        rows = [("StackedRNN", ref),
                ("StackedRNN residual+layer_norm+dropout 0.2", f"{ref} dropout 0.2"),
                (f"StackedRNN sizes [{H}, {H // 2}]", f"torch layers [{H}, {H // 2}]"),
                ("StackedRNN step loop (fused=False)", ref)]
        for layout, make in (("packed ragged", ragged), ("dense", dense)):
            x, _ = make(B, T, F, 1)
            runs = {}
            for name, m in models.items():
                n_out = m.hidden_size
                y = make(B, T, F, n_out, seed=0)[1]
                runs[name] = engine_step(m, x, y, a.block)
            times = interleaved(runs, a.repeats, a.warmup)
            out.append(table(f"{kind.upper()}, {layout}: T={T}, B={B}, F={F}, H={H}, "
                             f"{L} layers, block {a.block}", rows, times))
            print(out[-1] + "\n", flush=True)
    return "\n\n".join(out)


# -- QRNN against nn.LSTM -------------------------------------------------------------------
def qrnn_table(a) -> str:
    """QRNN (window 1 and 2) against nn.LSTM of the same hidden size, for each hidden size
    and batch; also returns the ratios for the plot."""
    F, T, L = a.input, a.steps, 2
    out, ratios = [], []
    for B in a.qrnn_batches:
        for H in a.qrnn_hidden:
            torch.manual_seed(0)
            models = {"nn.LSTM": nn.LSTM(F, H, L), "QRNN window 1": QRNN(F, H, L, window=1),
                      "QRNN window 2": QRNN(F, H, L, window=2)}
            x, y = dense(B, T, F, H)
            runs = {n: engine_step(m, x, y, a.block) for n, m in models.items()}
            load = os.getloadavg()[0]
            times = interleaved(runs, a.repeats, a.warmup)
            out.append(table(f"QRNN, dense: T={T}, B={B}, F={F}, H={H}, {L} layers, "
                             f"block {a.block} (load average {load:.1f} before, "
                             f"{os.getloadavg()[0]:.1f} after)",
                             [("QRNN window 1", "nn.LSTM"), ("QRNN window 2", "nn.LSTM")], times))
            print(out[-1] + "\n", flush=True)
            med = {n: statistics.median(t) for n, t in times.items()}
            ratios.append(dict(batch=B, hidden=H, w1=med["nn.LSTM"] / med["QRNN window 1"],
                               w2=med["nn.LSTM"] / med["QRNN window 2"],
                               load=(load, os.getloadavg()[0])))
    a.qrnn_ratios = ratios
    if not a.no_plot:
        plot_qrnn(ratios, a)
    return "\n\n".join(out)


def qrnn_processes(a, argv: List[str]) -> str:
    """The QRNN table with every (batch, hidden) configuration in ``a.processes`` fresh
    processes of its own, one after the other. A process's speed depends on where its
    buffers land: runs of the same command differ by up to ~1.5x at hidden 64, and a
    configuration measured after others in the same process inherits their heap (glibc
    raises its mmap threshold after large frees: nn.LSTM at hidden 64, batch 16 then
    re-faults no pages and runs ~1.4x faster than in a process of its own). A user's
    process trains one model, so each configuration gets fresh processes. Returns the
    median ratio and its range over the processes per (batch, hidden), then each run's
    tables; the plot shows the medians with the ranges."""
    drop = {"--processes": 1, "--out": 1, "--qrnn-batches": None, "--qrnn-hidden": None}
    child, i = [], 0
    while i < len(argv):
        if argv[i] in drop:
            n = drop[argv[i]]
            i += 1
            if n is None:  # a list of values: up to the next option
                while i < len(argv) and not argv[i].startswith("--"):
                    i += 1
            else:
                i += n
            continue
        child.append(argv[i])
        i += 1
    rows = ["| batch | hidden | window 1: median (range) | window 2: median (range) | "
            "load averages |", "|---:|---:|---|---|---|"]
    summary, texts = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for B in a.qrnn_batches:
            for H in a.qrnn_hidden:
                pts = []
                for r in range(a.processes):
                    js = Path(tmp) / f"b{B}_h{H}_run{r}.json"
                    cmd = [sys.executable, str(Path(__file__).resolve()), *child, "--no-plot",
                           "--qrnn-batches", str(B), "--qrnn-hidden", str(H), "--json", str(js)]
                    res = subprocess.run(cmd, capture_output=True, text=True)
                    if res.returncode != 0:
                        raise RuntimeError(f"batch {B}, hidden {H}, run {r} failed:\n"
                                           f"{res.stderr[-2000:]}")
                    pts.append(json.loads(js.read_text())[0])
                    table_text = res.stdout.strip().split("\n\n", 1)[-1]  # without the header
                    texts.append(f"**batch {B}, hidden {H}: process {r + 1} of "
                                 f"{a.processes}**\n\n" + table_text)
                    print(texts[-1] + "\n", flush=True)
                agg = dict(batch=B, hidden=H)
                cells = []
                for w in ("w1", "w2"):
                    vals = sorted(p[w] for p in pts)
                    agg[w], agg[w + "_range"] = statistics.median(vals), (vals[0], vals[-1])
                    cells.append(f"{agg[w]:.2f}x ({vals[0]:.2f}-{vals[-1]:.2f})")
                loads = [x for p in pts for x in p["load"]]
                summary.append(agg)
                rows.append(f"| {B} | {H} | {cells[0]} | {cells[1]} | "
                            f"{min(loads):.1f}-{max(loads):.1f} |")
    if not a.no_plot:
        plot_qrnn(summary, a)
    head = (f"**QRNN speed vs nn.LSTM (LSTM time / QRNN time), median over "
            f"{a.processes} fresh processes per configuration**")
    return "\n".join([head, "", *rows]) + "\n\n" + "\n\n".join(texts)


def plot_qrnn(ratios: List[dict], a) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for B in a.qrnn_batches:
        pts = [r for r in ratios if r["batch"] == B]
        hs = [r["hidden"] for r in pts]
        for w, style, name in (("w1", "o-", "window 1"), ("w2", "s--", "window 2")):
            ys = [r[w] for r in pts]
            err = None
            if w + "_range" in pts[0]:  # medians over processes, with their ranges
                err = [[y - r[w + "_range"][0] for y, r in zip(ys, pts)],
                       [r[w + "_range"][1] - y for y, r in zip(ys, pts)]]
            ax.errorbar(hs, ys, yerr=err, fmt=style, capsize=3, label=f"{name}, batch {B}")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.axhline(1.5, color="grey", lw=0.8, ls=":")  # the speed-up the QRNN aims for
    ax.set_xscale("log", base=2)
    ax.set_xlabel("hidden size")
    ax.set_ylabel("speed vs nn.LSTM (LSTM time / QRNN time)")
    ax.set_title(f"QRNN vs nn.LSTM through the engine (T={a.steps}, block {a.block})"
                 + (", --keep-heap" if a.keep_heap else ""), fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    RESULTS.mkdir(exist_ok=True)
    name = "qrnn_speed" + ("_quick" if a.quick else "") + ("_keep_heap" if a.keep_heap else "")
    fig.savefig(RESULTS / f"{name}.png", dpi=110)


def keep_heap() -> bool:
    """Tell glibc's malloc to keep freed memory (no trimming, no per-call mmap for blocks
    up to 32 MB). Without it, ``nn.LSTM``'s backward re-faults tens of MB of fresh pages
    at some calls and not others (its time then varies by ~1.5x between runs at hidden
    64, batch 16). Returns False where there is no glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    return all(libc.mallopt(opt, val) == 1 for opt, val in (
        (m_mmap_threshold, 32 << 20), (m_trim_threshold, 2 ** 31 - 1), (m_top_pad, 64 << 20)))


# -- a custom cell: the split-cell protocol against the plain Python step loop --------------
class Elman(nn.Module):
    """A plain Elman cell, the kind of custom cell a user writes."""

    def __init__(self, n_in: int, n_hid: int):
        super().__init__()
        self.ih = nn.Linear(n_in, n_hid)
        self.hh = nn.Linear(n_hid, n_hid, bias=False)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.ih(x) + self.hh(h))


class SplitElman(Elman):
    """The same cell under the split-cell protocol (vlrnn.models.SplitCell): the input
    projection once per block, the recurrent step per step."""

    def input_part(self, x: torch.Tensor) -> torch.Tensor:
        return self.ih(x)

    def step(self, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(u + self.hh(h))


def custom_table(a) -> str:
    F, H, L, B, T = a.input, a.hidden, 2, a.batch, a.steps
    out = []
    for layout, make in (("packed ragged", ragged), ("dense", dense)):
        torch.manual_seed(0)
        loop = StackedRNN(F, H, L, cell=Elman)
        split = StackedRNN(F, H, L, cell=SplitElman)
        split.load_state_dict(loop.state_dict())
        x, y = make(B, T, F, H)
        runs = {"Elman step loop": engine_step(loop, x, y, a.block),
                "Elman split cell": engine_step(split, x, y, a.block)}
        times = interleaved(runs, a.repeats, a.warmup)
        out.append(table(f"custom Elman cell, {layout}: T={T}, B={B}, F={F}, H={H}, {L} "
                         f"layers, block {a.block}",
                         [("Elman split cell", "Elman step loop")], times))
        print(out[-1] + "\n", flush=True)
    return "\n\n".join(out)


TABLES = {"stacked": stacked_table, "qrnn": qrnn_table, "custom": custom_table}


def main(argv: List[str] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tables", nargs="+", default=list(TABLES), choices=list(TABLES))
    p.add_argument("--cells", nargs="+", default=["lstm", "gru", "rnn"])
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--input", type=int, default=32)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=2048, help="longest sequence T")
    p.add_argument("--block", type=int, default=256)
    p.add_argument("--qrnn-hidden", type=int, nargs="+", default=[64, 128, 256])
    p.add_argument("--qrnn-batches", type=int, nargs="+", default=[16])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="small sizes, 2 repeats (for CI)")
    p.add_argument("--out", default=None, help="markdown file for the tables")
    p.add_argument("--processes", type=int, default=1,
                   help="QRNN table only: run it in this many fresh processes and report "
                        "the median ratios and their ranges")
    p.add_argument("--json", default=None, help=argparse.SUPPRESS)  # a child's ratios
    p.add_argument("--no-plot", action="store_true", help="do not write the QRNN plot")
    p.add_argument("--keep-heap", action="store_true",
                   help="glibc: keep freed memory in the process (mallopt), so that no model "
                        "pays page faults to re-allocate its buffers at every call")
    p.add_argument("--clock", choices=list(CLOCKS), default="cpu",
                   help="cpu: this process's CPU time (default; robust on a shared machine); "
                        "wall: elapsed time")
    a = p.parse_args(argv)
    global clock
    clock = CLOCKS[a.clock]
    if a.keep_heap and not keep_heap():
        p.error("--keep-heap needs glibc's mallopt (Linux); it is not available here")
    if a.quick:
        a.hidden, a.steps, a.block, a.repeats, a.warmup = 16, 64, 16, 2, 0
        a.qrnn_hidden, a.qrnn_batches, a.cells = [8, 16], [4], ["lstm"]
    torch.set_num_threads(1)
    argv = list(sys.argv[1:] if argv is None else argv)
    head = (f"one torch thread, float32, medians of {a.repeats} interleaved rounds, "
            f"{a.clock} time, load average {os.getloadavg()[0]:.1f} at start; "
            f"command: python benchmarks/model_speed.py {' '.join(argv)}")
    print(head + "\n")
    if a.processes > 1:
        if a.tables != ["qrnn"]:
            p.error("--processes runs the QRNN table only: add --tables qrnn")
        text = head + "\n\n" + qrnn_processes(a, argv)
    else:
        text = head + "\n\n" + "\n\n".join(TABLES[t](a) for t in a.tables)
    if a.json:
        Path(a.json).write_text(json.dumps(getattr(a, "qrnn_ratios", [])))
    if a.out:
        Path(a.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
