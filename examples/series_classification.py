"""Classify whole ragged series: JapaneseVowels (UEA/UCI), one label per series.

640 utterances by 9 speakers, each a series of 12 LPC coefficients 7-29 frames long; the
task is to name the speaker. The archive's split: 270 training, 370 test series. The
data ship in ``examples/data`` (source and licence in ``examples/data/README.md``) and are
read with ``vlrnn.data.read_ts``; ``vlrnn.data.from_arrays`` turns the list of ``(T_i,
12)`` arrays (the sktime/aeon "nested" shape) into the long frame the one-call API takes::

    frame, labels = vlrnn.data.from_arrays(X_train, y_train)
    result = vlrnn.pack_and_train(frame, id_col="id", time_col="t", series_target=labels)
    result.evaluate(test_frame, series_target=test_labels)  # accuracy, majority_accuracy

Published accuracies on this split (test set): 1-NN with Euclidean distance 0.924, 1-NN
DTW (independent) 0.959, 1-NN DTW (dependent) 0.949 (Bagnall et al. 2018, "The UEA
multivariate time series classification archive, 2018", arXiv:1811.00075, Table of
benchmark results); the data set's authors reported 0.941 (Kudo et al. 1999).

    python examples/series_classification.py            # the README figure (~1-3 min)
    python examples/series_classification.py --quick    # smoke run, a few seconds
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from lowlevel_tasks import accuracy, fit_series_classifier, majority_accuracy, one_call_supports  # noqa: E402

import vlrnn  # noqa: E402
from vlrnn.data import from_arrays, read_ts  # noqa: E402

DATA = HERE / "data"
PUBLISHED = "1-NN DTW 0.949-0.959, 1-NN Euclidean 0.924 (Bagnall et al. 2018)"


def load(split: str):
    """``(arrays, labels)`` of the archive's TRAIN or TEST split: a list of ``(T_i, 12)``
    arrays and their speaker labels ``"1".."9"`` (text)."""
    arrays, labels, _ = read_ts(DATA / f"JapaneseVowels_{split}.ts")
    return arrays, labels


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=None,
                   help="default: pack_and_train's own (60 with --api lowlevel)")
    p.add_argument("--hidden", type=int, default=None,
                   help="default: pack_and_train's own (64 with --api lowlevel)")
    p.add_argument("--lr", type=float, default=None,
                   help="default: pack_and_train's own (3e-3 with --api lowlevel)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--api", choices=["auto", "one-call", "lowlevel"], default="auto",
                   help="one-call: vlrnn.pack_and_train(series_target=...); lowlevel: "
                        "vlrnn.block_loss (lowlevel_tasks.py); auto: one-call if available")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--quick", action="store_true", help="a few seconds: 3 epochs")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.epochs = 3
    api = args.api
    if api == "auto":
        api = "one-call" if one_call_supports("series_target") else "lowlevel"

    X_train, y_train = load("TRAIN")
    X_test, y_test = load("TEST")
    lengths = [len(x) for x in X_train + X_test]
    print(f"JapaneseVowels: {len(X_train)} training and {len(X_test)} test series, "
          f"{X_train[0].shape[1]} features, {min(lengths)}-{max(lengths)} steps, "
          f"{len(set(y_train))} classes")
    train = from_arrays(X_train, y_train, ids=[f"train{i}" for i in range(len(X_train))])
    test = from_arrays(X_test, y_test, ids=[f"test{i}" for i in range(len(X_test))])

    given = {k: v for k, v in dict(epochs=args.epochs, hidden_size=args.hidden,
                                   lr=args.lr).items() if v is not None}
    low = dict(epochs=args.epochs or 60, hidden=args.hidden or 64, lr=args.lr or 3e-3)
    n_epochs = given.get("epochs", "default") if api == "one-call" else low["epochs"]
    t0 = time.perf_counter()
    if api == "one-call":
        print(f"training through vlrnn.pack_and_train(..., series_target=labels), "
              f"{n_epochs} epochs")
        result = vlrnn.pack_and_train(train.frame, id_col="id", time_col="t",
                                      series_target=train.labels,
                                      seed=args.seed, **given)
        n_epochs = len(result.history)          # epochs run (the defaults choose them)
        metrics = result.evaluate(test.frame, series_target=test.labels)
        pred = result.predict(test.frame)
        print(pred.head(3).to_string())
        acc, base = float(metrics["accuracy"]), float(metrics["majority_accuracy"])
        print("evaluate():", {k: round(float(v), 4) for k, v in metrics.items()})
    else:
        print(f"training through vlrnn.block_loss with a loss on out.state (lowlevel_tasks.py),"
              f" {n_epochs} epochs")
        predict = fit_series_classifier(X_train, list(y_train), **low,
                                        seed=args.seed)
        acc = accuracy(predict(X_test), y_test)
        _, base = majority_accuracy(y_train, y_test)
    seconds = time.perf_counter() - t0
    print(f"\ntest accuracy {acc:.3f} (majority class {base:.3f}; published: {PUBLISHED}); "
          f"trained in {seconds:.0f} s via the {api} API")
    print(f"RESULT JapaneseVowels test accuracy {acc:.3f}, majority baseline {base:.3f} "
          f"({api} API, {n_epochs} epochs, seed {args.seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
