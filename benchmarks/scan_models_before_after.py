"""Before/after speed of the scan models in one run: the models of a committed revision
(its ``vlrnn`` tree exported to a temporary directory and imported as ``vlrnn_before``)
and of the working tree, against nn.LSTM, all interleaved in each round on this
process's CPU clock (medians; speed = LSTM ms / model ms, above 1 is faster).

    python benchmarks/scan_models_before_after.py --rev HEAD~3 --hidden 128 256 --steps 4096
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import add_shape_arguments, write_table  # noqa: E402
from model_speed import dense, engine_step, interleaved  # noqa: E402

import vlrnn.models as after  # noqa: E402


def export(rev: str) -> Path:
    """``rev``'s ``vlrnn`` package as ``vlrnn_before`` in a temporary directory (the
    package's own imports are relative, so it imports under another name)."""
    tmp = Path(tempfile.mkdtemp(prefix="vlrnn_before_"))
    tar = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "vlrnn"], check=True,
                         capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tmp)], input=tar, check=True)
    shutil.move(str(tmp / "vlrnn"), str(tmp / "vlrnn_before"))
    return tmp


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rev", required=True, help="the 'before' git revision")
    p.add_argument("--models", nargs="+", default=["MinLSTM", "LRU", "Mamba"])
    add_shape_arguments(p)
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    sys.path.insert(0, str(export(a.rev)))
    import vlrnn_before.models as before
    torch.set_num_threads(a.threads)
    F, T, B, L = a.input, a.steps, a.batch, a.layers
    lines = [f"{a.threads} torch thread(s), float32, CPU clock, medians of {a.repeats} "
             f"interleaved rounds after 1 warm-up; dense T={T}, B={B}, F={F}, {L} layers, "
             f"block {a.block}; before = {a.rev} "
             f"({subprocess.run(['git', '-C', str(ROOT), 'rev-parse', '--short', a.rev], capture_output=True, text=True).stdout.strip()}), "
             f"after = working tree; command: python benchmarks/scan_models_before_after.py "
             + " ".join(sys.argv[1:]), "",
             "| hidden | model | before ms | after ms | nn.LSTM ms | before vs LSTM | after vs LSTM |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    for H in a.hidden:
        torch.manual_seed(0)
        x, y = dense(B, T, F, H)
        runs = {"nn.LSTM": engine_step(nn.LSTM(F, H, L), x, y, a.block)}
        for n in a.models:
            torch.manual_seed(1)
            runs[f"{n} before"] = engine_step(getattr(before, n)(F, H, L), x, y, a.block)
            torch.manual_seed(1)
            runs[f"{n} after"] = engine_step(getattr(after, n)(F, H, L), x, y, a.block)
        med = {k: statistics.median(v) * 1e3 for k, v in interleaved(runs, a.repeats, 1).items()}
        lstm = med["nn.LSTM"]
        for n in a.models:
            b_, a_ = med[f"{n} before"], med[f"{n} after"]
            lines.append(f"| {H} | {n} | {b_:.0f} | {a_:.0f} | {lstm:.0f} | {lstm / b_:.2f}x | "
                         f"{lstm / a_:.2f}x |")
        print("\n".join(lines[-len(a.models):]), flush=True)
    text = "\n".join(lines)
    write_table(text, a.out)


if __name__ == "__main__":
    main()
