"""Peak memory of the scan models through the engine against the sequence length: each
(model, T) in a fresh process, one sequence of T steps, 4 inputs, hidden 32, 2 layers,
block 256, float32, an MSE loss per step; peak RSS of the process (``VmHWM``) and the
peak above the RSS once the model and inputs exist (what the training step adds).

    python benchmarks/scan_models_memory.py                       # T 1e4, 1e5, 1e6
    python benchmarks/scan_models_memory.py --models Mamba --steps 10000 1000000
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from common import spawn, write_table

MODELS = ("MinGRU", "MinLSTM", "LRU", "Mamba")


def worker(name: str, T: int) -> None:
    import torch
    from torch import nn

    import vlrnn
    from vlrnn import models
    from vlrnn.memory import peak_rss_mb, reset_peak_rss, rss_mb
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = getattr(models, name)(4, 32, 2).with_head(1)
    x, y = torch.randn(T, 1, 4), torch.randn(T, 1, 1)
    base = rss_mb()
    reset_peak_rss()
    t0 = time.process_time()
    vlrnn.block_backward(model, nn.MSELoss(reduction="none"), x, y, block_len=256)
    secs = time.process_time() - t0
    ok = all(torch.isfinite(p.grad).all() for p in model.parameters())
    print(json.dumps({"model": name, "T": T, "peak_mb": peak_rss_mb(),
                      "added_mb": peak_rss_mb() - base, "seconds": secs, "finite": bool(ok)}))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], int(sys.argv[3]))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--steps", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--timeout", type=float, default=1200)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    lines = ["| model | T | peak RSS MB | added MB | CPU s | grads finite |",
             "|---|---:|---:|---:|---:|---|"]
    for name in a.models:
        for T in a.steps:
            r = spawn(__file__, [name, T], a.timeout)
            if "error" in r:
                lines.append(f"| {name} | {T:,} | {r['error']} | | | |")
            else:
                lines.append(f"| {name} | {T:,} | {r['peak_mb']:.0f} | {r['added_mb']:.0f} | "
                             f"{r['seconds']:.1f} | {r['finite']} |")
            print(lines[-1], flush=True)
    text = ("one sequence, 4 inputs, hidden 32, 2 layers, block 256, float32, one thread; "
            "command: python benchmarks/scan_models_memory.py " + " ".join(sys.argv[1:])
            + "\n\n" + "\n".join(lines))
    write_table(text, a.out)


if __name__ == "__main__":
    main()
