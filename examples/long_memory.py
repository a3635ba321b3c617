"""Long-range memory: exact BPTT (vlrnn) learns a 2000-step recall, truncated BPTT cannot.

The task: a cue, one of 4 classes, is shown once (a one-hot pulse of height 10 on 4 cue
channels) at a random step among the first 10. Then come ``--delay`` (D = 2000) steps of
distraction: standard Gaussian noise on 4 other channels. After the last step the model
must say which class the cue was; a linear classifier reads the final hidden state of every
layer. Chance is 25%.

Two ways to train the same model on the same batches:

* **exact BPTT** with ``vlrnn.block_loss(rnn, None, x, None, block_len=256)``: the loss
  on ``out.state`` is backpropagated through all ~2010 steps, in memory of one 256-step
  block plus the state at each block boundary;
* **truncated BPTT** with a window of ``--window`` (256) steps, written out in this script:
  the state is carried forward from window to window but detached between them, so the
  gradient of the answer reaches back 256 steps only. The cue is ~1750 steps further back:
  no gradient ever connects it to the answer, so the model stays at chance however long it
  trains. This is what truncation costs when the dependency is longer than the window.

Both start from the same "chrono" initialisation of the gates (Tallec & Ollivier, 2018:
forget/update-gate biases ``log(U(1, D-1))``), which gives some units time constants up to
D; with PyTorch's default initialisation the memory of the cue fades within a few dozen
steps and its gradient with it, and neither method learns in this budget.

Then a depth sweep: LSTM and GRU (``nn.LSTM``/``nn.GRU``, the fused kernels) with 1, 2 and
3 layers, each trained both ways. Each run is done in a fresh (forked) process so its peak
memory is its own; the table reports held-out accuracy, seconds per epoch, the peak resident
memory above what the process held before training (which includes the 15-30 MB any run
holds: optimizer state, allocator arenas, kernel workspaces), and the memory plain BPTT
adds for one batch (its forward and backward run and measured with
``vlrnn.memory.plain_bptt_mb``).

Run (about 6 minutes on 2 CPU cores; ``--quick`` is a ~20 s smoke run with D = 200)::

    python examples/long_memory.py
    python examples/long_memory.py --out long_memory.md      # also save the table
    python examples/long_memory.py --cells lstm --layers 1 --seed 1
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from pathlib import Path

import torch
from torch import nn

import vlrnn
# the task, the model and both ways to train it are the ones `vlrnn demo` runs
from vlrnn.cli.recall import (CUE_WINDOW, K, VAL_SEED, Recall, accuracy, exact_step,
                              make_batch, truncated_step)


# -- memory ------------------------------------------------------------------------------------
def plain_bptt_mb(model: Recall, x) -> float:
    """MB plain BPTT would add for a backward pass through all of ``x`` (the recurrent
    stack; the classifier is negligible), measured (``vlrnn.memory.plain_bptt_mb``)."""
    return vlrnn.memory.plain_bptt_mb(model.rnn, None, x)


# -- one run (in its own process) --------------------------------------------------------------
def run(cfg: dict) -> dict:
    torch.set_num_threads(cfg["threads"])
    model = Recall(cfg["cell"], cfg["layers"], cfg["hidden"], cfg["delay"], cfg["seed"])
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    train_gen = torch.Generator().manual_seed(cfg["seed"] + 1)      # same batches both ways
    x_val, y_val = make_batch(cfg["n_val"], cfg["delay"], torch.Generator().manual_seed(VAL_SEED))
    base = vlrnn.memory.rss_mb()
    accs, times = [], []
    for _ in range(cfg["epochs"]):
        t0 = time.perf_counter()
        for _ in range(cfg["batches"]):
            x, label = make_batch(cfg["batch_size"], cfg["delay"], train_gen)
            opt.zero_grad(set_to_none=True)
            if cfg["method"] == "exact":
                exact_step(model, x, label, cfg["block_len"])
            else:
                truncated_step(model, x, label, cfg["window"])
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        times.append(time.perf_counter() - t0)
        accs.append(accuracy(model, x_val, y_val, cfg["block_len"], cfg["batch_size"]))
    peak = vlrnn.memory.peak_rss_mb()
    x, _ = make_batch(cfg["batch_size"], cfg["delay"], torch.Generator().manual_seed(0))
    return dict(cfg, accs=accs, acc=accs[-1], s_per_epoch=sum(times) / len(times),
                peak_mb=peak, above_mb=peak - base, plain_mb=plain_bptt_mb(model, x))


def run_isolated(cfg: dict) -> dict:
    """``run(cfg)`` in a fresh child process, so that its peak memory is its own."""
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    with mp.get_context(method).Pool(1) as pool:
        return pool.apply(run, (cfg,))


# -- report ------------------------------------------------------------------------------------
def majority_rate(args) -> float:
    """Accuracy of always answering the held-out set's most common class."""
    _, label = make_batch(args.n_val, args.delay, torch.Generator().manual_seed(VAL_SEED))
    return float(torch.bincount(label, minlength=K).max()) / len(label)


