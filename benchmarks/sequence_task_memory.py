"""Memory of a sequence-level task (one label per series) as the longest series grows.

500 ragged series, lengths drawn uniformly between a tenth of the longest and the longest
(2k, 5k, 10k, 20k steps), 2 features, 2 classes. The class is set in each series' first 40
steps only (a +-1.5 shift of the first feature) and read from the state at the series' own
last step, so the gradient has to travel back through the whole series:

    out = vlrnn.block_loss(lstm, None, x_packed, None, block_len=256)   # no per-step loss
    loss = cross_entropy(head(out.state[0][-1]), labels)                 # loss on the state
    loss.backward()                                                      # exact BPTT

``--api one-call`` runs the same through ``vlrnn.pack_and_train(frame, id_col="id",
time_col="t", series_target=labels)`` on the frame ``vlrnn.data.from_arrays(xs, labels)``
builds (its default readout: final state, mean and max of the outputs, carried in the
state); "base" is then read once the frame exists, so the peak above it also holds the
tensors ``pack_and_train`` makes of the frame (a few copies of the data).

Each longest length runs in a fresh process (``--worker``): data and model are built,
the process's resident memory is read (``base``), then the training epochs run and the
peak resident memory (VmHWM, ``vlrnn.memory``) is read. "training peak above base" is
what training added on top of the data the process holds anyway; it should stay flat
while the longest series grows 10x. Beside it: ``vlrnn.memory.plain_bptt_mb`` for the
longest batch, what plain BPTT (``loss.backward()`` through the whole batch) would add,
measured on prefixes of that batch in the same process and extended to all its steps.

    python benchmarks/sequence_task_memory.py --quick          # ~20 s smoke run
    python benchmarks/sequence_task_memory.py                  # the table (~10 min)
    python benchmarks/sequence_task_memory.py --api one-call   # through pack_and_train
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


def worker(longest: int, epochs: int, api: str) -> dict:
    import torch

    from vlrnn.memory import peak_rss_mb, plain_bptt_mb, release_free_memory, reset_peak_rss, rss_mb

    torch.set_num_threads(1)
    torch.manual_seed(0)
    xs, labels = make_series(CONFIG["n_series"], longest)
    n_rows = sum(len(x) for x in xs)
    train = train_block_loss if api == "block_loss" else train_one_call
    run = train(xs, labels, epochs, (release_free_memory, rss_mb, reset_peak_rss))
    peak = run.pop("peak_mb", None) or peak_rss_mb()   # before plain_bptt_mb resets it
    x = run.pop("longest_batch")
    plain = plain_bptt_mb(run.pop("rnn"), None, x)
    return dict(longest=longest, rows=n_rows, data_mb=n_rows * CONFIG["n_in"] * 4 / 2**20,
                peak_mb=peak, train_mb=peak - run["base_mb"], plain_mb=plain,
                longest_batch=f"{int(x.batch_sizes[0])} x {len(x.batch_sizes):,}", **run)


def train_block_loss(xs, labels, epochs: int, mem) -> dict:
    """The loop written out: ``block_loss`` with no per-step loss, cross-entropy on the
    head of ``out.state``."""
    import torch
    from torch import nn
    from torch.nn.utils.rnn import pack_sequence

    import vlrnn
    from vlrnn.data import LengthBucketSampler

    release_free_memory, rss_mb, reset_peak_rss = mem
    c = CONFIG
    lstm = nn.LSTM(c["n_in"], c["hidden"])
    head = nn.Linear(c["hidden"], 2)
    opt = torch.optim.Adam([*lstm.parameters(), *head.parameters()], lr=c["lr"])
    sampler = LengthBucketSampler([len(x) for x in xs], c["batch"], seed=0)
    release_free_memory()
    base = rss_mb()
    reset_peak_rss()
    longest_batch, seconds = None, []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        t0 = time.perf_counter()
        for idx in sampler:
            x = pack_sequence([xs[i] for i in idx], enforce_sorted=False)
            opt.zero_grad(set_to_none=True)
            out = vlrnn.block_loss(lstm, None, x, None, block_len=c["block_len"])
            h, _ = out.state                  # (1, B, H): each series at its own last step
            loss = nn.functional.cross_entropy(head(h[-1]), labels[idx])
            loss.backward()                   # exact gradient through every step
            nn.utils.clip_grad_norm_(lstm.parameters(), 1.0)
            opt.step()
            if longest_batch is None or len(x.batch_sizes) > len(longest_batch.batch_sizes):
                longest_batch = x
        seconds.append(time.perf_counter() - t0)
    return dict(base_mb=base, s_epoch=min(seconds), longest_batch=longest_batch, rnn=lstm)


def train_one_call(xs, labels, epochs: int, mem) -> dict:
    """The one-call API on the long frame ``from_arrays`` builds: ``pack_and_train(...,
    series_target=labels)`` with its default pooled readout (final state, mean and max of
    the outputs, carried in the state)."""
    from torch.nn.utils.rnn import pack_sequence

    import vlrnn
    from vlrnn.data import from_arrays
    from vlrnn.memory import peak_rss_mb

    release_free_memory, rss_mb, reset_peak_rss = mem
    c = CONFIG
    frame, y = from_arrays([x.numpy() for x in xs], ["ab"[int(k)] for k in labels])
    release_free_memory()
    base = rss_mb()
    reset_peak_rss()
    marks = {}
    fit = vlrnn.Trainer.fit

    def measured_fit(self, *args, **kwargs):
        # what the training loop itself adds, apart from the tensors pack_and_train makes
        # of the frame before it (those grow with the total number of rows)
        marks["before_fit_peak"] = peak_rss_mb()
        release_free_memory()
        marks["fit_start"] = rss_mb()
        reset_peak_rss()
        out = fit(self, *args, **kwargs)
        marks["fit_peak"] = peak_rss_mb()
        return out

    vlrnn.Trainer.fit = measured_fit
    t0 = time.perf_counter()
    result = vlrnn.pack_and_train(frame, id_col="id", time_col="t", series_target=y,
                                  hidden_size=c["hidden"], num_layers=1, epochs=epochs,
                                  batch_size=c["batch"], block_len=c["block_len"],
                                  lr=c["lr"], val_fraction=0.0, progress=False)
    seconds = (time.perf_counter() - t0) / epochs
    longest = sorted(range(len(xs)), key=lambda i: -len(xs[i]))[:c["batch"]]
    x = pack_sequence([xs[i] for i in longest], enforce_sorted=False)
    rnn = getattr(result.model, "rnn", result.model)
    return dict(base_mb=base, s_epoch=seconds, longest_batch=x, rnn=rnn,
                peak_mb=max(marks["before_fit_peak"], peak_rss_mb()),
                fit_mb=marks["fit_peak"] - marks["fit_start"])


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
    p.add_argument("--lengths", type=str, default=None,
                   help="comma-separated longest lengths (default 2000,5000,10000,20000)")
    p.add_argument("--out", type=Path, default=None, help="write the table (markdown) here")
    p.add_argument("--api", choices=["block_loss", "one-call"], default="block_loss",
                   help="block_loss: the loop written out; one-call: vlrnn.pack_and_train("
                        "series_target=...) on the frame vlrnn.data.from_arrays builds")
    p.add_argument("--worker", nargs=3, metavar=("LONGEST", "EPOCHS", "API"),
                   help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        longest, epochs, api = args.worker
        print(json.dumps(worker(int(longest), int(epochs), api)))
        return 0
    lengths = QUICK if args.quick else FULL
    if args.lengths:
        lengths = [int(v) for v in args.lengths.split(",")]
    c = CONFIG
    load0 = os.getloadavg()
    rows = []
    for longest in lengths:
        r = spawn(__file__, [longest, args.epochs, args.api], timeout=1800)
        r.setdefault("longest", longest)
        rows.append(r)
        print(json.dumps(r), flush=True)
    load1 = os.getloadavg()
    columns = COLUMNS if args.api == "block_loss" else COLUMNS[:6] + [
        ("Trainer.fit peak above its start MB", "fit_mb", ",.0f")] + COLUMNS[6:]
    table = markdown(rows, columns)
    how = (f"nn.LSTM(hidden {c['hidden']}) + linear head on the final state, written out "
           "with vlrnn.block_loss" if args.api == "block_loss" else
           f"vlrnn.pack_and_train(frame, series_target=labels) on the frame "
           f"vlrnn.data.from_arrays builds (LSTM hidden {c['hidden']}, 1 layer, default pooled "
           "readout, no validation split)")
    head = (f"{c['n_series']} series, lengths uniform in [longest/10, longest], {c['n_in']} "
            f"features, 2 classes; {how}; batch {c['batch']} (length-bucketed), block_len "
            f"{c['block_len']}, Adam, {args.epochs} epoch(s), float32, 1 torch thread, a fresh "
            f"process per row. Machine load average (1 min) {load0[0]:.1f} before, "
            f"{load1[0]:.1f} after ({os.cpu_count()} CPUs, shared with other jobs).")
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
                            f"{' --quick' if args.quick else ''} --epochs {args.epochs} --api {args.api}"
                            f"{' --lengths ' + args.lengths if args.lengths else ''}`\n\n"
                            f"{head}\n\n{table}\n")
    return 0 if len(ok) == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
