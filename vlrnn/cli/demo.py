"""``vlrnn demo``: a character-level language model on Python's own standard library.

Every ``.py`` file of the installed standard library is one sequence of bytes (from a
few hundred to several hundred thousand long), so the corpus is real, ragged, long and
always available offline. The model reads each file whole and is trained with the
exact BPTT gradient over the entire file, block by block; memory stays flat however
long the file. At the end the demo prints the peak memory next to what plain BPTT
would have kept for the largest batch it trained on.
"""
from __future__ import annotations

import argparse
import math
import sys
import sysconfig
import time
import zlib
from pathlib import Path
from typing import List, Optional, Tuple

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_sequence

from ..engine.bptt import block_loss
from ..data import LengthBucketSampler
from ..memory import peak_rss_mb, plain_bptt_mb

VOCAB = 256  # bytes
SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}


# -- corpus --------------------------------------------------------------------------------
def stdlib_files(root: Optional[Path] = None) -> List[Path]:
    """The standard library's ``.py`` files (tests and installed packages left out),
    sorted by path; those shorter than 2 bytes are skipped (nothing to predict)."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    files = [p for p in root.rglob("*.py")
             if not SKIP_DIRS.intersection(p.relative_to(root).parts) and p.stat().st_size >= 2]
    if not files:
        raise FileNotFoundError(f"no .py files found under {root}")
    return sorted(files)


def split_files(files: List[Path], val_fraction: float = 0.05) -> Tuple[List[Path], List[Path]]:
    """A fixed train/validation split by a hash of each file's name (stable across runs)."""
    val = [p for p in files if zlib.crc32(str(p.name).encode()) % 1000 < val_fraction * 1000]
    train = [p for p in files if p not in set(val)]
    return train, val


def read_bytes(path: Path) -> torch.Tensor:
    """A file's bytes as an int64 tensor ``(T,)``."""
    return torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8).long()


def batch_of(seqs: List[torch.Tensor], device) -> Tuple[PackedSequence, PackedSequence]:
    """Next-byte prediction: input bytes ``[:-1]``, targets ``[1:]``, packed."""
    x = pack_sequence([s[:-1] for s in seqs], enforce_sorted=False)
    y = pack_sequence([s[1:] for s in seqs], enforce_sorted=False)
    return x.to(device), y.to(device)


# -- model -----------------------------------------------------------------------------------
class ByteLSTM(nn.Module):
    """Embedding -> ``nn.LSTM`` -> linear head over the 256 byte values.

    Called as ``model(x, state) -> (logits, state)``: ``x`` a ``PackedSequence`` of byte
    ids (data ``(N,)``), ``logits`` a ``PackedSequence`` with data ``(N, 256)`` and the
    same batch order; ``state`` is ``nn.LSTM``'s ``(h, c)``, each ``(layers, B, H)``.
    """

    state_batch_dim = 1

    def __init__(self, hidden: int = 128, layers: int = 1, embed: int = 32):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, embed)
        self.rnn = nn.LSTM(embed, hidden, num_layers=layers)
        self.head = nn.Linear(hidden, VOCAB)

    def forward(self, x: PackedSequence, state=None):
        e = PackedSequence(self.embed(x.data), x.batch_sizes, x.sorted_indices, x.unsorted_indices)
        out, state = self.rnn(e, state)
        return PackedSequence(self.head(out.data), out.batch_sizes, out.sorted_indices,
                              out.unsorted_indices), state

    @torch.no_grad()
    def sample(self, prompt: bytes, n: int, temperature: float = 0.7,
               generator: Optional[torch.Generator] = None) -> bytes:
        """``n`` bytes continuing ``prompt``."""
        dev = self.head.weight.device
        ids = torch.tensor(list(prompt), device=dev)
        logits, state = self(pack_sequence([ids]))
        out = []
        last = logits.data[-1]
        for _ in range(n):
            probs = torch.softmax(last / temperature, -1).cpu()
            nxt = int(torch.multinomial(probs, 1, generator=generator))
            out.append(nxt)
            logits, state = self(pack_sequence([torch.tensor([nxt], device=dev)]), state)
            last = logits.data[-1]
        return bytes(out)