def table(rows, args) -> str:
    lines = [f"Recall a cue after D = {args.delay} distractor steps ({K} classes, chance "
             f"{100 / K:.0f}%; always answering the held-out set's most common class scores "
             f"{100 * majority_rate(args):.1f}%); hidden {args.hidden}, batch {args.batch_size}, "
             f"{args.epochs} epochs x {args.batches} batches; exact = vlrnn block_len "
             f"{args.block_len}, truncated = window {args.window}.",
             "",
             "| cell | layers | method | held-out acc | s / epoch | peak RSS (MB) "
             "| above start (MB) | plain BPTT needs (MB) |",
             "|---|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        method = "exact (vlrnn)" if r["method"] == "exact" else f"truncated {r['window']}"
        lines.append(f"| {r['cell'].upper()} | {r['layers']} | {method} | {100 * r['acc']:.1f}% "
                     f"| {r['s_per_epoch']:.1f} | {r['peak_mb']:.0f} | {r['above_mb']:.0f} "
                     f"| {r['plain_mb']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--delay", type=int, default=2000, help="distractor steps D after the cue")
    p.add_argument("--window", type=int, default=256, help="truncated BPTT window")
    p.add_argument("--block-len", type=int, default=256, help="vlrnn block length")
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--batches", type=int, default=20, help="batches per epoch")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--cells", default="lstm,gru", help="comma-separated: lstm, gru")
    p.add_argument("--layers", default="1,2,3", help="comma-separated layer counts")
    p.add_argument("--n-val", type=int, default=256, help="held-out sequences")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads per run (1 is fastest for these small models)")
    p.add_argument("--out", type=Path, help="also write the markdown table to this file")
    p.add_argument("--quick", action="store_true",
                   help="a ~20 s smoke run: D = 200, window 50, 2 short epochs")
    args = p.parse_args(argv)
    if args.quick:
        args.delay, args.window, args.block_len = 200, 50, 50
        args.batch_size, args.batches, args.epochs, args.n_val = 16, 4, 2, 32
    if not args.window < args.delay:
        p.error(f"--window ({args.window}) must be shorter than --delay ({args.delay}) "
                "for the comparison to mean anything")
    cells = [c.strip().lower() for c in args.cells.split(",") if c.strip()]
    if any(c not in ("lstm", "gru") for c in cells):
        p.error(f"--cells takes lstm and/or gru, got {args.cells!r}")
    depths = [int(v) for v in args.layers.split(",")]
    torch.set_num_threads(args.threads)

    print(f"cue at a random step in [0, {CUE_WINDOW}), answer after {args.delay} more steps "
          f"(sequences of {args.delay + CUE_WINDOW} steps)\n")
    rows = []
    t_all = time.perf_counter()
    for cell in cells:
        for layers in depths:
            for method in ("exact", "truncated"):
                cfg = dict(cell=cell, layers=layers, method=method, delay=args.delay,
                           window=args.window, block_len=args.block_len, hidden=args.hidden,
                           batch_size=args.batch_size, batches=args.batches,
                           epochs=args.epochs, lr=args.lr, n_val=args.n_val, seed=args.seed,
                           threads=args.threads)
                r = run_isolated(cfg)
                rows.append(r)
                curve = " ".join(f"{100 * a:5.1f}%" for a in r["accs"])
                print(f"{cell.upper():4s} x{layers} {method:9s}  held-out acc by epoch: {curve}"
                      f"  ({r['s_per_epoch']:.1f} s/epoch)", flush=True)
    text = table(rows, args)
    print(f"\n{text}\n")
    exact = [r["acc"] for r in rows if r["method"] == "exact"]
    trunc = [r["acc"] for r in rows if r["method"] == "truncated"]
    print(f"RESULT exact BPTT mean accuracy {100 * sum(exact) / len(exact):.1f}%, truncated "
          f"BPTT {100 * sum(trunc) / len(trunc):.1f}% (chance {100 / K:.0f}%), "
          f"{time.perf_counter() - t_all:.0f} s in all")
    if args.out:
        args.out.write_text(text + "\n")
        print(f"table written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
