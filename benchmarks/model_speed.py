"""Model speed through the block engine: StackedRNN (fused and step loop) against torch's
fused nn.LSTM/nn.GRU/nn.RNN, and a custom cell's compiled path against its step loop.

Every figure is the time of one ``vlrnn.block_backward`` call (forward pass, then the
reverse block pass: block forward + backward for every block) on a ragged packed batch
(lengths drawn in ``[T/2, T]``, unsorted) or a dense one, float32, one torch thread.
All models of a table run in one process, interleaved round by round so that they
share the machine's noise; the table gives medians and the speed ratio to the
reference (``speed vs ref`` = ref time / model time: above 1 is faster).

    python benchmarks/model_speed.py                      # all tables, README figures
    python benchmarks/model_speed.py --quick              # small sizes, a few repeats (CI)
    python benchmarks/model_speed.py --tables stacked --repeats 9
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import torch
from torch import nn
from torch.nn.utils.rnn import pack_sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import vlrnn  # noqa: E402
from vlrnn.models import StackedRNN  # noqa: E402

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


def interleaved(runs: Dict[str, Callable[[], None]], repeats: int, warmup: int
                ) -> Dict[str, List[float]]:
    """Seconds per call of each run, ``repeats`` rounds, the runs in turn in each round."""
    for _ in range(warmup):
        for f in runs.values():
            f()
    times: Dict[str, List[float]] = {n: [] for n in runs}
    for _ in range(repeats):
        for name, f in runs.items():
            t0 = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t0)
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


TABLES = {"stacked": stacked_table}


def main(argv: List[str] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tables", nargs="+", default=list(TABLES), choices=list(TABLES))
    p.add_argument("--cells", nargs="+", default=["lstm", "gru", "rnn"])
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--input", type=int, default=32)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=2048, help="longest sequence T")
    p.add_argument("--block", type=int, default=256)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="small sizes, 2 repeats (for CI)")
    p.add_argument("--out", default=None, help="markdown file for the tables")
    a = p.parse_args(argv)
    if a.quick:
        a.hidden, a.steps, a.block, a.repeats, a.warmup = 16, 64, 16, 2, 0
    torch.set_num_threads(1)
    head = (f"one torch thread, float32, medians of {a.repeats} interleaved rounds; "
            f"command: python benchmarks/model_speed.py {' '.join(argv or sys.argv[1:])}")
    print(head + "\n")
    text = head + "\n\n" + "\n\n".join(TABLES[t](a) for t in a.tables)
    if a.out:
        Path(a.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
