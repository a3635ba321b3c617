"""Stacked recurrent models compared: LSTM vs GRU vs QRNN with 1-4 layers, exact BPTT.

Every model is trained with vlrnn's exact gradient (``vlrnn.block_loss``, blocks of
``--block-len`` steps) on two tasks, one model per (cell, depth), the same batches for all:

* **recall** (synthetic, from ``long_memory.py``): a cue, one of 4 classes, is shown once
  among the first 10 steps, then ``--delay`` (2,000) steps of Gaussian noise; a linear
  classifier reads the final state of every layer. Held-out accuracy; chance is 25%. Gate
  biases get the "chrono" initialisation (time constants up to the delay) for every cell.
* **bytes** (real data that ships offline): next-byte prediction over whole files of
  Python's own standard library, a ragged ``PackedSequence`` batch of files of different
  lengths per step; embedding -> recurrent stack -> 256 logits. Held-out loss in bits per
  byte on files never trained on (a uniform guess is 8 bits per byte).

The cells are PyTorch's fused ``nn.LSTM`` and ``nn.GRU`` (``num_layers`` stacked) and
``vlrnn.models.QRNN`` (``window`` 2, fo-pooling: one matrix multiply per layer and block,
then a parallel scan over time, no Python loop over steps). Hidden size is the same for
all, so the parameter counts differ (shown in the tables). Each run is a fresh forked
process so that its peak memory is its own: the tables report seconds per epoch, the peak
resident memory above what the process held before training, and the memory plain BPTT
adds for the largest batch (``vlrnn.memory.plain_bptt_mb``: plain forward and backward run
on the batch's first steps, measured, and extended to all of it).

Run (about 30 minutes on 2 CPU cores; ``--quick`` is a ~30 s smoke run)::

    python examples/compare_models.py
    python examples/compare_models.py --out compare_models.md       # also save the tables
    python examples/compare_models.py --task bytes --cells qrnn,lstm --layers 1,2
"""
from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import random
import sys
import time
from pathlib import Path
from typing import Callable, List

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

import vlrnn
from vlrnn.data import LengthBucketSampler
from vlrnn.cli.demo import VOCAB, batch_of, cross_entropy_rows, read_bytes, split_files, \
    stdlib_files
from vlrnn.models import QRNN

sys.path.insert(0, str(Path(__file__).resolve().parent))
import long_memory  # noqa: E402  (the sibling example: plain BPTT's memory)
from vlrnn.cli import recall as recall_task  # noqa: E402  (the recall task: data, chrono init)

CELLS = ("lstm", "gru", "qrnn")
TASKS = ("recall", "bytes")


# -- models ------------------------------------------------------------------------------------
def make_rnn(cell: str, n_in: int, hidden: int, layers: int, window: int) -> nn.Module:
    """A ``layers``-deep stack of one cell kind, time-major, ``(x, state) -> (y, state)``."""
    if cell == "qrnn":
        return QRNN(n_in, hidden, num_layers=layers, window=window)
    return {"lstm": nn.LSTM, "gru": nn.GRU}[cell](n_in, hidden, num_layers=layers)


def state_batch_dim(rnn: nn.Module) -> int:
    """Where the batch is in the state: ``(layers, B, H)`` for torch's RNNs, ``(B, H)``
    per layer for QRNN."""
    return 0 if isinstance(rnn, QRNN) else 1


def final_features(rnn: nn.Module, state) -> torch.Tensor:
    """The final state of every layer side by side: ``(B, layers * H)``."""
    if isinstance(rnn, QRNN):
        return torch.cat([layer[0] for layer in state], dim=1)       # each c is (B, H)
    h = state[0] if isinstance(state, tuple) else state               # (layers, B, H)
    return h.permute(1, 0, 2).reshape(h.shape[1], -1)


