"""Memory of a sequence-level task (one label per series) as the longest series grows.

500 ragged series, lengths drawn uniformly between a tenth of the longest and the longest
(2k, 5k, 10k, 20k steps), 2 features, 2 classes. The class is set in each series' first 40
steps only (a +-1.5 shift of the first feature) and read from the state at the series' own
last step, so the gradient has to travel back through the whole series:

    out = vlrnn.block_loss(lstm, None, x_packed, None, block_len=256)   # no per-step loss
    loss = cross_entropy(head(out.state[0][-1]), labels)                 # loss on the state
    loss.backward()                                                      # exact BPTT

Each longest length runs in a fresh process (``--worker``): data and model are built,
the process's resident memory is read (``base``), then the training epochs run and the
peak resident memory (VmHWM, ``vlrnn.memory``) is read. "training peak above base" is
what training added on top of the data the process holds anyway; it should stay flat
while the longest series grows 10x. Beside it: ``vlrnn.memory.plain_bptt_mb`` for the
longest batch, what plain BPTT (``loss.backward()`` through the whole batch) would add,
measured on prefixes of that batch in the same process and extended to all its steps.

    python benchmarks/sequence_task_memory.py --quick          # ~20 s smoke run
    python benchmarks/sequence_task_memory.py                  # the table (~5-10 min)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from common import markdown, spawn  # noqa: E402

FULL = [2000, 5000, 10000, 20000]
QUICK = [300, 1200]
CONFIG = dict(n_series=500, n_in=2, hidden=32, batch=50, block_len=256, onset=40, lr=1e-2)


# -- worker: one longest length in this process ------------------------------------------------
def make_series(n: int, longest: int, seed: int = 0):
    """``n`` series ``(T_i, 2)`` float32, ``T_i`` uniform in ``[longest // 10, longest]``,
    and their labels ``(n,)`` in {0, 1}: class 1 shifts feature 0 by +1.5 for the first
    ``onset`` steps, class 0 by -1.5; the rest is unit noise."""
    import torch
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(max(longest // 10, CONFIG["onset"]), longest + 1, (n,),
                            generator=gen)
    labels = torch.randint(0, 2, (n,), generator=gen)
    xs = []
    for T, c in zip(lengths.tolist(), labels.tolist()):
        x = torch.randn(T, CONFIG["n_in"], generator=gen)
        x[:CONFIG["onset"], 0] += 1.5 if c else -1.5
        xs.append(x)
    return xs, labels


def worker(longest: int, epochs: int) -> dict:
    import torch
    from torch import nn
    from torch.nn.utils.rnn import pack_sequence

    import vlrnn
    from vlrnn.data import LengthBucketSampler
    from vlrnn.memory import peak_rss_mb, plain_bptt_mb, release_free_memory, reset_peak_rss, \
        rss_mb

    torch.set_num_threads(1)
    torch.manual_seed(0)
    c = CONFIG
    xs, labels = make_series(c["n_series"], longest)
    lstm = nn.LSTM(c["n_in"], c["hidden"])
    head = nn.Linear(c["hidden"], 2)
    opt = torch.optim.Adam([*lstm.parameters(), *head.parameters()], lr=c["lr"])
    sampler = LengthBucketSampler([len(x) for x in xs], c["batch"], seed=0)

    release_free_memory()
    base = rss_mb()
    reset_peak_rss()
    longest_batch, seconds, n_rows = None, [], 0
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        t0 = time.perf_counter()
        correct = 0
        for idx in sampler:
            x = pack_sequence([xs[i] for i in idx], enforce_sorted=False)
            y = labels[idx]
            opt.zero_grad(set_to_none=True)
            out = vlrnn.block_loss(lstm, None, x, None, block_len=c["block_len"])
            h, _ = out.state                  # (1, B, H): each series at its own last step
            logits = head(h[-1])
            loss = nn.functional.cross_entropy(logits, y)
            loss.backward()                   # exact gradient through every step
            nn.utils.clip_grad_norm_(lstm.parameters(), 1.0)
            opt.step()
            correct += int((logits.argmax(-1) == y).sum())
            if longest_batch is None or len(x.batch_sizes) > len(longest_batch.batch_sizes):
                longest_batch = x
        seconds.append(time.perf_counter() - t0)
        n_rows = sum(len(x) for x in xs)
    peak = peak_rss_mb()                      # read before plain_bptt_mb resets it
    plain = plain_bptt_mb(lstm, None, longest_batch)
    return dict(longest=longest, rows=n_rows, data_mb=n_rows * c["n_in"] * 4 / 2**20,
                base_mb=base, peak_mb=peak, train_mb=peak - base, plain_mb=plain,
                longest_batch=f"{int(longest_batch.batch_sizes[0])} x "
                              f"{len(longest_batch.batch_sizes):,}",
                s_epoch=min(seconds), train_acc=correct / len(xs))


# -- driver --------------------------------------------------------------------------------------
COLUMNS = [("longest series", "longest", ",d"), ("steps in all", "rows", ",d"),
           ("data MB", "data_mb", ",.0f"), ("RSS before training MB", "base_mb", ",.0f"),
           ("peak RSS MB", "peak_mb", ",.0f"), ("training peak above base MB", "train_mb", ",.0f"),
           ("longest batch (series x steps)", "longest_batch", ""),
           ("plain BPTT would add MB", "plain_mb", ",.0f"), ("s / epoch", "s_epoch", ".0f")]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="two short lengths, one epoch")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--out", type=Path, default=None, help="write the table (markdown) here")
    p.add_argument("--worker", nargs=2, type=int, metavar=("LONGEST", "EPOCHS"),
                   help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(*args.worker)))
        return 0
    lengths = QUICK if args.quick else FULL
    c = CONFIG
    load0 = os.getloadavg()
    rows = []
    for longest in lengths:
        r = spawn(__file__, [longest, args.epochs], timeout=1800)
        r.setdefault("longest", longest)
        rows.append(r)
        print(json.dumps(r), flush=True)
    load1 = os.getloadavg()
    table = markdown(rows, COLUMNS)
    head = (f"{c['n_series']} series, lengths uniform in [longest/10, longest], {c['n_in']} "
            f"features, 2 classes; nn.LSTM(hidden {c['hidden']}) + linear head on the final "
            f"state, batch {c['batch']} (length-bucketed), block_len {c['block_len']}, Adam, "
            f"{args.epochs} epoch(s), float32, 1 torch thread, a fresh process per row. "
            f"Machine load average (1 min) {load0[0]:.1f} before, {load1[0]:.1f} after "
            f"({os.cpu_count()} CPUs).")
    print("\n" + head + "\n\n" + table)
    ok = [r for r in rows if "error" not in r]
    if len(ok) >= 2:
        grow = ok[-1]["train_mb"] - ok[0]["train_mb"]
        print(f"\nRESULT longest series {ok[0]['longest']:,} -> {ok[-1]['longest']:,} steps: "
              f"training peak above base {ok[0]['train_mb']:,.0f} -> {ok[-1]['train_mb']:,.0f} "
              f"MB ({grow:+,.0f} MB); plain BPTT would add {ok[-1]['plain_mb']:,.0f} MB for "
              "the longest batch")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(f"# Sequence-level task: memory vs the longest series\n\n"
                            f"Command: `python benchmarks/sequence_task_memory.py"
                            f"{' --quick' if args.quick else ''} --epochs {args.epochs}`\n\n"
                            f"{head}\n\n{table}\n")
    return 0 if len(ok) == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
