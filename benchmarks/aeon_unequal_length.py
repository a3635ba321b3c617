"""vlrnn.aeon.RNNClassifier against aeon's classifiers that take unequal-length series.

Data: JapaneseVowels as aeon ships it (``aeon.datasets.load_japanese_vowels``): 270 train
and 370 test series, 12 channels, lengths 7 to 29, 9 classes; the standard split, as
loaded (no padding, no truncation, no resampling). Classifiers: every aeon 1.6 classifier
tagged ``capability:unequal_length`` and ``capability:multivariate`` that needs no further
package and fits here in minutes (``DummyClassifier``, ``KNeighborsTimeSeriesClassifier``
with DTW, ``Catch22Classifier``, ``RDSTClassifier``), and vlrnn's ``RNNClassifier`` with
every parameter at its default (``pack_and_train``'s defaults) and a small variant.
aeon's deep learners (InceptionTime, ...) and ROCKET need equal lengths (padding) and
are left out. Each classifier runs ``--seeds`` times (random_state 0, 1, ...); the table
gives the mean and range of test accuracy and the median fit + predict seconds (the
first run of a numba-based classifier also compiles it), on ``--threads`` torch/numba
threads.

Only JapaneseVowels, a development set of issue 21: the archive's other sets are kept
for an independent check of the defaults.

    python benchmarks/aeon_unequal_length.py                 # all, 3 seeds
    python benchmarks/aeon_unequal_length.py --seeds 1 --only RNN
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def load(name: str):
    """``(X, y, X_test, y_test)``: lists of ``(n_channels, n_timepoints_i)`` arrays."""
    if name == "JapaneseVowels":
        from aeon.datasets import load_japanese_vowels

        return (*load_japanese_vowels(split="train"), *load_japanese_vowels(split="test"))
    raise ValueError(f"unknown dataset {name!r}; JapaneseVowels")


def classifiers(seed: int):
    """name -> unfitted classifier."""
    from aeon.classification import DummyClassifier
    from aeon.classification.distance_based import KNeighborsTimeSeriesClassifier
    from aeon.classification.feature_based import Catch22Classifier
    from aeon.classification.shapelet_based import RDSTClassifier

    from vlrnn.aeon import RNNClassifier

    return {
        "Dummy (majority)": DummyClassifier(),
        "1-NN DTW": KNeighborsTimeSeriesClassifier(distance="dtw"),
        "Catch22": Catch22Classifier(random_state=seed),
        "RDST": RDSTClassifier(random_state=seed),
        "vlrnn RNN (defaults)": RNNClassifier(progress=False, random_state=seed),
        "vlrnn RNN (GRU 32x1)": RNNClassifier(cell="gru", hidden_size=32, num_layers=1,
                                              progress=False, random_state=seed),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="JapaneseVowels",
                    choices=["JapaneseVowels"])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", default=None, help="run classifiers whose name has this")
    ap.add_argument("--out", default=None, help="default: benchmarks/results/"
                    "aeon_unequal_length.md")
    args = ap.parse_args()
    os.environ.setdefault("NUMBA_NUM_THREADS", str(args.threads))
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    X, y, Xt, yt = load(args.dataset)
    lengths = [x.shape[1] for x in X + Xt]
    what = (f"{args.dataset}: {len(X)} train, {len(Xt)} test, {X[0].shape[0]} channel(s), "
            f"lengths {min(lengths)}-{max(lengths)}, {len(set(y))} classes")
    print(what, flush=True)
    rows = []
    for name in classifiers(0):
        if args.only and args.only not in name:
            continue
        accs, secs = [], []
        for seed in range(args.seeds):
            clf = classifiers(seed)[name]
            t0 = time.perf_counter()
            pred = clf.fit(X, y).predict(Xt)
            secs.append(time.perf_counter() - t0)
            accs.append(float(np.mean(pred == yt)))
            print(f"{name:24s} seed {seed}: accuracy {accs[-1]:.4f}, {secs[-1]:.1f} s",
                  flush=True)
        rows.append((name, np.mean(accs), min(accs), max(accs), np.median(secs)))
    command = (f"python benchmarks/aeon_unequal_length.py --dataset {args.dataset} "
               f"--seeds {args.seeds} --threads {args.threads}")
    lines = [(f"{what}; unequal lengths as loaded; {args.seeds} seed(s), "
             f"{args.threads} thread(s)."), "", f"Command: `{command}`", "",
             "| classifier | test accuracy (mean) | min | max | fit+predict s (median) |",
             "|---|---:|---:|---:|---:|"]
    lines += [f"| {n} | {m:.4f} | {lo:.4f} | {hi:.4f} | {s:.1f} |"
              for n, m, lo, hi, s in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.only:
        out = args.out or str(HERE / "results" / "aeon_unequal_length.md")
        Path(out).write_text(text)


if __name__ == "__main__":
    main()