def chrono_init(rnn: nn.Module, t_max: int, gen: torch.Generator) -> None:
    """Forget-gate time constants spread up to ``t_max`` steps (Tallec & Ollivier, 2018).

    For QRNN, ``c_t = f z + (1 - f) c_{t-1}``: the ``f`` bias is ``-log(U(1, t_max - 1))``,
    so ``f`` starts near ``1 / tau`` and the cell keeps its value for about ``tau`` steps.
    LSTM and GRU: as in ``long_memory.py``.
    """
    if not isinstance(rnn, QRNN):
        recall_task.chrono_init(rnn, t_max, gen)
        return
    H = rnn.hidden_size
    with torch.no_grad():
        for lin in rnn.layers:                    # gate rows (z, f, o)
            lin.bias.zero_()
            lin.bias[H:2 * H] = -torch.log(torch.empty(H).uniform_(1, t_max - 1, generator=gen))


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class RecallNet(nn.Module):
    """A recurrent stack plus a linear classifier on the final state of every layer."""

    def __init__(self, cell: str, layers: int, hidden: int, window: int, delay: int, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.rnn = make_rnn(cell, recall_task.K + recall_task.NOISE, hidden, layers, window)
        chrono_init(self.rnn, delay, torch.Generator().manual_seed(seed))
        self.head = nn.Linear(layers * hidden, recall_task.K)

    def classify(self, state) -> torch.Tensor:
        return self.head(final_features(self.rnn, state))


class ByteNet(nn.Module):
    """Byte embedding -> recurrent stack -> 256 logits, on packed batches.

    ``model(x, state) -> (logits, state)``: ``x`` a ``PackedSequence`` of byte ids (data
    ``(N,)``), ``logits`` a ``PackedSequence`` with data ``(N, 256)``, same batch order.
    """

    def __init__(self, cell: str, layers: int, hidden: int, window: int, seed: int,
                 embed: int = 32):
        super().__init__()
        torch.manual_seed(seed)
        self.embed = nn.Embedding(VOCAB, embed)
        self.rnn = make_rnn(cell, embed, hidden, layers, window)
        self.head = nn.Linear(hidden, VOCAB)
        self.state_batch_dim = state_batch_dim(self.rnn)   # tells vlrnn where the batch is

    def forward(self, x: PackedSequence, state=None):
        e = PackedSequence(self.embed(x.data), x.batch_sizes, x.sorted_indices,
                           x.unsorted_indices)
        out, state = self.rnn(e, state)
        return PackedSequence(self.head(out.data), out.batch_sizes, out.sorted_indices,
                              out.unsorted_indices), state


# -- the two tasks, each run in its own process ------------------------------------------------
def run_recall(cfg: dict) -> dict:
    """Train on ``batches`` fresh batches per epoch; held-out accuracy after each epoch."""
    torch.set_num_threads(cfg["threads"])
    model = RecallNet(cfg["cell"], cfg["layers"], cfg["hidden"], cfg["window"], cfg["delay"],
                      cfg["seed"])
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    gen = torch.Generator().manual_seed(cfg["seed"] + 1)             # same batches for all
    x_val, y_val = recall_task.make_batch(cfg["n_val"], cfg["delay"],
                                          torch.Generator().manual_seed(recall_task.VAL_SEED))
    base = vlrnn.memory.rss_mb()
    scores, times = [], []
    for _ in range(cfg["epochs"]):
        t0 = time.perf_counter()
        for _ in range(cfg["batches"]):
            x, label = recall_task.make_batch(cfg["batch_size"], cfg["delay"], gen)
            opt.zero_grad(set_to_none=True)
            out = vlrnn.block_loss(model.rnn, None, x, None, block_len=cfg["block_len"])
            nn.functional.cross_entropy(model.classify(out.state), label).backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        times.append(time.perf_counter() - t0)
        scores.append(recall_task.accuracy(model, x_val, y_val, cfg["block_len"],
                                           cfg["batch_size"]))
    peak = vlrnn.memory.peak_rss_mb()
    x, _ = recall_task.make_batch(cfg["batch_size"], cfg["delay"], torch.Generator().manual_seed(0))
    return dict(cfg, scores=scores, score=scores[-1], s_per_epoch=sum(times) / len(times),
                params=n_params(model), peak_mb=peak, above_mb=peak - base,
                plain_mb=long_memory.plain_bptt_mb(model, x))


def byte_corpus(cfg: dict):
    """Training and held-out files (byte tensors ``(T,)``): the standard library's ``.py``
    files of at most ``max_bytes``, a seeded sample of ``n_files`` of the training split and
    the first ``n_val`` of the held-out split (the same for every run)."""
    files = [p for p in stdlib_files() if p.stat().st_size <= cfg["max_bytes"]]
    train_files, val_files = split_files(files)
    train_files = sorted(random.Random(cfg["seed"]).sample(
        train_files, min(cfg["n_files"], len(train_files))))
    return [read_bytes(p) for p in train_files], [read_bytes(p) for p in val_files[:cfg["n_val"]]]


def unigram_bits_per_byte(cfg: dict) -> float:
    """The baseline a model must beat: held-out bits per byte when each byte is predicted
    from the training files' byte frequencies alone (add-half smoothing)."""
    train, val = byte_corpus(cfg)
    counts = torch.bincount(torch.cat([s[1:] for s in train]), minlength=VOCAB).double() + 0.5
    logp = torch.log2(counts / counts.sum())
    return float(-logp[torch.cat([s[1:] for s in val])].mean())


def bits_per_byte(model: ByteNet, seqs: List[torch.Tensor], block_len: int,
                  batch_size: int) -> float:
    """Mean next-byte cross-entropy over ``seqs`` in bits, streamed with no graph."""
    model.eval()
    total, rows = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(seqs), batch_size):
            x, y = batch_of(seqs[i:i + batch_size], "cpu")
            out = vlrnn.block_loss(model, cross_entropy_rows, x, y, block_len=block_len,
                                   reduction="sum")
            total += float(out.loss)
            rows += x.data.shape[0]
    model.train()
    return total / rows / math.log(2)


