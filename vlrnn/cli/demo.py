"""``vlrnn demo``: what exact BPTT in flat memory buys, in three parts and one picture.

1. **Exact vs truncated.** The same LSTM learns to recall a cue shown 1,000 steps before
   the answer, trained with vlrnn's exact gradient and with truncated BPTT (window 100),
   on the same batches: accuracy against chance for both.
2. **Memory.** Peak memory of one forward + backward against sequence length, vlrnn and
   plain BPTT (measured where it fits, estimated beyond), each in a fresh process.
3. **A language model on Python's standard library** (every ``.py`` file one sequence,
   ships with Python, offline): held-out bits per byte against the byte-frequency
   baseline, and a sample. The longest file is trained on whole, with the exact gradient.

About 3 minutes on 2 CPU cores (``--minutes``); ``--quick`` is a ~30 s smoke run. The
last line is a one-line summary of all three.
"""
from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import torch

from ..memory import peak_rss_mb
from . import recall as recall_task
from ._demo_figure import save_figure
from ._demo_lm import (
    VOCAB,
    ByteLSTM,
    batch_of,
    cross_entropy_rows,
    evaluate_bits,
    read_bytes,
    split_files,
    stdlib_files,
    train_lm,
    unigram_bits,
)
from ._demo_memory import estimate_plain, memory_curve

# the corpus and model, for the examples that train on the same data
__all__ = ["VOCAB", "ByteLSTM", "add_arguments", "batch_of", "cross_entropy_rows", "read_bytes",
           "run", "split_files", "stdlib_files"]

# the settings of each part: full run, and --quick
RECALL = {"full": dict(delay=1000, window=100, block_len=250, batches=16, epochs=5, n_val=512),
          "quick": dict(delay=200, window=40, block_len=50, batches=8, epochs=3, n_val=128)}
MEMORY = {"full": dict(lengths=(1_000, 4_000, 16_000, 64_000), plain_up_to=16_000),
          "quick": dict(lengths=(500, 2_000, 8_000), plain_up_to=2_000)}
LM = {"full": dict(file_bytes=4_096, max_bytes=200_000),
      "quick": dict(file_bytes=2_048, max_bytes=20_000)}
RESERVE_S = 15.0  # final evaluation, sample and figure, kept out of the training budget


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--minutes", type=float, default=3.0,
                   help="time for the whole demo (default 3); the language model trains for "
                        "what parts 1 and 2 leave of it")
    p.add_argument("--quick", action="store_true",
                   help="a ~30 s smoke run: shorter recall, fewer lengths, a short model")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="folder for demo.png (default: a new temporary folder, named at the end)")
    p.add_argument("--hidden-size", type=int, default=128,
                   help="language model: LSTM hidden size (default 128)")
    p.add_argument("--block-len", type=int, default=256,
                   help="language model: time steps per block (default 256)")
    p.add_argument("--lr", type=float, default=5e-3,
                   help="language model: Adam learning rate (default 5e-3, cosine decay)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--stdlib", default=None,
                   help="folder of .py files to use instead of the installed standard library")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _say(text: str = "") -> None:
    print(text, flush=True)


