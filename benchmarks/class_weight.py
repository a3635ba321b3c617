"""Class weights or not for an imbalanced series classification
(``pack_and_train(class_weight=...)``).

Synthetic: 200 ragged series (20-80 steps) of noise, 80% class "common", 20% "rare";
a "rare" series' mean is shifted by 0.3 (a weak signal). Scored on 400 held-out series
with the same mix: accuracy, and balanced accuracy (mean recall over the classes),
which a model that always says "common" scores 0.5 on.

    python benchmarks/class_weight.py            # ~5 min on 2 shared cores
    python benchmarks/class_weight.py --quick    # seconds
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import vlrnn  # noqa: E402


def frame(n: int, seed: int):
    rng = np.random.default_rng(seed)
    parts, labels = [], {}
    for s in range(n):
        T = int(rng.integers(20, 80))
        rare = rng.random() < 0.2
        parts.append(pd.DataFrame({"id": s, "t": np.arange(T),
                                   "u": rng.normal(size=T) + (0.3 if rare else 0.0)}))
        labels[s] = "rare" if rare else "common"
    return pd.concat(parts, ignore_index=True), pd.Series(labels)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--seeds", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    n_train, n_test = (30, 30) if args.quick else (200, 400)
    train, train_labels = frame(n_train, 1)
    test, test_labels = frame(n_test, 2)
    rows = []
    for weight in (None, "auto"):
        for seed in ([0] if args.quick else range(args.seeds)):
            opts = dict(epochs=2, hidden_size=8) if args.quick else {}
            res = vlrnn.pack_and_train(train, id_col="id", time_col="t",
                                       series_target=train_labels, class_weight=weight,
                                       seed=seed, progress=False, device="cpu", **opts)
            pred = res.predict(test)["prediction"].reindex(test_labels.index)
            recall = [(pred[test_labels == c] == c).mean() for c in ("common", "rare")]
            rows.append(dict(class_weight=str(weight), seed=seed,
                             accuracy=float((pred == test_labels).mean()),
                             balanced_accuracy=float(np.mean(recall)),
                             rare_recall=float(recall[1])))
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows).groupby("class_weight")[
        ["accuracy", "balanced_accuracy", "rare_recall"]].mean()
    print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
