"""Classify very long, ragged series from their final state, trained with the exact gradient.

Each series is a synthetic sensor trace of 2,000 to 20,000 steps (lengths drawn
log-uniformly, so every batch is ragged). Its class is set by the machine's start-up
transient in the first 60 steps, and only there:

* class 0 "surge": the signal jumps up by +5 for 60 steps;
* class 1 "sag": it drops by -5 for 60 steps;
* class 2 "ring": it oscillates (+-5, period 12) for 60 steps.

Under the transient and all the way to the end, every trace is the same kind of noise:
unit variance, smoothed like an AR(1) process with phi = 0.9, plus rare spikes. The
classifier only sees each series' state at its own last step, so the start-up has to be
carried through up to 20,000 steps of noise, and the gradient has to come back the same
way. That is what ``vlrnn.block_loss`` gives::

    out = vlrnn.block_loss(lstm, None, x_packed, None, block_len=256)    # no per-step loss
    h, c = out.state                # each sequence's state at its own last step, batch order
    loss = cross_entropy(classifier(h[-1]), labels)
    loss.backward()                 # exact BPTT through every step of every series

in the memory of one block of 256 steps plus one state per block, where plain BPTT would
keep the activations of every step of the longest series (the script measures both).
Truncated BPTT could not learn this: the label is thousands of steps before the loss (see
``long_memory.py`` for that comparison). The LSTM's gates start from the "chrono"
initialisation (Tallec & Ollivier, 2018), which gives some units time constants up to the
longest length.

Run (about 2 minutes on 2 CPU cores; ``--quick`` is a ~10 s smoke run on shorter series)::

    python examples/classify_long_series.py
    python examples/classify_long_series.py --seed 1 --epochs 16
"""
from __future__ import annotations

import argparse
import math
import sys
import time

import torch
from torch import nn
from torch.nn.utils.rnn import pack_sequence

import vlrnn
from vlrnn.data import LengthBucketSampler

CLASSES = ["surge", "sag", "ring"]
ONSET = 60          # length of the start-up transient that carries the class
AMP = 5.0           # its height, in units of the noise's standard deviation


# -- data --------------------------------------------------------------------------------------
def make_series(n: int, min_len: int, max_len: int, gen: torch.Generator):
    """``n`` series of lengths log-uniform in ``[min_len, max_len]``: a list of ``(T_i, 1)``
    tensors and their labels ``(n,)``."""
    u = torch.rand(n, generator=gen)
    lengths = torch.exp(math.log(min_len) + u * (math.log(max_len) - math.log(min_len))).long()
    labels = torch.randint(0, len(CLASSES), (n,), generator=gen)
    t = torch.arange(ONSET, dtype=torch.float32)
    onset = {0: torch.full((ONSET,), AMP), 1: torch.full((ONSET,), -AMP),
             2: AMP * torch.sin(2 * math.pi * t / 12)}
    kernel = (0.9 ** torch.arange(48.0)).flip(0).view(1, 1, -1)   # exponential smoothing
    kernel = kernel / kernel.norm()                                  # unit variance
    xs = []
    for T, c in zip(lengths.tolist(), labels.tolist()):
        eps = torch.randn(1, 1, T + kernel.shape[-1] - 1, generator=gen)
        x = nn.functional.conv1d(eps, kernel).view(T)                # AR(1)-like, phi 0.9
        spikes = torch.rand(T, generator=gen) < 0.002                # rare glitches
        x = x + spikes * torch.randn(T, generator=gen) * 4.0
        x[:ONSET] += onset[c]
        xs.append(x.unsqueeze(1))
    return xs, labels


# -- model -------------------------------------------------------------------------------------
def chrono_init(lstm: nn.LSTM, t_max: int, gen: torch.Generator) -> None:
    """Forget-gate biases ``b ~ log(U(1, t_max - 1))`` and input-gate biases ``-b``
    (Tallec & Ollivier, 2018): time constants spread up to ``t_max`` steps."""
    H = lstm.hidden_size
    with torch.no_grad():
        for layer in range(lstm.num_layers):
            b_ih, b_hh = getattr(lstm, f"bias_ih_l{layer}"), getattr(lstm, f"bias_hh_l{layer}")
            b = torch.log(torch.empty(H).uniform_(1, t_max - 1, generator=gen))
            b_ih.zero_()
            b_hh.zero_()
            b_ih[H:2 * H] = b       # gates are ordered i, f, g, o
            b_ih[:H] = -b