def run(args: argparse.Namespace) -> int:
    for name in ("minutes", "hidden_size", "block_len", "lr"):
        if not getattr(args, name) > 0:
            raise ValueError(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    mode = "quick" if args.quick else "full"
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out_dir = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="vlrnn-demo-"))
    budget = 30.0 if args.quick and args.minutes == 3.0 else args.minutes * 60
    t_start = time.perf_counter()
    torch.manual_seed(args.seed)

    # -- 1. exact vs truncated ---------------------------------------------------------------
    rc = RECALL[mode]
    _say(f"1. exact vs truncated BPTT: recall one of {recall_task.K} cues shown "
         f"{rc['delay']:,} steps before the answer (chance {1 / recall_task.K:.2f})")
    recall = {"delay": rc["delay"], "window": rc["window"], "chance": 1 / recall_task.K}
    # Small models and small ops: one thread is fastest, and a second thread spinning in
    # OpenMP barriers slows every step by up to 100x when another process holds a core
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    for method in ("exact", "truncated"):
        label = "exact (vlrnn)" if method == "exact" else f"truncated, window {rc['window']}"
        res = recall_task.train(method, seed=args.seed, **rc, on_epoch=lambda e, a, lab=label:
                                _say(f"   {lab:24s} epoch {e}: held-out accuracy {a:.2f}"))
        recall[method] = res
    exact_acc, trunc_acc = recall["exact"]["acc"], recall["truncated"]["acc"]
    _say(f"   -> exact {exact_acc:.2f}, truncated {trunc_acc:.2f}: the truncated gradient "
         f"never reaches back {rc['delay']:,} steps to the cue\n")

    # -- 2. memory ----------------------------------------------------------------------------
    mc = MEMORY[mode]
    _say("2. peak memory of one forward + backward of the byte LSTM over one sequence "
         "(fresh process each)")
    memory = memory_curve(mc["lengths"], mc["plain_up_to"], hidden=args.hidden_size,
                          block_len=args.block_len)
    for i, T in enumerate(memory["T"]):
        kind = "measured" if i < memory["plain_measured"] else "estimated"
        _say(f"   T = {T:>7,}: vlrnn {memory['vlrnn'][i]:7.0f} MB   plain BPTT "
             f"{memory['plain'][i]:8.0f} MB ({kind})")
    files = stdlib_files(args.stdlib)
    longest_file = max(p.stat().st_size for p in files)
    _say(f"   -> at {longest_file:,} bytes (the longest file here) plain BPTT would need about "
         f"{estimate_plain(memory, longest_file) / 1024:.1f} GB; vlrnn stays at "
         f"{max(memory['vlrnn']):.0f} MB\n")

    # -- 3. language model ----------------------------------------------------------------------
    lc = LM[mode]
    kept = [p for p in files if p.stat().st_size <= lc["max_bytes"]] or files
    train_files, val_files = split_files(kept)
    if not val_files:  # a tiny custom folder: hold out one file
        train_files, val_files = kept[:-1] or kept, kept[-1:]
    train = [read_bytes(p) for p in train_files]
    val = [read_bytes(p) for p in val_files]
    baseline = unigram_bits(train, val)
    seconds = max(5.0, budget - (time.perf_counter() - t_start) - RESERVE_S)
    _say(f"3. byte-level LSTM({args.hidden_size}) on {len(train)} files of the standard library "
         f"({sum(map(len, train)) / 1e6:.1f} MB; {len(val)} held out), {seconds:.0f} s of "
         f"training; byte frequencies alone give {baseline:.2f} bits/byte")
    lm = train_lm(train, val, seconds=seconds, hidden=args.hidden_size,
                  block_len=args.block_len, file_bytes=lc["file_bytes"], lr=args.lr,
                  seed=args.seed, device=device, progress=not args.no_progress,
                  log=_say)
    lm["baseline"] = baseline
    bits = evaluate_bits(lm["model"], val, device, args.block_len)
    _say(f"   -> {lm['steps']} optimizer steps over {lm['bytes'] / 1e6:.1f} MB: held-out "
         f"{bits:.2f} bits/byte (all {len(val)} held-out files) vs {baseline:.2f} from byte "
         "frequencies")
    text = lm["model"].sample(b"def ", 300, generator=torch.Generator().manual_seed(args.seed))
    _say("   sample (prompt 'def '):\n" + "-" * 64 + "\ndef "
         + text.decode("utf-8", "replace") + "\n" + "-" * 64)

    # -- the picture and the summary ----------------------------------------------------------
    png = save_figure(out_dir / "demo.png", recall, memory, lm)
    if png is None:
        _say("figure skipped: matplotlib is not installed (pip install \"vlrnn[plot]\")")
    else:
        _say(f"figure: {png}")
    peak = peak_rss_mb() if device.type == "cpu" else torch.cuda.max_memory_allocated() / 2**20
    total = time.perf_counter() - t_start
    _say(f"1. exact vs truncated: {exact_acc:.2f} vs {trunc_acc:.2f} (chance "
         f"{recall['chance']:.2f}) on a cue {rc['delay']:,} steps back")
    _say(f"2. memory: vlrnn {max(memory['vlrnn']):.0f} MB at {memory['T'][-1]:,} steps, plain "
         f"BPTT {memory['plain'][-1]:,.0f} MB ({'measured' if memory['plain_measured'] == len(memory['T']) else 'estimated'})")
    _say(f"3. language model: {bits:.2f} bits/byte vs {baseline:.2f} (byte frequencies), "
         f"{lm['steps']} steps, longest file {lm['longest']:,} bytes trained whole")
    _say(f"summary: bits/byte {bits:.2f} vs baseline {baseline:.2f}; exact {exact_acc:.2f} vs "
         f"truncated {trunc_acc:.2f} (chance {recall['chance']:.2f}); peak RSS {peak:.0f} MB; "
         f"{total:.0f} s")
    torch.set_num_threads(threads)
    return 0 if math.isfinite(bits) else 1

