"""Peak RSS of one forward+backward on a ragged packed CPU batch (heap fragmentation).

The batch is the demo's largest (``vlrnn demo``): the standard library's
``.py`` files of at most 200 KB, split and bucketed exactly as the demo does them
(``LengthBucketSampler(seed=0)``, 16 files per batch), and the batch with the most
bytes, about 15 files and 1.6 M packed rows, 671 blocks of 256 steps. Model
``ByteLSTM(128)`` with a per-byte cross-entropy. Its sequences end one after another,
so the number of running sequences, and with it the size of every per-block
temporary, changes block by block: the pattern that fragments glibc's heap when small
long-lived tensors are allocated between the big short-lived ones (as the engine's kept
boundary states were, one clone per block, before :mod:`vlrnn.engine._store`).

Each repetition runs in a fresh process and reports the peak RSS (``VmHWM``), the RSS
once model and batch exist and after the forward pass (``block_loss``), the time of
``block_loss(...)`` + ``.loss.backward()``, the number of blocks, and glibc's own count
of the heap it holds and how much of it is free. Fragmentation is chaotic: with the
per-block clones it showed in some runs only, with 2 threads (the forward pass's RSS
then climbed by 1-3 MB per block); run several repetitions. For comparison glibc's
allocator can be tuned from outside, and another copy of vlrnn put first on the path:

    python benchmarks/fragmentation.py                          # the full batch
    python benchmarks/fragmentation.py --fraction 0.3           # quick: ~200 blocks
    python benchmarks/fragmentation.py --threads 2 --reps 5     # median and worst of 5
    python benchmarks/fragmentation.py --schedule revolve       # kept states not in slots
    MALLOC_MMAP_THRESHOLD_=65536 python benchmarks/fragmentation.py   # no heap reuse
    PYTHONPATH=/path/to/other/checkout python benchmarks/fragmentation.py
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import current_rss_mb, rss_mb, spawn  # noqa: E402


def largest_batch(max_bytes: int = 200_000, batch_size: int = 16, seed: int = 0):
    """The byte tensors ``(T_i,)`` of the demo's largest batch (most bytes in all)."""
    from vlrnn.cli.demo import read_bytes, split_files, stdlib_files
    from vlrnn.data import LengthBucketSampler
    files = [p for p in stdlib_files() if p.stat().st_size <= max_bytes]
    train_files, _ = split_files(files)
    train = [read_bytes(p) for p in train_files]
    batches = LengthBucketSampler([len(s) for s in train], batch_size, seed=seed).batches(0)
    top = max(batches, key=lambda b: sum(len(train[j]) for j in b))
    return [train[j] for j in top]


def heap_stats() -> dict:
    """glibc's own account of its heap (all arenas), MB: what it holds from the system
    (``heap_mb``, mmapped chunks apart) and how much of that is free but kept
    (``heap_free_mb``), with the number of free chunks. Empty where there is no
    ``mallinfo2`` (not glibc, or glibc < 2.33)."""
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks",
                    "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
    try:
        fn = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return {}
    fn.restype = MallInfo2
    m = fn()
    return dict(heap_mb=m.arena / 2**20, heap_free_mb=m.fordblks / 2**20,
                free_chunks=m.ordblks)


def worker(fraction: float, block_len: int, hidden: int, schedule: str = "flat") -> dict:
    """One forward+backward of ``block_loss`` in this process."""
    import torch

    import vlrnn
    from vlrnn.cli.demo import ByteLSTM, batch_of, cross_entropy_rows
    torch.manual_seed(0)
    seqs = largest_batch()
    if fraction < 1:  # every file cut in proportion: as ragged, fewer blocks
        seqs = [s[:max(2, int(len(s) * fraction))] for s in seqs]
    x, y = batch_of(seqs, "cpu")
    model = ByteLSTM(hidden)
    base = current_rss_mb()
    t0 = time.perf_counter()
    out = vlrnn.block_loss(model, cross_entropy_rows, x, y, block_len=block_len,
                           schedule=None if schedule == "flat" else schedule)
    forward = dict(seconds_forward=time.perf_counter() - t0, rss_forward_mb=current_rss_mb())
    out.loss.backward()
    seconds = time.perf_counter() - t0
    return dict(vlrnn=str(Path(vlrnn.__file__).parent),
                rss_peak_mb=rss_mb(), rss_base_mb=base, rss_end_mb=current_rss_mb(),
                seconds=seconds, n_blocks=out.n_blocks, rows=int(x.data.shape[0]),
                n_seqs=len(seqs), loss=float(out.loss), **forward, **heap_stats())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--fraction", type=float, default=1.0, help="keep this fraction of "
                   "every file, for a quick check (default 1: whole files)")
    p.add_argument("--block-len", type=int, default=256)
    p.add_argument("--hidden-size", type=int, default=128)
    p.add_argument("--reps", type=int, default=1, help="fresh processes; medians reported")
    p.add_argument("--schedule", default="flat", help="engine schedule (flat, two_level, "
                   "revolve: its kept states are tensors of their own, not slots)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per process")
    p.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        import torch
        torch.set_num_threads(int(a.worker[-1]))
        fraction, block_len, hidden, schedule, _ = a.worker
        print(json.dumps(worker(float(fraction), int(block_len), int(hidden), schedule)))
        return 0

    runs = []
    for rep in range(a.reps):
        r = spawn(__file__, [a.fraction, a.block_len, a.hidden_size, a.schedule, a.threads], a.timeout)
        if "error" in r:
            print(f"[rep {rep + 1}/{a.reps}] {r['error']}")
            return 1
        runs.append(r)
        if rep == 0:
            print(f"vlrnn from {r['vlrnn']}, {a.threads} thread(s), schedule {a.schedule}")
        print(f"[rep {rep + 1}/{a.reps}] {r['n_blocks']} blocks, {r['rows']:,} rows, "
              f"{r['n_seqs']} sequences: peak RSS {r['rss_peak_mb']:,.0f} MB "
              f"(base {r['rss_base_mb']:,.0f} MB, after the forward pass "
              f"{r['rss_forward_mb']:,.0f} MB, at the end {r['rss_end_mb']:,.0f} MB), "
              f"{r['seconds']:.1f} s (forward {r['seconds_forward']:.1f} s), "
              f"loss {r['loss']:.4f}", flush=True)
        if "heap_mb" in r:
            print(f"    glibc heap at the end: {r['heap_mb']:,.0f} MB, of which free "
                  f"{r['heap_free_mb']:,.0f} MB in {r['free_chunks']:,} chunks")
    if a.reps > 1:
        med = {k: statistics.median(r[k] for r in runs) for k in ("rss_peak_mb", "seconds")}
        print(f"median of {a.reps}: peak RSS {med['rss_peak_mb']:,.0f} MB, "
              f"{med['seconds']:.1f} s; worst peak RSS "
              f"{max(r['rss_peak_mb'] for r in runs):,.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
