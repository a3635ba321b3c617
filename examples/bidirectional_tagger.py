"""A bidirectional tagger over whole standard-library files: every character's token class.

The task of ``step_classification.py`` (whose data functions this script imports): each
``.py`` file of the standard library is one sequence, one step per character, and the
label of a step is the Python token class of its character (``name``, ``keyword``,
``op``, ``number``, ``string``, ``comment``, ``space``); a step's features describe only
that character. Whether an ``x`` is part of a name, a string or a comment depends on
what came before it, and often also on what comes after (a closing quote, a ``(`` after
a name), so a tagger that reads the file in both directions should do better than one
that reads it forwards only.

A bidirectional LSTM's output at step t depends on every step of the file, so a
per-character loss on it couples the whole sequence: ``vlrnn.block_loss`` cannot take
it; ``vlrnn.Blockwise`` can, by wrapping the LSTM::

    rnn = vlrnn.Blockwise(nn.LSTM(15, 32, bidirectional=True), block_len=256)
    y, _ = rnn(x_packed)                         # as nn.LSTM: packed (N, 64)
    loss = F.cross_entropy(head(y.data), labels_packed.data)
    loss.backward()                              # exact, block by block (reverse pass too)

Two taggers are trained the same way (Blockwise, Adam, the same batches): the
bidirectional LSTM and a unidirectional LSTM with about the same number of parameters.
Baselines on the same held-out files: the majority class and a context-free rule (each
character's most frequent class in the training files). At the end the script measures
the peak memory of one training step on the largest standard-library files of at most
``--memory-max-kb`` (whole, one batch), through Blockwise and through the plain
bidirectional ``nn.LSTM`` it wraps (same weights, same loss).

    python examples/bidirectional_tagger.py           # the README figures (~8 min)
    python examples/bidirectional_tagger.py --quick   # smoke run, a few seconds
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import List, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_sequence

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from step_classification import FEATURES, load_files, pick  # noqa: E402

import vlrnn  # noqa: E402
from vlrnn.cli.demo import split_files, stdlib_files  # noqa: E402
from vlrnn.memory import peak_rss_mb, release_free_memory, reset_peak_rss  # noqa: E402

CLASSES = ["space", "name", "keyword", "op", "number", "string", "comment"]


def lstm_params(n_in: int, hidden: int, directions: int) -> int:
    """Parameter count of a one-layer ``nn.LSTM`` (both bias vectors)."""
    return directions * 4 * hidden * (n_in + hidden + 2)


def matched_hidden(n_in: int, hidden: int) -> int:
    """Hidden size of a unidirectional LSTM with about the parameters of a bidirectional
    one of ``hidden`` per direction."""
    target = lstm_params(n_in, hidden, 2)
    return min(range(hidden, 4 * hidden), key=lambda h: abs(lstm_params(n_in, h, 1) - target))


class Tagger(nn.Module):
    """Features ``(T, 15)`` per file, packed -> LSTM (run by ``Blockwise``) -> linear head.
    ``forward`` takes a ``PackedSequence`` and returns logits ``(N, 7)`` in the packed
    order of its ``.data``."""

    def __init__(self, hidden: int, bidirectional: bool, block_len: int):
        super().__init__()
        lstm = nn.LSTM(len(FEATURES), hidden, bidirectional=bidirectional)
        self.rnn = vlrnn.Blockwise(lstm, block_len=block_len)
        self.head = nn.Linear(hidden * (2 if bidirectional else 1), len(CLASSES))

    def forward(self, x) -> torch.Tensor:
        y, _ = self.rnn(x)
        return self.head(y.data)


def to_tensors(xs: List[np.ndarray], ys: List[np.ndarray]) -> list:
    """(features float32 (T, 15), class ids int64 (T,)) per file."""
    index = {c: i for i, c in enumerate(CLASSES)}
    return [(torch.tensor(x, dtype=torch.float32),
             torch.tensor([index[c] for c in y], dtype=torch.long)) for x, y in zip(xs, ys)]


def batches(items: list, size: int, gen, shuffle: bool) -> List[list]:
    """Batches of files of similar length, in shuffled order when ``shuffle``."""
    order = sorted(range(len(items)), key=lambda i: len(items[i][0]))
    out = [[items[i] for i in order[s:s + size]] for s in range(0, len(order), size)]
    if shuffle:
        out = [out[i] for i in torch.randperm(len(out), generator=gen).tolist()]
    return out


def step_loss(model: nn.Module, batch: list) -> torch.Tensor:
    """Mean cross-entropy over every character of the ragged batch (packed, unsorted)."""
    x = pack_sequence([f for f, _ in batch], enforce_sorted=False)
    labels = pack_sequence([lab for _, lab in batch], enforce_sorted=False)
    return F.cross_entropy(model(x), labels.data)


def accuracy(model: nn.Module, items: list) -> float:
    right = total = 0
    with torch.no_grad():           # Blockwise streams the blocks under no_grad
        for batch in batches(items, 8, None, shuffle=False):
            x = pack_sequence([f for f, _ in batch], enforce_sorted=False)
            labels = pack_sequence([lab for _, lab in batch], enforce_sorted=False).data
            right += int((model(x).argmax(-1) == labels).sum())
            total += len(labels)
    return right / total


def train(name: str, model: nn.Module, train_set: list, test_set: list, args) -> dict:
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)    # the same batches for both taggers
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        total = n = 0
        for batch in batches(train_set, args.batch, gen, shuffle=True):
            opt.zero_grad()
            loss = step_loss(model, batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            chars = sum(len(lab) for _, lab in batch)
            total, n = total + loss.item() * chars, n + chars
        acc = accuracy(model, test_set)
        print(f"  {name:14s} epoch {epoch + 1}: train loss {total / n:.3f}, "
              f"held-out accuracy {acc:.3f}", flush=True)
    return dict(acc=acc, seconds=time.perf_counter() - t0)


def context_free_accuracy(tr_x, tr_y, te_x, te_y) -> float:
    """Each character gets its most frequent class in the training files."""
    def codes(x):
        return (x[:, :7] @ (1 << np.arange(7))).astype(int)
    by_char = defaultdict(Counter)
    for x, y in zip(tr_x, tr_y):
        for code, label in zip(codes(x), y):
            by_char[code][label] += 1
    top = Counter(np.concatenate(tr_y).tolist()).most_common(1)[0][0]
    pred = np.concatenate([[by_char[c].most_common(1)[0][0] if by_char[c] else top
                            for c in codes(x)] for x in te_x])
    return float(np.mean(pred == np.concatenate(te_y)))


def step_memory(model: Tagger, batch: list, blockwise: bool) -> Tuple[float, float]:
    """Peak RSS above the current RSS (MB) and seconds of one training step on ``batch``,
    through Blockwise or through the plain nn.LSTM it wraps (same weights, same loss)."""
    saved = model.rnn
    model.rnn = saved if blockwise else saved.module
    release_free_memory()
    reset_peak_rss()
    base, t0 = peak_rss_mb(), time.perf_counter()
    step_loss(model, batch).backward()
    peak, seconds = peak_rss_mb() - base, time.perf_counter() - t0
    model.rnn = saved
    model.zero_grad(set_to_none=True)
    return peak, seconds


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: a few small files")
    p.add_argument("--n-train", type=int, default=60)
    p.add_argument("--n-test", type=int, default=20)
    p.add_argument("--max-kb", type=float, default=6.0, help="largest training/test file, KB")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--hidden", type=int, default=32, help="per direction of the BiLSTM")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--block-len", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--memory-files", type=int, default=4,
                   help="the memory comparison runs one step on this many largest files")
    p.add_argument("--memory-max-kb", type=float, default=6.0,
                   help="... among the files of at most this many KB")
    a = p.parse_args(argv)
    if a.quick:
        a.n_train, a.n_test, a.max_kb, a.epochs = 6, 3, 1.5, 1
        a.memory_files, a.memory_max_kb = 2, 4.0
    torch.set_num_threads(1)

    train_paths, test_paths = split_files(stdlib_files(), val_fraction=0.2)
    tr_names, tr_x, tr_y = load_files(pick(train_paths, a.n_train, 0.5, a.max_kb))
    te_names, te_x, te_y = load_files(pick(test_paths, a.n_test, 0.5, a.max_kb))
    lengths = [len(x) for x in tr_x + te_x]
    print(f"standard library: {len(tr_x)} training and {len(te_x)} test files, "
          f"{min(lengths):,}-{max(lengths):,} characters ({sum(lengths):,} in all)")
    counts = Counter(np.concatenate(tr_y).tolist())
    top = counts.most_common(1)[0][0]
    majority = float(np.mean(np.concatenate(te_y) == top))
    rule = context_free_accuracy(tr_x, tr_y, te_x, te_y)
    train_set, test_set = to_tensors(tr_x, tr_y), to_tensors(te_x, te_y)

    uni_hidden = matched_hidden(len(FEATURES), a.hidden)
    specs = [("bidirectional", a.hidden, True), ("unidirectional", uni_hidden, False)]
    results, models = {}, {}
    for name, hidden, bi in specs:
        torch.manual_seed(a.seed)
        model = Tagger(hidden, bi, a.block_len)
        n_params = sum(p.numel() for p in model.parameters())
        print(f"{name} LSTM, hidden {hidden}{' per direction' if bi else ''}, "
              f"{n_params:,} parameters; Blockwise(block_len={a.block_len}), Adam lr {a.lr}, "
              f"{a.epochs} epochs")
        results[name] = train(name, model, train_set, test_set, a)
        models[name] = model

    largest = sorted((q for q in stdlib_files() if q.stat().st_size <= a.memory_max_kb * 1024),
                     key=lambda q: q.stat().st_size)
    _, big_x, big_y = load_files(largest[-3 * a.memory_files:])
    big = to_tensors(big_x, big_y)[-a.memory_files:]
    n_chars = sum(len(lab) for _, lab in big)
    model = models["bidirectional"]
    mem_block, sec_block = step_memory(model, big, blockwise=True)
    mem_plain, sec_plain = step_memory(model, big, blockwise=False)
    print(f"\nOne training step of the bidirectional tagger on the {len(big)} largest files "
          f"({n_chars:,} characters, longest {max(len(lab) for _, lab in big):,}): peak memory "
          f"{mem_block:.0f} MB with Blockwise, {mem_plain:.0f} MB plain nn.LSTM "
          f"({mem_block / max(mem_plain, 1e-9):.2f}x); the step took {sec_block:.1f} s with "
          f"Blockwise, {sec_plain:.1f} s plain")

    print()
    print("| tagger | held-out accuracy | train time (s) |")
    print("|---|---:|---:|")
    print(f"| majority class ({top}) | {majority:.3f} | |")
    print(f"| context-free rule | {rule:.3f} | |")
    for name, r in results.items():
        print(f"| {name} LSTM | {r['acc']:.3f} | {r['seconds']:.0f} |")
    print(f"RESULT bidirectional accuracy {results['bidirectional']['acc']:.3f}, "
          f"unidirectional {results['unidirectional']['acc']:.3f}, majority {majority:.3f}, "
          f"context-free {rule:.3f}; step memory Blockwise {mem_block:.0f} MB, "
          f"plain {mem_plain:.0f} MB (seed {a.seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