def run_bytes(cfg: dict) -> dict:
    """Epochs over the same training files in length-bucketed batches; held-out bits per
    byte after each epoch."""
    torch.set_num_threads(cfg["threads"])
    train, val = byte_corpus(cfg)
    model = ByteNet(cfg["cell"], cfg["layers"], cfg["hidden"], cfg["window"], cfg["seed"])
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    sampler = LengthBucketSampler([len(s) for s in train], cfg["batch_size"], seed=cfg["seed"])
    base = vlrnn.memory.rss_mb()
    scores, times, biggest = [], [], []
    for epoch in range(cfg["epochs"]):
        t0 = time.perf_counter()
        for idx in sampler.batches(epoch):
            x, y = batch_of([train[i] for i in idx], "cpu")
            opt.zero_grad(set_to_none=True)
            vlrnn.block_loss(model, cross_entropy_rows, x, y,
                             block_len=cfg["block_len"]).loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            if not biggest or x.data.shape[0] > biggest[0].data.shape[0]:
                biggest = [x, y]
        times.append(time.perf_counter() - t0)
        scores.append(bits_per_byte(model, val, cfg["block_len"], cfg["batch_size"]))
    peak = vlrnn.memory.peak_rss_mb()      # before plain_bptt_mb, which resets the peak
    plain = vlrnn.memory.plain_bptt_mb(model, cross_entropy_rows, *biggest)
    return dict(cfg, scores=scores, score=scores[-1], s_per_epoch=sum(times) / len(times),
                params=n_params(model), peak_mb=peak, above_mb=peak - base, plain_mb=plain,
                train_bytes=sum(len(s) - 1 for s in train),
                longest=max(len(s) for s in train), n_files=len(train), n_val=len(val))


def run_isolated(fn: Callable[[dict], dict], cfg: dict) -> dict:
    """``fn(cfg)`` in a fresh child process, so that its peak memory is its own."""
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    with mp.get_context(method).Pool(1) as pool:
        return pool.apply(fn, (cfg,))


