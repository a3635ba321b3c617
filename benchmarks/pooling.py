"""Which summary of a series should a series classifier read: the final state alone, or
the mean and max of the outputs over time too? (``pack_and_train(pool=...)``)

Each configuration trains with ``pack_and_train``'s defaults otherwise (epochs, lr,
early stopping) and is scored on held-out series by ``TrainedModel.evaluate``:

- synthetic "burst": 2 classes, 160 ragged series of 40-200 steps of noise; class 1
  has one burst of 5 steps (+2) somewhere in the series, often a hundred steps before
  its end (a final state must carry it that far; a running max sees it at once);
- JapaneseVowels (examples/data, 9 speakers, 270 train / 370 test series, 7-29 steps).

    python benchmarks/pooling.py            # the README table (~10-20 min on 2 cores)
    python benchmarks/pooling.py --quick    # seconds: tiny sizes, 1 seed
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import vlrnn  # noqa: E402

POOLS = {"last": ("last",), "mean+max": ("mean", "max"), "last+mean+max": ("last", "mean", "max")}


def burst_frame(n: int, lo: int, hi: int, seed: int):
    rng = np.random.default_rng(seed)
    parts, labels = [], {}
    for s in range(n):
        T = int(rng.integers(lo, hi))
        u = rng.normal(size=T)
        cls = s % 2
        if cls:
            at = int(rng.integers(0, T - 5))
            u[at:at + 5] += 2.0
        parts.append(pd.DataFrame({"id": s, "t": np.arange(T), "u": u,
                                   "v": rng.normal(size=T)}))
        labels[s] = "burst" if cls else "none"
    return pd.concat(parts, ignore_index=True), pd.Series(labels)


def vowels():
    from vlrnn.data import from_arrays, read_ts

    out = []
    for split in ("TRAIN", "TEST"):
        arrays, labels, _ = read_ts(ROOT / "examples" / "data" / f"JapaneseVowels_{split}.ts")
        frame, lab = from_arrays(arrays, labels, ids=[f"{split}{i}" for i in range(len(arrays))])
        out += [frame, lab]
    return out


def run(name, train, train_labels, test, test_labels, seeds, quick):
    rows = []
    for pool_name, pool in POOLS.items():
        for seed in seeds:
            t0 = time.perf_counter()
            opts = dict(epochs=2, hidden_size=8) if quick else {}
            res = vlrnn.pack_and_train(train, id_col="id", time_col="t",
                                       series_target=train_labels, pool=pool, seed=seed,
                                       progress=False, device="cpu", **opts)
            acc = res.evaluate(test, series_target=test_labels)
            rows.append(dict(data=name, pool=pool_name, seed=seed, accuracy=acc["accuracy"],
                             majority=acc["majority_accuracy"], epochs=len(res.history),
                             seconds=time.perf_counter() - t0))
            print(rows[-1], flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    seeds = [0] if args.quick else list(range(args.seeds))
    n, lo, hi = (20, 20, 60) if args.quick else (160, 40, 200)
    rows = []
    if (ROOT / "examples" / "data" / "JapaneseVowels_TRAIN.ts").exists():
        tr, trl, te, tel = vowels()
        if args.quick:
            keep = trl.index[::4]  # every class, fewer series
            tr, trl = tr[tr["id"].isin(keep)], trl.loc[keep]
        rows += run("JapaneseVowels", tr, trl, te, tel, seeds, args.quick)
    train, train_labels = burst_frame(n, lo, hi, seed=1)
    test, test_labels = burst_frame(n, lo, hi, seed=2)
    rows += run("burst", train, train_labels, test, test_labels, seeds, args.quick)
    table = pd.DataFrame(rows).groupby(["data", "pool"]).agg(
        accuracy=("accuracy", "mean"), worst=("accuracy", "min"),
        majority=("majority", "first"), epochs=("epochs", "mean"),
        seconds=("seconds", "median"))
    print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
