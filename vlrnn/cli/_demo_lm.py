"""The language model of ``vlrnn demo``: bytes of Python's own standard library.

Every ``.py`` file of the installed standard library is one sequence of bytes (from a
few dozen to several hundred thousand long), so the corpus is real, ragged, long and
always available offline. Each file is read whole and trained with the exact BPTT
gradient over all of it, block by block, in memory that does not grow with its length.

What makes it learn in a few minutes on a CPU is the number of optimizer steps: files
are batched by length under a byte budget (short files many to a batch, a batch costs
about the same whatever its files), so the run makes hundreds of steps, not dozens. The
longest file is trained on too, once, as one sequence with the exact gradient.
"""
from __future__ import annotations

import math
import sys
import sysconfig
import time
import zlib
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_sequence

from ..engine._bptt import block_loss
from ..models import StackedRNN

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
    held = set(val)
    return [p for p in files if p not in held], val


def read_bytes(path: Path) -> torch.Tensor:
    """A file's bytes as an int64 tensor ``(T,)``."""
    return torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8).long()


def batch_of(seqs: Sequence[torch.Tensor], device) -> Tuple[PackedSequence, PackedSequence]:
    """Next-byte prediction: input bytes ``[:-1]``, targets ``[1:]``, packed."""
    x = pack_sequence([s[:-1] for s in seqs], enforce_sorted=False)
    y = pack_sequence([s[1:] for s in seqs], enforce_sorted=False)
    return x.to(device), y.to(device)