def cross_entropy_rows(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(logits, target, reduction="none")


# -- measuring ---------------------------------------------------------------------------------
def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return peak_rss_mb()


@torch.no_grad()
def evaluate(model: nn.Module, seqs: List[torch.Tensor], device, block_len: int,
             batch_size: int) -> float:
    """Mean cross-entropy (nats per byte) over ``seqs``, streamed block by block."""
    model.eval()
    total, rows = 0.0, 0
    for i in range(0, len(seqs), batch_size):
        x, y = batch_of(seqs[i:i + batch_size], device)
        out = block_loss(model, cross_entropy_rows, x, y, block_len=block_len, reduction="sum")
        total += float(out.loss)
        rows += x.data.shape[0]
    model.train()
    return total / rows


# -- the demo ----------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--minutes", type=float, default=3.0,
                   help="training time budget (default 3; the run stops after the batch "
                        "that crosses it)")
    p.add_argument("--batch-size", type=int, default=16, help="files per batch (default 16)")
    p.add_argument("--max-bytes", type=int, default=200_000,
                   help="leave out files longer than this (default 200,000; 0 keeps all, "
                        "up to the 757 KB pydoc topics file, for a longer run)")
    p.add_argument("--hidden-size", type=int, default=128, help="LSTM hidden size (default 128)")
    p.add_argument("--num-layers", type=int, default=1, help="LSTM layers (default 1)")
    p.add_argument("--block-len", type=int, default=256, help="time steps per block (default 256)")
    p.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate (default 3e-3)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--stdlib", default=None, help="folder of .py files to use instead of "
                   "the installed standard library")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    torch.manual_seed(args.seed)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.batch_size < 1 or args.hidden_size < 1 or args.num_layers < 1 or args.block_len < 1:
        raise ValueError("--batch-size, --hidden-size, --num-layers and --block-len must be >= 1")
    files = stdlib_files(args.stdlib)
    if args.max_bytes:
        files = [p for p in files if p.stat().st_size <= args.max_bytes] or files
    train_files, val_files = split_files(files)
    if not val_files:  # a tiny custom folder: hold out one file
        train_files, val_files = files[:-1] or files, files[-1:]
    train = [read_bytes(p) for p in train_files]
    val = [read_bytes(p) for p in val_files]
    longest = max(range(len(train)), key=lambda i: len(train[i]))
    print(f"corpus: {len(files)} files of Python's standard library "
          f"({sum(map(len, train)) / 1e6:.1f} M bytes to train on, {len(val)} files held out); "
          f"lengths {min(map(len, train)):,} to {len(train[longest]):,} "
          f"({train_files[longest].name})")
    model = ByteLSTM(args.hidden_size, args.num_layers).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    print(f"model: byte embedding -> {args.num_layers}-layer LSTM({args.hidden_size}) -> 256 "
          f"logits; exact BPTT over whole files in blocks of {args.block_len}; device {device}")

    # Batches: files of similar length together. The batch of the longest files runs
    # once 40% of the time budget has passed, so the loss has visibly started falling
    # and the demo always shows a full pass over the longest files in flat memory.
    sampler = LengthBucketSampler([len(s) for s in train], args.batch_size, seed=args.seed)
    batches = sampler.batches(0)
    top = max(range(len(batches)), key=lambda i: sum(len(train[j]) for j in batches[i]))
    longest_batch = batches.pop(top)

    val_start = evaluate(model, val, device, args.block_len, args.batch_size)
    print(f"validation loss before training: {val_start:.3f} nats/byte "
          f"(uniform guess: {math.log(VOCAB):.3f})")

    budget = args.minutes * 60
    t0 = time.perf_counter()
    seen_rows, biggest, big_batch, steps, epoch = 0, (0, 0, 0), None, 0, 0
    show = not args.no_progress
    bar = tqdm(total=sum(len(s) - 1 for s in train), unit="B", unit_scale=True,
               desc="training", disable=None if show else True, file=sys.stdout)
    queue = iter(batches)
    elapsed = 0.0
    while elapsed <= budget:
        if longest_batch is not None and elapsed >= 0.4 * budget:
            idx, longest_batch = longest_batch, None
        else:
            idx = next(queue, None)
            if idx is None:  # a new epoch (the longest files are in it as usual)
                epoch += 1
                queue = iter(sampler.batches(epoch))
                bar.reset()
                continue
        x, y = batch_of([train[i] for i in idx], device)
        out = block_loss(model, cross_entropy_rows, x, y, block_len=args.block_len)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        rows, n_steps = x.data.shape[0], len(x.batch_sizes)
        if rows > biggest[0]:
            biggest = (rows, n_steps, len(idx))
            big_batch = (x, y)
        seen_rows += rows
        steps += 1
        elapsed = time.perf_counter() - t0
        bar.update(rows)
        loss = float(out.loss.detach())
        bar.set_postfix(loss=f"{loss:.3f}", T=n_steps, blocks=out.n_blocks)
        if bar.disable and (steps % 10 == 0 or steps == 1 or n_steps > 50_000):
            # no progress bar (not a terminal): log lines instead
            print(f"  step {steps:4d}  loss {loss:.3f}  {seen_rows / elapsed:,.0f} bytes/s  "
                  f"longest file in batch {n_steps:,} bytes ({out.n_blocks} blocks)", flush=True)
    bar.close()
    elapsed = time.perf_counter() - t0
    val_end = evaluate(model, val, device, args.block_len, args.batch_size)
    peak = peak_memory_mb(device)  # before plain_bptt_mb, which resets the peak counter
    plain_gb = (plain_bptt_mb(model.cpu(), cross_entropy_rows, *(b.cpu() for b in big_batch))
                / 1024)
    model.to(device)
    print(f"\ntrained {steps} steps over {seen_rows / 1e6:.1f} M bytes in {elapsed:.0f} s "
          f"({seen_rows / elapsed:,.0f} bytes/s)")
    print(f"validation loss: {val_start:.3f} -> {val_end:.3f} nats/byte "
          f"({val_end / math.log(2):.2f} bits/byte)")
    print(f"largest batch: {biggest[2]} files, {biggest[0]:,} bytes, longest {biggest[1]:,} steps, "
          f"exact gradient through all of it")
    mem_kind = "GPU memory" if device.type == "cuda" else "peak RSS"
    print(f"memory: {mem_kind} {peak:,.0f} MB for the whole run; plain BPTT would have needed "
          f"about {plain_gb:,.1f} GB for the backward of that batch alone (plain BPTT run on "
          f"its first steps, measured and extended to all {biggest[0]:,} bytes)")
    gen = torch.Generator().manual_seed(args.seed)
    text = model.sample(b"def ", 240, generator=gen).decode("utf-8", "replace")
    print("\nsample from the model (prompt 'def '):\n" + "-" * 60 + "\ndef " + text + "\n" + "-" * 60)
    return 0
