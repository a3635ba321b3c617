"""Scan models (MinGRU, MinLSTM, LRU, Mamba) against nn.LSTM through the engine.

Every figure is one ``vlrnn.block_backward`` call (the engine's forward pass without a
graph, then each block recomputed and backpropagated) on dense float32 input
``(T, B, F)``, an MSE loss on the model's outputs, the models of the same hidden size
``H`` and ``--layers`` layers (Mamba: ``expand=2``, ``state_size=16``, ``conv_size=4``;
LRU: ``state_size=H``). The models are timed in turn in each round (they share the
machine's noise) on this process's CPU clock; the table gives median milliseconds and
the speed against nn.LSTM (LSTM time / model time, above 1 is faster).

    python benchmarks/scan_models_speed.py                       # H 64 128 256 512, T 4096
    python benchmarks/scan_models_speed.py --hidden 128 256 --steps 1024 --repeats 3
    python benchmarks/scan_models_speed.py --profile --hidden 128 --steps 1024
                          # torch.profiler's top ops per model (where the time goes)
    python benchmarks/scan_models_speed.py --hidden 128 --steps 1024 4096 16384 \
        --plot benchmarks/results/scan_models_speed_T.png      # a sweep over T, plotted
    python benchmarks/scan_models_speed.py --plot out.png --from-tables a.md b.md
                          # plot the rows of tables written by --out (runs made apart)

With several ``--hidden`` and ``--steps`` values every pair is measured (each pair's
models interleaved with their LSTM); ``--plot`` draws the speed against nn.LSTM over
whichever of the two varies.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import model_speed
from model_speed import dense, engine_step, interleaved

from vlrnn.models import LRU, Mamba, MinGRU, MinLSTM

MODELS = ("MinGRU", "MinLSTM", "LRU", "Mamba")
# also accepted by --models: the LRU with half the complex state (state_size = H // 2)
EXTRA = ("LRU-half",)


def build(name: str, F: int, H: int, L: int) -> nn.Module:
    return {"nn.LSTM": lambda: nn.LSTM(F, H, L), "MinGRU": lambda: MinGRU(F, H, L),
            "MinLSTM": lambda: MinLSTM(F, H, L), "LRU": lambda: LRU(F, H, L),
            "LRU-half": lambda: LRU(F, H, L, state_size=max(1, H // 2)),
            "Mamba": lambda: Mamba(F, H, L)}[name]()


def run(a) -> tuple[str, list[dict]]:
    torch.set_num_threads(a.threads)
    F, B, L = a.input, a.batch, a.layers
    steps = " ".join(str(t) for t in a.steps)
    header = (f"{a.threads} torch thread(s), float32, {a.clock} clock, medians of {a.repeats} "
              f"interleaved rounds after {a.warmup} warm-up; dense T={steps}, B={B}, F={F}, "
              f"{L} layers, block {a.block}; command: python benchmarks/scan_models_speed.py "
              + " ".join(a.argv))
    lines = [header, "", "| T | hidden | model | median ms | nn.LSTM ms | speed vs nn.LSTM |",
             "|---:|---:|---|---:|---:|---:|"]
    rows: list[dict] = []
    for T in a.steps:
        for H in a.hidden:
            torch.manual_seed(0)
            names = ["nn.LSTM", *a.models]
            x, y = dense(B, T, F, H)
            runs = {n: engine_step(build(n, F, H, L), x, y, a.block) for n in names}
            load = os.getloadavg()[0]
            times = interleaved(runs, a.repeats, a.warmup)
            med = {n: statistics.median(t) * 1e3 for n, t in times.items()}
            for n in a.models:
                rows.append({"T": T, "H": H, "model": n, "ms": med[n],
                             "lstm_ms": med["nn.LSTM"], "speed": med["nn.LSTM"] / med[n]})
                lines.append(f"| {T} | {H} | {n} | {med[n]:.0f} | {med['nn.LSTM']:.0f} | "
                             f"{med['nn.LSTM'] / med[n]:.2f}x |")
            print("\n".join(lines[-len(a.models):]) + f"   (load {load:.1f} -> "
                  f"{os.getloadavg()[0]:.1f})", flush=True)
    return "\n".join(lines), rows


def read_table(path: Path) -> list[dict]:
    """The rows of a table this script wrote with ``--out`` (to plot runs made apart)."""
    rows = []
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 6 and cells[0].isdigit():
            T, H, model, ms, lstm, speed = cells
            rows.append({"T": int(T), "H": int(H), "model": model, "ms": float(ms),
                         "lstm_ms": float(lstm), "speed": float(speed.rstrip("x"))})
    return rows


def plot(rows: list[dict], path: Path, title: str) -> bool:
    """Speed against nn.LSTM (log scale) over hidden size or T (whichever varies), one
    line per model (and per value of the other); False without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    over = "T" if len({r["T"] for r in rows}) > 1 else "H"
    other = "H" if over == "T" else "T"
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for n in dict.fromkeys(r["model"] for r in rows):
        for v in sorted({r[other] for r in rows}):
            pts = sorted((r[over], r["speed"]) for r in rows if r["model"] == n and r[other] == v)
            label = n if len({r[other] for r in rows}) == 1 else f"{n}, {other}={v}"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=label)
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length T" if over == "T" else "hidden size")
    ax.set_ylabel("speed vs nn.LSTM (LSTM time / model time)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return True


def profile(a) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as prof
    torch.set_num_threads(a.threads)
    F, T, B, L = a.input, a.steps[0], a.batch, a.layers
    for H in a.hidden:
        x, y = dense(B, T, F, H)
        for n in ["nn.LSTM", *a.models]:
            step = engine_step(build(n, F, H, L), x, y, a.block)
            step()
            with prof(activities=[ProfilerActivity.CPU]) as p:
                step()
            print(f"== {n}, H={H}")
            print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hidden", type=int, nargs="+", default=[64, 128, 256, 512])
    p.add_argument("--steps", type=int, nargs="+", default=[4096])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--input", type=int, default=32)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--block", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--clock", choices=sorted(model_speed.CLOCKS), default="cpu",
                   help="cpu: this process's CPU time (all its threads); wall: elapsed time "
                        "(what a second thread can shorten)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS + EXTRA)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--out", default=None, help="write the table to this markdown file")
    p.add_argument("--plot", default=None, help="draw the speeds into this PNG file")
    p.add_argument("--from-tables", nargs="+", default=None, metavar="MD",
                   help="with --plot: draw the rows of these --out tables, measure nothing")
    a = p.parse_args(argv)
    a.argv = sys.argv[1:] if argv is None else argv
    model_speed.clock = model_speed.CLOCKS[a.clock]
    if a.profile:
        profile(a)
        return
    if a.from_tables:
        rows = [r for t in a.from_tables for r in read_table(Path(t))]
        text = f"(plotted {len(rows)} rows of " + ", ".join(a.from_tables) + ")"
    else:
        text, rows = run(a)
    if a.out and not a.from_tables:
        Path(a.out).write_text(text + "\n")
    if a.plot:
        title = (f"block forward+backward vs nn.LSTM, {a.layers} layers, batch {a.batch}, "
                 f"block {a.block}, {a.threads} thread(s)")
        if not plot(rows, Path(a.plot), title):
            print("(no plot: matplotlib is not installed)")
    print("\n" + text)


if __name__ == "__main__":
    main()
