"""Accuracy at equal time: the scan models against the LSTM on the project's own tasks.

Each model is trained for the same budget of this process's CPU seconds (one torch
thread: on an otherwise idle machine, the same wall time; on a shared one, the time the
model itself ran), with the exact gradient through the block engine, then scored on
held-out data (evaluation is not counted in the budget):

* ``recall``: the task of ``examples/long_memory.py`` / ``vlrnn demo``
  (:mod:`vlrnn.cli.recall`): a cue (one of 4 classes) among the first 10 steps, then
  ``--delay`` steps of noise; a linear classifier on the model's output at the last step
  says which. Held-out accuracy on balanced classes (chance 25%).
* ``bytes``: next-byte prediction on Python's standard library (:mod:`vlrnn.cli._demo_lm`,
  the corpus of ``vlrnn demo``): embedding -> model -> linear head over 256 bytes, files
  of up to ``--file-bytes`` bytes batched by length; held-out bits per byte on the
  shorter half of the held-out files (the demo's curve subset).

The same options for every model (nothing tuned per model): Adam, gradients clipped at
1, the task's learning rate (recall ``1e-2``, bytes ``5e-3``, cosine-decayed over the
budget for bytes as in the demo). Initialisation for recall: the LSTM gets the task's
"chrono" gate biases (Tallec & Ollivier: time constants spread up to the delay), MinGRU
and MinLSTM the same time constants through their own gate biases; LRU and Mamba keep
their papers' initialisations (LRU ``|lam|`` in ``[0.9, 0.999]``, Mamba ``dt`` in
``[0.001, 0.1]``), which already hold memories for ~1,000 steps. For bytes every model
keeps its default initialisation, and the LSTM is the demo's (a ``StackedRNN`` of
``nn.LSTMCell``, faster than ``nn.LSTM`` on packed input).

    python benchmarks/scan_models_accuracy.py --task recall --seconds 90
    python benchmarks/scan_models_accuracy.py --task bytes --seconds 120
    python benchmarks/scan_models_accuracy.py --task recall --seconds 5 --delay 100 --quick
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import write_table  # noqa: E402

import vlrnn  # noqa: E402
from vlrnn.cli import _demo_lm as lm  # noqa: E402
from vlrnn.cli.recall import NOISE, VAL_SEED, K, chrono_init, make_batch  # noqa: E402
from vlrnn.models import LRU, Mamba, MinGRU, MinLSTM, StackedRNN  # noqa: E402

MODELS = ("LSTM", "MinGRU", "MinLSTM", "LRU", "Mamba")
# also accepted by --models: the LRU with half the complex state (hidden_size real numbers)
EXTRA = ("LRU-half",)
clock = time.process_time


def backbone(name: str, n_in: int, hidden: int, layers: int, t_max: int | None, seed: int
             ) -> nn.Module:
    """The recurrent part, time-major, ``(x, state) -> (y, state)``, ``y`` ``hidden``
    features; with ``t_max``, gate biases with time constants up to ``t_max`` for the
    gated ones (else every model's default initialisation). The LSTM is ``nn.LSTM``
    with ``t_max`` (dense input: torch's fused kernel), else the demo's
    :class:`~vlrnn.models.StackedRNN` of ``nn.LSTMCell`` (packed input: several times
    faster than ``nn.LSTM``'s packed CPU kernel)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    if name == "LSTM":
        if t_max is None:
            return StackedRNN(n_in, hidden, num_layers=layers, cell="lstm")
        rnn: nn.Module = nn.LSTM(n_in, hidden, num_layers=layers)
        chrono_init(rnn, t_max, gen)
        return rnn
    if name in ("MinGRU", "MinLSTM"):
        rnn = (MinGRU if name == "MinGRU" else MinLSTM)(n_in, hidden, layers)
        if t_max is None:
            return rnn
        with torch.no_grad():
            for lin in rnn.layers:
                tau = torch.log(torch.empty(hidden).uniform_(1, t_max - 1, generator=gen))
                lin.bias.zero_()
                if name == "MinGRU":   # z ~ 1 / tau: h keeps (1 - z) of itself per step
                    lin.bias[:hidden] = -tau
                else:                  # f / (f + i) ~ tau / (1 + tau), as the LSTM's
                    lin.bias[:hidden] = tau
                    lin.bias[hidden:2 * hidden] = -tau
        return rnn
    if name == "LRU":
        return LRU(n_in, hidden, layers)
    if name == "LRU-half":
        return LRU(n_in, hidden, layers, state_size=max(1, hidden // 2))
    if name == "Mamba":
        return Mamba(n_in, hidden, layers)
    raise ValueError(f"unknown model {name!r}; expected one of {MODELS}")


# -- recall ------------------------------------------------------------------------------------
class RecallModel(nn.Module):
    def __init__(self, name: str, hidden: int, layers: int, delay: int, seed: int):
        super().__init__()
        self.rnn = backbone(name, K + NOISE, hidden, layers, delay, seed)
        self.head = nn.Linear(hidden, K)

    def logits(self, x: torch.Tensor, block_len: int) -> torch.Tensor:
        """``x`` ``(T, B, K + NOISE)`` -> ``(B, K)`` from the output at the last step
        (``vlrnn.block_outputs``: exact, one block of activations at a time)."""
        y, _ = vlrnn.block_outputs(self.rnn, x, block_len=block_len)
        return self.head(y[-1])


def run_recall(name: str, a) -> dict:
    model = RecallModel(name, a.hidden, a.layers, a.delay, a.seed)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr or 1e-2)
    gen = torch.Generator().manual_seed(a.seed + 1)      # the same batches for every model
    steps, t0 = 0, clock()
    while clock() - t0 < a.seconds:
        x, label = make_batch(a.batch, a.delay, gen)
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model.logits(x, a.block), label)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        steps += 1
    spent = clock() - t0
    x_val, y_val = make_batch(a.n_val, a.delay, torch.Generator().manual_seed(VAL_SEED),
                              balanced=True)
    correct = 0
    with torch.no_grad():
        for i in range(0, a.n_val, 128):
            pred = model.logits(x_val[:, i:i + 128], a.block).argmax(-1)
            correct += int((pred == y_val[i:i + 128]).sum())
    return {"model": name, "steps": steps, "seconds": spent,
            "score": correct / a.n_val, "loss": float(loss.detach())}


# -- bytes -------------------------------------------------------------------------------------
class ByteModel(nn.Module):
    """Embedding -> backbone -> linear head over 256 bytes, on ``PackedSequence`` byte ids
    (data ``(N,)``) -> logits (data ``(N, 256)``, same batch order)."""

    def __init__(self, name: str, hidden: int, layers: int, embed: int, seed: int):
        super().__init__()
        self.embed = nn.Embedding(lm.VOCAB, embed)
        self.rnn = backbone(name, embed, hidden, layers, None, seed)
        self.head = nn.Linear(hidden, lm.VOCAB)
        self.state_batch_dim = getattr(self.rnn, "state_batch_dim", 1)

    def forward(self, x: PackedSequence, state=None):
        e = PackedSequence(self.embed(x.data), x.batch_sizes, x.sorted_indices,
                           x.unsorted_indices)
        out, state = self.rnn(e, state)
        return PackedSequence(self.head(out.data), out.batch_sizes, out.sorted_indices,
                              out.unsorted_indices), state


def run_bytes(name: str, a, data) -> dict:
    train, probe = data
    model = ByteModel(name, a.hidden, a.layers, 32, a.seed)
    lr = a.lr or 5e-3
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    short = [i for i in range(len(train)) if len(train[i]) <= a.file_bytes]
    batches = [[short[j] for j in b] for b in lm.length_batches(
        [len(train[i]) for i in short], a.batch_bytes)]
    gen = torch.Generator().manual_seed(a.seed)          # the same batch order for every model
    queue: list = []
    steps, seen, t0 = 0, 0, clock()
    while (elapsed := clock() - t0) < a.seconds:
        if not queue:
            queue = [batches[j] for j in torch.randperm(len(batches), generator=gen)]
        x, y = lm.batch_of([train[i] for i in queue.pop()], "cpu")
        for g in opt.param_groups:  # the demo's cosine decay over the budget, to a tenth
            g["lr"] = lr * (0.1 + 0.45 * (1 + math.cos(math.pi * min(elapsed / a.seconds, 1))))
        out = vlrnn.block_loss(model, lm.cross_entropy_rows, x, y, block_len=a.block)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        steps += 1
        seen += x.data.shape[0]
    spent = clock() - t0
    bits = lm.evaluate_bits(model, probe, "cpu", a.block)
    return {"model": name, "steps": steps, "seconds": spent, "score": bits,
            "bytes": seen}


def byte_data(a):
    files = lm.stdlib_files()
    train_f, val_f = lm.split_files(files)
    train = [lm.read_bytes(p) for p in train_f]
    val = [lm.read_bytes(p) for p in val_f]
    probe = sorted(val, key=len)[: max(1, len(val) // 2)]
    if a.quick:
        train, probe = train[:200], probe[:10]
    return (train, probe), lm.unigram_bits(train, probe), sum(len(v) - 1 for v in probe)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", choices=("recall", "bytes"), required=True)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS + EXTRA)
    p.add_argument("--seconds", type=float, default=90.0, help="training CPU seconds per model")
    p.add_argument("--hidden", type=int, default=None, help="default: recall 64, bytes 128")
    p.add_argument("--layers", type=int, default=None, help="default: recall 1, bytes 2")
    p.add_argument("--block", type=int, default=256)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--delay", type=int, default=2000, help="recall: steps between cue and answer")
    p.add_argument("--batch", type=int, default=32, help="recall: sequences per batch")
    p.add_argument("--n-val", type=int, default=512, help="recall: held-out sequences")
    p.add_argument("--batch-bytes", type=int, default=16_384, help="bytes: padded bytes per batch")
    p.add_argument("--file-bytes", type=int, default=8_192, help="bytes: longest training file")
    p.add_argument("--quick", action="store_true", help="bytes: a small corpus (smoke test)")
    p.add_argument("--out", default=None, help="write the table to this markdown file")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    recall = a.task == "recall"
    a.hidden = a.hidden or (64 if recall else 128)
    a.layers = a.layers or (1 if recall else 2)
    if recall:
        desc = (f"recall across {a.delay} steps (T = {a.delay + 10}), batch {a.batch}, "
                f"{a.n_val} held-out sequences (balanced; chance 25%)")
        col = "held-out accuracy"
        rows = []
        for n in a.models:
            rows.append(run_recall(n, a))
            r = rows[-1]
            print(f"{n}: {r['score']:.1%} after {r['steps']} steps", flush=True)
        fmt = "{:.1%}"
    else:
        data, uni, n_bytes = byte_data(a)
        desc = (f"bytes of the standard library, files up to {a.file_bytes} bytes, "
                f"{a.batch_bytes} padded bytes per batch; held-out: {len(data[1])} files, "
                f"{n_bytes:,} bytes (unigram {uni:.2f} bits/byte)")
        col = "held-out bits/byte"
        rows = []
        for n in a.models:
            rows.append(run_bytes(n, a, data))
            r = rows[-1]
            print(f"{n}: {r['score']:.3f} bits/byte after {r['steps']} steps", flush=True)
        fmt = "{:.3f}"
    lines = [f"{a.task}: {desc}; each model {a.seconds:g} CPU seconds of training "
             f"({a.threads} torch thread(s)), hidden {a.hidden}, {a.layers} layer(s), "
             f"block {a.block}, seed {a.seed}; command: python "
             f"benchmarks/scan_models_accuracy.py "
             + " ".join(sys.argv[1:] if argv is None else argv), "",
             f"| model | {col} | optimizer steps | training s |", "|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {fmt.format(r['score'])} | {r['steps']} | "
                     f"{r['seconds']:.0f} |")
    text = "\n".join(lines)
    write_table(text, a.out)


if __name__ == "__main__":
    main()
