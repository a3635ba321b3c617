"""Attention pooling over whole standard-library files: a loss that couples every byte.

Task: does a Python standard-library file contain an ``@`` anywhere (a decorator, mostly;
39% of the files of 1-6 KB do)? The needle may be at any of thousands of bytes, so the
natural model reads the whole file with a bidirectional LSTM and pools its outputs with
softmax attention over all steps before one classifier. That loss is
not a sum of per-step terms, so ``vlrnn.block_loss`` cannot take it;
``vlrnn.Blockwise`` can, by changing one line::

    rnn = vlrnn.Blockwise(nn.LSTM(16, 32, bidirectional=True), block_len=512)
    y, (h, c) = rnn(x_packed)                  # as nn.LSTM, same outputs
    loss = cross_entropy(head(attention_pool(y)), labels)
    loss.backward()                            # exact gradient, block by block

Two read-outs of the same Blockwise BiLSTM are trained, from the same initial weights:

- ``attention``: softmax attention over every output step (the coupled loss);
- ``final``: the classifier sees only the final states ``h_n`` of both directions.

At the end the script measures the peak memory of one training step on the largest
standard-library files (whole, as one batch) through Blockwise and through the plain
``nn.LSTM`` it wraps (the same model, weights and loss).

Run (about 15 minutes on a busy 2-core machine; ``--quick`` is a smoke run on a few small files)::

    python examples/attention_pooling.py
    python examples/attention_pooling.py --epochs 6 --seed 1
"""
from __future__ import annotations

import argparse
import sys
import time
import zlib
from pathlib import Path
from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_sequence, pad_packed_sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import vlrnn  # noqa: E402
from vlrnn.cli.demo import read_bytes, stdlib_files  # noqa: E402
from vlrnn.memory import peak_rss_mb, release_free_memory, reset_peak_rss  # noqa: E402

NEEDLE = b"@"


# -- data --------------------------------------------------------------------------------------
def load(min_bytes: int, max_bytes: int, limit: int) -> Tuple[list, list]:
    """(train, val): lists of (bytes tensor (T,), label) for the stdlib files in the size
    range; a fixed 20% of them (by a hash of the path) held out."""
    files = [p for p in stdlib_files() if min_bytes <= p.stat().st_size <= max_bytes]
    files = files[:limit] if limit else files
    train, val = [], []
    for p in files:
        item = (read_bytes(p), int(NEEDLE in p.read_bytes()))
        (val if zlib.crc32(str(p).encode()) % 5 == 0 else train).append(item)
    return train, val


def batches(items: list, size: int, gen: torch.Generator, shuffle: bool) -> List[list]:
    """Batches of files of similar length (less padding in the attention), shuffled."""
    order = sorted(range(len(items)), key=lambda i: len(items[i][0]))
    out = [[items[i] for i in order[s:s + size]] for s in range(0, len(order), size)]
    if shuffle:
        out = [out[i] for i in torch.randperm(len(out), generator=gen).tolist()]
    return out


# -- model -------------------------------------------------------------------------------------
class FileClassifier(nn.Module):
    """Bytes -> embedding -> bidirectional LSTM (run by ``Blockwise``) -> attention
    pooling (or the final states) -> 2 classes. ``forward`` takes a ``PackedSequence``
    of byte ids (any batch order) and returns logits ``(B, 2)`` in that order."""

    def __init__(self, readout: str, hidden: int = 32, embed: int = 16, block_len: int = 512,
                 blockwise: bool = True):
        super().__init__()
        self.readout = readout
        self.embed = nn.Embedding(256, embed)
        lstm = nn.LSTM(embed, hidden, bidirectional=True)
        self.rnn = vlrnn.Blockwise(lstm, block_len=block_len) if blockwise else lstm
        self.score = nn.Linear(2 * hidden, 1)
        self.head = nn.Linear(2 * hidden, 2)

    def forward(self, x: PackedSequence) -> torch.Tensor:
        emb = PackedSequence(self.embed(x.data), x.batch_sizes, x.sorted_indices,
                             x.unsorted_indices)
        y, (h, _) = self.rnn(emb)
        if self.readout == "final":
            return self.head(torch.cat([h[0], h[1]], -1))
        seq, lengths = pad_packed_sequence(y)              # (T, B, 2H), input order
        mask = torch.arange(seq.shape[0])[:, None] < lengths[None, :]
        scores = self.score(seq).squeeze(-1).masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=0).unsqueeze(-1)   # over every step of a file
        return self.head((weights * seq).sum(0))


def step(model: FileClassifier, batch: list) -> torch.Tensor:
    x = pack_sequence([b for b, _ in batch], enforce_sorted=False)
    labels = torch.tensor([lab for _, lab in batch])
    return F.cross_entropy(model(x), labels)