class Classifier(nn.Module):
    def __init__(self, hidden: int, layers: int, t_max: int, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.lstm = nn.LSTM(1, hidden, num_layers=layers)
        chrono_init(self.lstm, t_max, torch.Generator().manual_seed(seed))
        self.head = nn.Linear(hidden, len(CLASSES))

    def loss_and_logits(self, x, labels, block_len: int):
        out = vlrnn.block_loss(self.lstm, None, x, None, block_len=block_len)
        h, _ = out.state                        # (layers, B, H), each at its own last step
        logits = self.head(h[-1])
        return nn.functional.cross_entropy(logits, labels), logits


# -- memory ------------------------------------------------------------------------------------
def plain_bptt_mb(model: Classifier, x) -> float:
    """MB plain BPTT would add for backward through all of ``x`` (the LSTM; the head is
    negligible), measured on prefixes of the batch and extended to all of it."""
    return vlrnn.memory.plain_bptt_mb(model.lstm, None, x)


# -- training ----------------------------------------------------------------------------------
def batches(xs, labels, batch_size: int, epoch: int, seed: int, shuffle: bool = True):
    """Length-bucketed packed batches: series of similar length share a batch (so a batch
    runs about as long as each of its series), batch order shuffled per epoch."""
    sampler = LengthBucketSampler([len(x) for x in xs], batch_size,
                                  shuffle=shuffle, seed=seed)
    sampler.set_epoch(epoch)
    for idx in sampler:
        yield pack_sequence([xs[i] for i in idx], enforce_sorted=False), labels[idx]


@torch.no_grad()
def evaluate(model, xs, labels, batch_size: int, block_len: int) -> float:
    model.eval()
    correct = 0
    for x, y in batches(xs, labels, batch_size, 0, 0, shuffle=False):
        _, logits = model.loss_and_logits(x, y, block_len)   # no graph: streams the blocks
        correct += int((logits.argmax(-1) == y).sum())
    model.train()
    return correct / len(xs)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--min-len", type=int, default=2000)
    p.add_argument("--max-len", type=int, default=20000)
    p.add_argument("--n-train", type=int, default=384, help="training series")
    p.add_argument("--n-test", type=int, default=192, help="held-out series")
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--block-len", type=int, default=256, help="vlrnn time block length")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (1 is fastest for a model this small)")
    p.add_argument("--quick", action="store_true",
                   help="a ~10 s smoke run: 500-3,000 steps, fewer series, 2 epochs")
    args = p.parse_args(argv)
    if args.quick:
        args.min_len, args.max_len = 500, 3000
        args.n_train, args.n_test, args.epochs = 64, 32, 2
    torch.set_num_threads(args.threads)

    gen = torch.Generator().manual_seed(args.seed)
    x_train, y_train = make_series(args.n_train, args.min_len, args.max_len, gen)
    x_test, y_test = make_series(args.n_test, args.min_len, args.max_len, gen)
    n_steps = sum(len(x) for x in x_train)
    print(f"{args.n_train} training and {args.n_test} held-out series of {args.min_len:,} to "
          f"{args.max_len:,} steps ({n_steps:,} training steps in all); "
          f"classes {', '.join(CLASSES)} (chance {100 / len(CLASSES):.0f}%)")

    model = Classifier(args.hidden, args.layers, args.max_len, args.seed)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    base = vlrnn.memory.rss_mb()
    print(f"LSTM {args.layers}x{args.hidden}, block_len {args.block_len}, "
          f"batch {args.batch_size}\n")
    longest = None
    t_train = 0.0
    for epoch in range(args.epochs):
        t0 = time.perf_counter()
        total, n = 0.0, 0
        for x, y in batches(x_train, y_train, args.batch_size, epoch, args.seed):
            opt.zero_grad(set_to_none=True)
            loss, _ = model.loss_and_logits(x, y, args.block_len)
            loss.backward()                     # exact gradient through every step
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            total, n = total + float(loss.detach()) * len(y), n + len(y)
            if longest is None or len(x.batch_sizes) > len(longest.batch_sizes):
                longest = x
        seconds = time.perf_counter() - t0
        t_train += seconds
        acc = evaluate(model, x_test, y_test, 64, args.block_len)
        print(f"epoch {epoch + 1}: train loss {total / n:.3f}  held-out accuracy "
              f"{100 * acc:5.1f}%  ({seconds:.0f} s, {n_steps / seconds:,.0f} steps/s)",
              flush=True)
    peak = vlrnn.memory.peak_rss_mb()

    with torch.no_grad():
        pred = []
        for x, y in batches(x_test, y_test, 64, 0, 0, shuffle=False):
            pred.append((model.loss_and_logits(x, y, args.block_len)[1].argmax(-1), y))
    # per-class accuracy on the held-out series
    guess = torch.cat([g for g, _ in pred])
    truth = torch.cat([t for _, t in pred])
    per_class = ", ".join(f"{name} {100 * float((guess[truth == k] == k).float().mean()):.0f}%"
                          for k, name in enumerate(CLASSES))
    plain = plain_bptt_mb(model, longest)
    T_long, B_long = len(longest.batch_sizes), int(longest.batch_sizes[0])
    print(f"\nheld-out accuracy {100 * acc:.1f}% ({per_class}); training took {t_train:.0f} s")
    print(f"memory: peak RSS {peak:,.0f} MB, {peak - base:,.0f} MB above the process before "
          f"training; plain BPTT would need {plain:,.0f} MB for the longest "
          f"batch alone ({B_long} series, {T_long:,} steps), measured on its first steps "
          "and extended to all of them")
    print(f"RESULT held-out accuracy {100 * acc:.1f}% (chance {100 / len(CLASSES):.0f}%), "
          f"peak RSS {peak:,.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
