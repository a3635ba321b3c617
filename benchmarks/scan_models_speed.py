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
from model_speed import dense, engine_step, interleaved

from vlrnn.models import LRU, Mamba, MinGRU, MinLSTM

MODELS = ("MinGRU", "MinLSTM", "LRU", "Mamba")


def build(name: str, F: int, H: int, L: int) -> nn.Module:
    return {"nn.LSTM": lambda: nn.LSTM(F, H, L), "MinGRU": lambda: MinGRU(F, H, L),
            "MinLSTM": lambda: MinLSTM(F, H, L), "LRU": lambda: LRU(F, H, L),
            "Mamba": lambda: Mamba(F, H, L)}[name]()


def run(a) -> str:
    torch.set_num_threads(a.threads)
    F, T, B, L = a.input, a.steps, a.batch, a.layers
    header = (f"{a.threads} torch thread(s), float32, CPU clock, medians of {a.repeats} "
              f"interleaved rounds after {a.warmup} warm-up; dense T={T}, B={B}, F={F}, "
              f"{L} layers, block {a.block}; command: python benchmarks/scan_models_speed.py "
              + " ".join(sys.argv[1:]))
    lines = [header, "", "| hidden | model | median ms | nn.LSTM ms | speed vs nn.LSTM |",
             "|---:|---|---:|---:|---:|"]
    for H in a.hidden:
        torch.manual_seed(0)
        names = ["nn.LSTM", *a.models]
        x, y = dense(B, T, F, H)
        runs = {n: engine_step(build(n, F, H, L), x, y, a.block) for n in names}
        load = os.getloadavg()[0]
        times = interleaved(runs, a.repeats, a.warmup)
        med = {n: statistics.median(t) * 1e3 for n, t in times.items()}
        for n in a.models:
            lines.append(f"| {H} | {n} | {med[n]:.0f} | {med['nn.LSTM']:.0f} | "
                         f"{med['nn.LSTM'] / med[n]:.2f}x |")
        print("\n".join(lines[-len(a.models):]) + f"   (load {load:.1f} -> "
              f"{os.getloadavg()[0]:.1f})", flush=True)
    return "\n".join(lines)


def profile(a) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as prof
    torch.set_num_threads(a.threads)
    F, T, B, L = a.input, a.steps, a.batch, a.layers
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
    p.add_argument("--steps", type=int, default=4096)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--input", type=int, default=32)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--block", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--out", default=None, help="write the table to this markdown file")
    a = p.parse_args(argv)
    if a.profile:
        profile(a)
        return
    text = run(a)
    if a.out:
        Path(a.out).write_text(text + "\n")
    print("\n" + text)


if __name__ == "__main__":
    main()