def accuracy(model: FileClassifier, items: list) -> float:
    model.eval()
    right = 0
    with torch.no_grad():  # Blockwise streams the blocks under no_grad
        for batch in batches(items, 16, None, shuffle=False):
            x = pack_sequence([b for b, _ in batch], enforce_sorted=False)
            pred = model(x).argmax(-1)
            right += int((pred == torch.tensor([lab for _, lab in batch])).sum())
    model.train()
    return right / len(items)


def train(readout: str, train_set: list, val_set: list, args) -> dict:
    torch.manual_seed(args.seed)  # the same initial weights for both read-outs
    model = FileClassifier(readout, hidden=args.hidden, block_len=args.block_len)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        total = 0.0
        for batch in batches(train_set, args.batch, gen, shuffle=True):
            opt.zero_grad()
            loss = step(model, batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            total += loss.item() * len(batch)
        acc = accuracy(model, val_set)
        print(f"  {readout:9s} epoch {epoch + 1}: train loss {total / len(train_set):.3f}, "
              f"held-out accuracy {acc:.3f}", flush=True)
    return dict(model=model, acc=acc, seconds=time.perf_counter() - t0)


def step_memory(model: FileClassifier, batch: list, blockwise: bool) -> float:
    """Peak RSS above the current RSS (MB) of one training step on ``batch``, through
    Blockwise or through the plain nn.LSTM it wraps (same weights, same loss)."""
    lstm = model.rnn.module if isinstance(model.rnn, vlrnn.Blockwise) else model.rnn
    rnn = vlrnn.Blockwise(lstm, block_len=model.rnn.block_len) if blockwise else lstm
    saved, model.rnn = model.rnn, rnn
    release_free_memory()
    reset_peak_rss()
    base = peak_rss_mb()
    step(model, batch).backward()
    peak = peak_rss_mb() - base
    model.rnn = saved
    model.zero_grad(set_to_none=True)
    return peak


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: a few small files")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--block-len", type=int, default=512)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--max-bytes", type=int, default=6000)
    p.add_argument("--memory-files", type=int, default=4,
                   help="the memory comparison runs one step on this many largest files")
    p.add_argument("--memory-max-bytes", type=int, default=6000,
                   help="... among the files of at most this many bytes")
    p.add_argument("--memory-only", action="store_true",
                   help="skip training: only the memory comparison (untrained weights)")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    if a.quick:
        a.epochs, a.max_bytes, a.memory_max_bytes = 1, 2000, 5000
    train_set, val_set = load(1000, a.max_bytes, 24 if a.quick else 0)
    n_pos = sum(lab for _, lab in val_set)
    majority = max(n_pos, len(val_set) - n_pos) / len(val_set)
    longest = max(len(b) for b, _ in train_set + val_set)
    print(f"{len(train_set)} training and {len(val_set)} held-out standard-library files of "
          f"1,000-{a.max_bytes:,} bytes (longest {longest:,}); {NEEDLE.decode()!r} in "
          f"{n_pos / len(val_set):.0%} of the held-out ones")
    results = {}
    for readout in () if a.memory_only else ("attention", "final"):
        results[readout] = train(readout, train_set, val_set, a)
    largest = sorted(stdlib_files(), key=lambda p: p.stat().st_size)
    largest = [p for p in largest if p.stat().st_size <= a.memory_max_bytes][-a.memory_files:]
    biggest = [(read_bytes(p), 0) for p in largest]
    n_bytes = sum(len(b) for b, _ in biggest)
    model = results["attention"]["model"] if results else FileClassifier(
        "attention", hidden=a.hidden, block_len=a.block_len)
    mem_block = step_memory(model, biggest, blockwise=True)
    mem_plain = step_memory(model, biggest, blockwise=False)
    print(f"\nOne training step on the {len(biggest)} largest files ({n_bytes:,} bytes, "
          f"longest {max(len(b) for b, _ in biggest):,}): peak memory {mem_block:.0f} MB "
          f"with Blockwise, {mem_plain:.0f} MB plain ({mem_block / max(mem_plain, 1e-9):.2f}x)")
    if not results:
        return 0
    print()
    print("| read-out | held-out accuracy | train time (s) |")
    print("|---|---:|---:|")
    print(f"| majority class | {majority:.3f} | |")
    for readout, r in results.items():
        print(f"| {readout} | {r['acc']:.3f} | {r['seconds']:.0f} |")
    print(f"RESULT attention accuracy {results['attention']['acc']:.3f}, final-state "
          f"{results['final']['acc']:.3f}, majority {majority:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