# -- report ------------------------------------------------------------------------------------
def table(rows: List[dict], task: str, args) -> str:
    if task == "recall":
        title = (f"**recall** after D = {args.delay} distractor steps (4 classes, chance 25%), "
                 f"hidden {args.hidden}, batch {args.batch_size}, {args.epochs} epochs x "
                 f"{args.batches} batches, lr {args.lr_recall}")
        metric = "held-out acc"
    else:
        r0 = rows[0]
        title = (f"**bytes**: {args.n_files} standard-library files of at most "
                 f"{args.max_bytes:,} bytes ({r0['train_bytes']:,} bytes, longest "
                 f"{r0['longest']:,}), {args.n_val} held-out files, hidden {args.hidden}, "
                 f"batch {args.batch_size} files, {args.epochs} epochs, lr {args.lr_bytes}; "
                 f"8 bits/byte for a uniform guess, {unigram_bits_per_byte(r0):.2f} from the "
                 f"training files' byte frequencies")
        metric = "held-out bits/byte"
    lines = [title + f"; exact BPTT, block_len {args.block_len}, {args.threads} thread(s).", "",
             f"| cell | layers | params | {metric} | s / epoch | peak RSS (MB) "
             f"| above start (MB) | plain BPTT needs (MB) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        score = f"{100 * r['score']:.1f}%" if task == "recall" else f"{r['score']:.3f}"
        lines.append(f"| {r['cell'].upper()} | {r['layers']} | {r['params']:,} | {score} "
                     f"| {r['s_per_epoch']:.1f} | {r['peak_mb']:.0f} | {r['above_mb']:.0f} "
                     f"| {r['plain_mb']:.0f} |")
    return "\n".join(lines)


def parse_list(text: str, allowed, what: str, p: argparse.ArgumentParser) -> list:
    items = [v.strip().lower() for v in text.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad or not items:
        p.error(f"--{what} takes a comma-separated list of {', '.join(allowed)}; got {text!r}")
    return items


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="recall,bytes", help="comma-separated: recall, bytes")
    p.add_argument("--cells", default="lstm,gru,qrnn", help="comma-separated: lstm, gru, qrnn")
    p.add_argument("--layers", default="1,2,3,4", help="comma-separated layer counts")
    p.add_argument("--window", type=int, default=2, help="QRNN convolution width (1 or 2)")
    p.add_argument("--block-len", type=int, default=256, help="vlrnn block length")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs (default: 4 for recall, 2 for bytes)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads per run (1 is fastest for these small models)")
    g = p.add_argument_group("recall task")
    g.add_argument("--delay", type=int, default=2000, help="distractor steps after the cue")
    g.add_argument("--batches", type=int, default=20, help="batches per epoch")
    g.add_argument("--lr-recall", type=float, default=1e-2)
    g = p.add_argument_group("bytes task")
    g.add_argument("--max-bytes", type=int, default=4_000, help="longest file used")
    g.add_argument("--n-files", type=int, default=160, help="training files")
    g.add_argument("--lr-bytes", type=float, default=1e-2)
    p.add_argument("--hidden", type=int, default=None,
                   help="hidden size of every layer (default: 32 for recall, 128 for bytes)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="sequences per batch (default: 32 for recall, 8 files for bytes)")
    p.add_argument("--n-val", type=int, default=None,
                   help="held-out sequences (default: 256 for recall, 24 files for bytes)")
    p.add_argument("--out", type=Path, help="also write the markdown tables to this file")
    p.add_argument("--quick", action="store_true", help="a ~40 s smoke run (1 and 4 layers, "
                   "short sequences, 2 short epochs)")
    args = p.parse_args(argv)
    tasks = parse_list(args.task, TASKS, "task", p)
    cells = parse_list(args.cells, CELLS, "cells", p)
    try:
        depths = [int(v) for v in args.layers.split(",")]
    except ValueError:
        p.error(f"--layers takes comma-separated positive integers, got {args.layers!r}")
    if any(d < 1 for d in depths):
        p.error(f"--layers takes positive integers, got {args.layers!r}")
    if args.window not in (1, 2):
        p.error(f"--window must be 1 or 2, got {args.window}")
    if args.quick:
        depths = [1, 4] if args.layers == "1,2,3,4" else depths
        args.delay, args.block_len, args.epochs, args.batches = 200, 50, 2, 3
        args.max_bytes, args.n_files = 1_500, 8
    torch.set_num_threads(args.threads)

    results = {}
    t_all = time.perf_counter()
    for task in tasks:
        hidden = args.hidden or (32 if task == "recall" else 128)
        batch_size = args.batch_size or (32 if task == "recall" else 8)
        n_val = args.n_val or (256 if task == "recall" else 24)
        if args.quick:
            hidden, batch_size, n_val = min(hidden, 16), min(batch_size, 8), min(n_val, 16)
        epochs = args.epochs or (4 if task == "recall" else 2)
        fn = run_recall if task == "recall" else run_bytes
        lr = args.lr_recall if task == "recall" else args.lr_bytes
        rows = []
        for cell in cells:
            for layers in depths:
                cfg = dict(task=task, cell=cell, layers=layers, hidden=hidden,
                           window=args.window, block_len=args.block_len, epochs=epochs,
                           batch_size=batch_size, n_val=n_val, lr=lr, seed=args.seed,
                           threads=args.threads, delay=args.delay, batches=args.batches,
                           max_bytes=args.max_bytes, n_files=args.n_files)
                r = run_isolated(fn, cfg)
                rows.append(r)
                curve = " ".join(f"{100 * s:5.1f}%" if task == "recall" else f"{s:.3f}"
                                 for s in r["scores"])
                print(f"{task:6s} {cell.upper():4s} x{layers}  held-out by epoch: {curve}  "
                      f"({r['s_per_epoch']:.1f} s/epoch, {r['above_mb']:.0f} MB above start)",
                      flush=True)
        results[task] = rows
        print(f"\n{table(rows, task, _shown(args, rows))}\n", flush=True)
    text = "\n\n".join(table(rows, task, _shown(args, rows)) for task, rows in results.items())
    for task, rows in results.items():
        best = (max if task == "recall" else min)(rows, key=lambda r: r["score"])
        score = (f"{100 * best['score']:.1f}% accuracy" if task == "recall"
                 else f"{best['score']:.3f} bits/byte")
        print(f"RESULT {task}: best {best['cell'].upper()} x{best['layers']} at {score}, "
              f"{best['s_per_epoch']:.1f} s/epoch")
    print(f"{time.perf_counter() - t_all:.0f} s in all")
    if args.out:
        args.out.write_text(text + "\n")
        print(f"tables written to {args.out}")
    return 0


def _shown(args, rows: List[dict]) -> argparse.Namespace:
    """``args`` with the sizes that this task's runs actually used, for the table title."""
    shown = argparse.Namespace(**vars(args))
    shown.hidden, shown.batch_size, shown.n_val, shown.epochs = (
        rows[0]["hidden"], rows[0]["batch_size"], rows[0]["n_val"], rows[0]["epochs"])
    shown.n_files = rows[0]["n_files"]
    return shown


if __name__ == "__main__":
    sys.exit(main())
