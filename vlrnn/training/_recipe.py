"""The training recipe of :func:`vlrnn.pack_and_train`: budget, split, optimizer, schedule.

Each default here was chosen by side-by-side runs on the development sets of issue 21
(``benchmarks/real_data.py``; figures in docs/benchmarks/real-data.md):

- the budget is counted in optimizer steps (``pipeline.AUTO_STEPS``), not epochs, so
  that a set of 36 series trains as long as one of 3,000; a row budget
  (``pipeline.AUTO_ROWS``) caps sets of few, very long series;
- no validation split below :data:`MIN_VAL_SERIES` series: a split of a handful of
  series is too noisy to choose epochs from and costs a fifth of the data; the last
  weights of a cosine-annealed run are kept instead;
- AdamW with decoupled weight decay, a cosine learning-rate decay per epoch to
  ``1/100`` of the peak, gradient norm clipped to :data:`CLIP_NORM`;
- series classification smooths the labels of its cross-entropy
  (:data:`LABEL_SMOOTHING`): ArrowHead, the set furthest from the peers, gained on
  every seed and JapaneseVowels no longer misses 1-NN DTW's accuracy on seed 1;
- series classification reads the series through causal dilated convolutions
  (:data:`CONV_FRONT`) whose receptive field grows with the training series' median
  length (:data:`LONG_DILATIONS`): a fixed wide front end helped the long sets and hurt
  the short ones (JapaneseVowels, 7-26 steps).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["CLIP_NORM", "CONV_FRONT", "FORECAST_ENSEMBLE", "HEAD_DROPOUT", "LABEL_SMOOTHING",
           "LONG_DILATIONS", "MIN_VAL_SERIES", "STEPS_BUDGET", "STEPS_LR",
           "STEPS_MAX_EPOCHS", "WEIGHT_DECAY", "cosine_decay", "default_ensemble",
           "dropout_share", "front_config", "head_pool", "label_share", "receptive_field",
           "resolve", "val_share"]

#: fewest series for which ``val_fraction="auto"`` holds out a validation split
MIN_VAL_SERIES = 300
#: AdamW's decoupled weight decay of ``weight_decay=None``
WEIGHT_DECAY = 1e-2
#: gradient norm clipping of the default recipe
CLIP_NORM = 1.0
#: label smoothing of the cross-entropy of ``label_smoothing=None`` (series
#: classification, ``recipe="steps"``). Against none, seeds 0 / 1 / 2
#: (benchmarks/results/real_data_clf_ls01_seedS.md and ``..._rest_seedS.md``): ArrowHead
#: 0.794 / 0.800 / 0.754 (0.771 / 0.749 / 0.714), JapaneseVowels 0.959 / 0.957 / 0.954
#: (0.965 / 0.946 / 0.957), ItalyPowerDemand 0.953 / 0.952 / 0.956 (0.954 / 0.960 /
#: 0.955), GunPoint 1.000 / 0.993 / 0.987 (1.000 / 0.993 / 1.000), BasicMotions 1.000 on
#: all three (0.975 / 1.000 / 1.000), Coffee and Trace 1.000; means of the 7 sets 0.958 /
#: 0.957 / 0.950 (0.952 / 0.950 / 0.947), every set at least 1-NN DTW's on every seed.
#: 0.2: ArrowHead 0.777 / 0.783 / 0.749, JapaneseVowels 0.959 / 0.959 / 0.965
#: (``real_data_clf_ls02_seedS.md``); with weight decay 0.1: ArrowHead 0.754 / 0.760 /
#: 0.737 (``real_data_clf_ls01wd01_seedS.md``)
LABEL_SMOOTHING = 0.1
#: dropout on the pooled features before the head of ``head_dropout=None`` (series
#: tasks, ``recipe="steps"``): none. 0.3 with label smoothing 0.1, seeds 0 / 1 / 2
#: (``real_data_clf_ls01hd03_seedS.md``): ArrowHead 0.760 / 0.789 / 0.726 (without it
#: 0.794 / 0.800 / 0.754), JapaneseVowels 0.965 / 0.943 / 0.957 (0.959 / 0.957 / 0.954)
HEAD_DROPOUT = 0.0


def _probability(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{name} must be a number in [0, 1) or None, got {value!r}")
    return float(value)


def dropout_share(head_dropout: float | None, level: str, recipe: str) -> float:
    """``head_dropout=None``: :data:`HEAD_DROPOUT` for series tasks with
    ``recipe="steps"``, else 0; a number in ``[0, 1)`` is kept."""
    if head_dropout is None:
        return HEAD_DROPOUT if level == "series" and recipe == "steps" else 0.0
    return _probability(head_dropout, "head_dropout")


def label_share(label_smoothing: float | None, level: str, recipe: str) -> float:
    """``label_smoothing=None``: :data:`LABEL_SMOOTHING` for series tasks with
    ``recipe="steps"``, else 0; a number in ``[0, 1)`` is kept."""
    if label_smoothing is None:
        return LABEL_SMOOTHING if level == "series" and recipe == "steps" else 0.0
    return _probability(label_smoothing, "label_smoothing")


def val_share(val_fraction: float | str, n_series: int, recipe: str = "steps"
              ) -> float:
    """``val_fraction="auto"``: for ``recipe="steps"`` 0.2 from :data:`MIN_VAL_SERIES`
    series on, else 0; for ``"classic"`` (early stopping needs it; ``pack_and_train``
    also passes it when ``early_stopping_patience`` is given) 0.2."""
    if isinstance(val_fraction, str) and val_fraction == "auto":
        if recipe == "classic":
            return 0.2
        return 0.2 if n_series >= MIN_VAL_SERIES else 0.0
    if isinstance(val_fraction, str) or not isinstance(val_fraction, (int, float)):
        raise TypeError(f"val_fraction must be a number in [0, 1) or 'auto', got "
                        f"{val_fraction!r}")
    return float(val_fraction)


def cosine_decay(epochs: int, floor: float = 0.01) -> Any:
    """A callable ``optimizer -> LambdaLR``: the peak learning rate in epoch 1, decaying
    along half a cosine to ``floor`` times it in the last epoch (stepped per epoch)."""
    span = max(int(epochs) - 1, 1)

    def factor(e: int) -> float:
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(e, span) / span))

    return lambda optimizer: torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


#: ``ensemble=None`` for forecasts: models averaged (other tasks train one)
FORECAST_ENSEMBLE = 3


def default_ensemble(horizon: int | None) -> int:
    """``ensemble=None``: :data:`FORECAST_ENSEMBLE` models for a forecast (``horizon``
    set), else 1. Forecast MASE over rolling origins, seeds 0-2
    (docs/benchmarks/real-data.md): US macro 2.64 / 2.64 / 2.63 against 2.63 / 2.67 /
    2.63 with one model (damped ETS 2.65), Grunfeld 2.18 / 2.16 / 2.14 against 2.19 /
    2.28 / 2.16, fertility 0.689 / 0.702 / 0.700 against 0.726 / 0.701 / 0.779, in about
    three times the time (small panels: seconds to a minute). Series classification
    gained nothing from 3 (ArrowHead 0.771, seed 0, the same as one model)."""
    return FORECAST_ENSEMBLE if horizon else 1


#: ``recipe="steps"``: optimizer steps ``epochs=None`` aims for, most epochs it gives, and
#: the AdamW learning rate of ``lr=None``
STEPS_BUDGET = 900
STEPS_MAX_EPOCHS = 1000
STEPS_LR = 1e-3


def resolve(level: str, kind: str, recipe: str, front: Any) -> tuple[str, Any]:
    """``recipe="auto"`` and ``front="auto"`` for a task: series classification gets the
    steps recipe and the convolutional front end (docs/benchmarks/real-data.md);
    series regression and per-step tasks keep the classic recipe and no front end (on
    the one regression development set, CardanoSentiment, the classic recipe had the
    lower RMSE, 0.292 against 0.323; the per-step figures in examples/results/tasks.md
    were measured with it)."""
    series_clf = level == "series" and kind == "classification"
    if recipe == "auto":
        recipe = "steps" if series_clf else "classic"
    if recipe not in ("classic", "steps"):
        raise ValueError(f"recipe must be 'auto', 'classic' or 'steps', got {recipe!r}")
    if isinstance(front, str) and front == "auto":
        front = "conv" if series_clf else None
    return recipe, front


#: ``front="conv"``: the convolutional front end's sizes; ``skip``: the head also reads
#: the convolution features (measured in docs/benchmarks/real-data.md)
CONV_FRONT = {"channels": 64, "kernel_sizes": [7, 5, 3], "dilations": [1, 2, 4],
              "norm": None, "skip": True}


#: ``front="conv"`` on long series: kernel-3 layers of these dilations are added after
#: :data:`CONV_FRONT`'s while the receptive field stays within the median series length
#: (dilations grow with the length, as MiniRocket's do); measured in
#: docs/benchmarks/real-data.md
LONG_DILATIONS = (8, 16)


def receptive_field(kernel_sizes: Sequence[int], dilations: Sequence[int]) -> int:
    """Steps one output of stacked causal convolutions reads: ``1 + sum((k - 1) * d)``."""
    return 1 + sum((int(k) - 1) * int(d) for k, d in zip(kernel_sizes, dilations))


def front_config(front: Any, median_length: float | None = None) -> dict[str, Any] | None:
    """``front=`` as the config records it: ``None`` or the conv front end's settings
    (``"conv"`` = :data:`CONV_FRONT`, with the layers of :data:`LONG_DILATIONS` whose
    receptive field fits in ``median_length``, the training series' median length; a
    dict overrides some settings and adds no layer)."""
    if front is None:
        return None
    if front == "conv":
        out = {**CONV_FRONT, "kernel_sizes": list(CONV_FRONT["kernel_sizes"]),
               "dilations": list(CONV_FRONT["dilations"])}
        for d in LONG_DILATIONS if median_length is not None else ():
            if receptive_field(out["kernel_sizes"] + [3], out["dilations"] + [d]) \
                    > median_length:
                break
            out["kernel_sizes"].append(3)
            out["dilations"].append(d)
        return out
    if isinstance(front, dict) and set(front) <= set(CONV_FRONT):
        out = {**CONV_FRONT, **front}
        if "kernel_sizes" in front and "dilations" not in front:
            out["dilations"] = [1] * len(out["kernel_sizes"])
        return {"channels": int(out["channels"]),
                "kernel_sizes": [int(k) for k in out["kernel_sizes"]],
                "dilations": [int(d) for d in out["dilations"]],
                "norm": out["norm"], "skip": bool(out["skip"])}
    raise ValueError(f"front must be None, 'conv' or a dict with some of {sorted(CONV_FRONT)}, "
                     f"got {front!r}")


def head_pool(pool: Sequence[str] | None, front: dict[str, Any] | None,
              default: Sequence[str]) -> list:
    """What a series head reads: ``pool``, else ``default``, or
    ``("mean", "max")`` when the front end's features go to the head too (``skip``)."""
    skip = bool(front and front.get("skip"))
    if pool is None:
        return ["mean", "max"] if skip else list(default)
    if skip and "last" in pool:
        raise ValueError("pool 'last' reads the rnn's final state, which is narrower than "
                         "the outputs when the conv front end's features go to the head "
                         "(front skip); use pool=('mean', 'max') or front={'skip': False}")
    return list(pool)