def length_batches(lengths: Sequence[int], max_bytes: int, max_files: int = 64
                   ) -> List[List[int]]:
    """Indices grouped by length: files sorted by length, cut into batches whose padded
    size (files x longest) stays within ``max_bytes`` (a file longer than that is a batch
    of its own)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: List[List[int]] = []
    cur: List[int] = []
    for i in order:
        if cur and (lengths[i] * (len(cur) + 1) > max_bytes or len(cur) >= max_files):
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches


def unigram_bits(train: Sequence[torch.Tensor], val: Sequence[torch.Tensor]) -> float:
    """Bits per byte of the held-out files under the training files' byte frequencies
    (add-one smoothed): what a model that ignores context scores."""
    counts = torch.bincount(torch.cat(list(train)), minlength=VOCAB).double() + 1
    logp = (counts / counts.sum()).log2()
    return float(-torch.cat([logp[v[1:]] for v in val]).mean())


# -- model -----------------------------------------------------------------------------------
class ByteLSTM(nn.Module):
    """Embedding -> LSTM -> linear head over the 256 byte values.

    Called as ``model(x, state) -> (logits, state)``: ``x`` a ``PackedSequence`` of byte
    ids (data ``(N,)``), ``logits`` a ``PackedSequence`` with data ``(N, 256)`` and the
    same batch order. The LSTM is a :class:`~vlrnn.models.StackedRNN` of ``nn.LSTMCell``
    (torch's fused kernel, run as dense calls over a ragged packed batch: several times
    faster than ``nn.LSTM``'s packed CPU kernel); ``state`` is one ``(h, c)`` per layer,
    each ``(B, H)``.
    """

    state_batch_dim = 0

    def __init__(self, hidden: int = 128, layers: int = 1, embed: int = 32):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, embed)
        self.rnn = StackedRNN(embed, hidden, num_layers=layers, cell="lstm")
        self.head = nn.Linear(hidden, VOCAB)

    def forward(self, x: PackedSequence, state=None):
        e = PackedSequence(self.embed(x.data), x.batch_sizes, x.sorted_indices, x.unsorted_indices)
        out, state = self.rnn(e, state)
        return PackedSequence(self.head(out.data), out.batch_sizes, out.sorted_indices,
                              out.unsorted_indices), state

    @torch.no_grad()
    def sample(self, prompt: bytes, n: int, temperature: float = 0.6,
               generator: Optional[torch.Generator] = None) -> bytes:
        """``n`` bytes continuing ``prompt``."""
        dev = self.head.weight.device
        logits, state = self(pack_sequence([torch.tensor(list(prompt), device=dev)]))
        last, out = logits.data[-1], []
        for _ in range(n):
            probs = torch.softmax(last / temperature, -1).cpu()
            nxt = int(torch.multinomial(probs, 1, generator=generator))
            out.append(nxt)
            logits, state = self(pack_sequence([torch.tensor([nxt], device=dev)]), state)
            last = logits.data[-1]
        return bytes(out)


def cross_entropy_rows(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(logits, target, reduction="none")


@torch.no_grad()
def evaluate_bits(model: nn.Module, seqs: Sequence[torch.Tensor], device, block_len: int,
                  max_bytes: int = 1 << 18) -> float:
    """Bits per byte over ``seqs`` (streamed block by block, batched by length)."""
    model.eval()
    total, rows = 0.0, 0
    for idx in length_batches([len(s) for s in seqs], max_bytes):
        x, y = batch_of([seqs[i] for i in idx], device)
        out = block_loss(model, cross_entropy_rows, x, y, block_len=block_len, reduction="sum")
        total += float(out.loss)
        rows += x.data.shape[0]
    model.train()
    return total / rows / math.log(2)


# -- training ----------------------------------------------------------------------------------
def train_lm(train: List[torch.Tensor], val: List[torch.Tensor], *, seconds: float,
             hidden: int = 128, block_len: int = 256, batch_bytes: int = 16_384,
             file_bytes: int = 8_192, lr: float = 5e-3, seed: int = 0, device="cpu",
             evals: int = 6, progress: bool = True,
             log: Callable[[str], None] = print) -> Dict[str, object]:
    """Train a :class:`ByteLSTM` for about ``seconds``: batches of files up to
    ``file_bytes`` long (``batch_bytes`` padded bytes each, in random order, epoch after
    epoch), and once, at 40% of the time, the longest file of ``train`` alone. Adam with a
    cosine decay of the learning rate over the time budget; gradients clipped at 1.

    Returns ``curve`` (``[(seconds, held-out bits/byte)]``, ``evals`` points on a fixed
    subset of ``val``), ``steps``, ``bytes``, ``longest`` (its length), ``model``.
    """
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    model = ByteLSTM(hidden).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    short = [i for i in range(len(train)) if len(train[i]) <= file_bytes] or list(range(len(train)))
    batches = [[short[j] for j in b] for b in length_batches([len(train[i]) for i in short],
                                                             batch_bytes)]
    longest = max(range(len(train)), key=lambda i: len(train[i]))
    probe = sorted(val, key=len)[: max(1, len(val) // 2)]   # the curve's held-out subset
    gen = torch.Generator().manual_seed(seed)
    curve: List[Tuple[float, float]] = [(0.0, evaluate_bits(model, probe, device, block_len))]
    next_eval = seconds / max(1, evals - 1)
    steps, seen, did_longest = 0, 0, False
    bar = tqdm(total=round(seconds), unit="s", desc="language model", file=sys.stdout,
               disable=None if progress else True, bar_format="{l_bar}{bar}| {n:.0f}/{total} s "
               "{postfix}")
    t0 = time.perf_counter()
    elapsed = 0.0
    queue: List[List[int]] = []
    while elapsed < seconds or not did_longest:
        # the longest file once, at 40% of the time (or last, when steps ran long)
        if not did_longest and (elapsed >= 0.4 * seconds or elapsed >= seconds):
            idx, did_longest = [longest], True
        else:
            if not queue:
                queue = [batches[j] for j in torch.randperm(len(batches), generator=gen)]
            idx = queue.pop()
        for g in opt.param_groups:  # cosine decay over the time budget, to a tenth
            g["lr"] = lr * (0.1 + 0.45 * (1 + math.cos(math.pi * min(elapsed / seconds, 1))))
        x, y = batch_of([train[i] for i in idx], device)
        out = block_loss(model, cross_entropy_rows, x, y, block_len=block_len)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        steps += 1
        seen += x.data.shape[0]
        elapsed = time.perf_counter() - t0
        bar.n = min(elapsed, seconds)
        bar.set_postfix_str(f"step {steps}, loss {float(out.loss.detach()) / math.log(2):.2f} "
                            "bits/byte", refresh=True)
        if len(idx) == 1 and idx[0] == longest:
            log(f"  trained on the longest file, {len(train[longest]):,} bytes as one sequence "
                f"({out.n_blocks} blocks), with the exact gradient")
        if elapsed >= next_eval or elapsed >= seconds:
            curve.append((elapsed, evaluate_bits(model, probe, device, block_len)))
            next_eval += seconds / max(1, evals - 1)
            t0 = time.perf_counter() - elapsed  # evaluation time is not training time
    bar.close()
    return {"curve": curve, "steps": steps, "bytes": seen, "longest": len(train[longest]),
            "did_longest": did_longest, "model": model}
