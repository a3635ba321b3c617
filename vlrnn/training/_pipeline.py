"""``pack_and_train``: from a long-format DataFrame to a trained model in one call.

Frame -> task dataset (:mod:`vlrnn.training._frames`) -> split by whole series ->
scalers fitted on the training series -> length-bucketed packed batches -> model ->
:class:`vlrnn.Trainer`. Four tasks, one call each: a value at every step (regression),
a class at every step, one label per series (``series_target=``), the next ``h`` steps
(``horizon=h``). The result, a :class:`~vlrnn.TrainedModel`, predicts,
forecasts, evaluates and saves.
"""
from __future__ import annotations

import math
import sys
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd
import torch

from ..data import DataWarning, make_loader, split_series
from ..models import MeanOfModels
from ._forecast_split import last_window_split
from ._frames import task_dataset
from ._losses import class_weights, task_losses
from ._members import member_files
from ._metrics import epoch_metrics
from ._model_config import FUSED, build_model, cell_name
from ._recipe import (
    CLIP_NORM,
    STEPS_BUDGET,
    STEPS_LR,
    STEPS_MAX_EPOCHS,
    WEIGHT_DECAY,
    cosine_decay,
    default_ensemble,
    dropout_share,
    front_config,
    head_pool,
    label_share,
    resolve,
    val_share,
)
from ._task import describe_task
from ._task_scaling import Scalers, check_scale, default_scale
from ._trained import TrainedModel
from ._trainer import Trainer

__all__ = ["TrainedModel", "pack_and_train"]

#: what the head of a series task reads by default: the final state and the mean and max
#: of the outputs over time; best on average in benchmarks/results/pooling.md (the final
#: state alone fails when the class shows far from the series' end)
DEFAULT_POOL = ("last", "mean", "max")
#: optimizer steps that ``epochs=None`` aims for (then early stopping decides)
AUTO_STEPS = 600
#: Adam learning rate of ``lr=None``: per-step tasks (a loss term per step, forecasts
#: included) and series tasks (one per series); figures in pack_and_train's docstring
STEP_LR = 1e-2
SERIES_LR = 3e-3
#: training rows (series steps, summed over epochs) that ``epochs=None`` stops at: a task
#: of few, long batches would otherwise get 100 epochs (the standard library's token
#: classes, 253,134 rows an epoch, 40-110 s each on 2 shared cores: 100 epochs = 1-3 h)
AUTO_ROWS = 3_000_000


#: fewest and most epochs ``epochs=None`` gives
MIN_EPOCHS, MAX_EPOCHS = 10, 100


def auto_epochs(n_batches: int, n_rows: int, steps: Optional[int] = None,
                max_epochs: Optional[int] = None) -> Tuple[int, bool]:
    """Epochs for ``epochs=None``: about ``steps`` (default :data:`AUTO_STEPS`) optimizer
    steps (:data:`MIN_EPOCHS` to :data:`MAX_EPOCHS` epochs of ``n_batches``), but no
    more than :data:`AUTO_ROWS` training rows in all (``n_rows`` an epoch), and at least
    one epoch. Returns ``(epochs, row_budget_bound)``, the second true when the row
    budget cut the count."""
    want = AUTO_STEPS if steps is None else int(steps)
    by_steps = min(max(math.ceil(want / max(n_batches, 1)), MIN_EPOCHS),
                   max_epochs or MAX_EPOCHS)
    by_rows = max(AUTO_ROWS // max(n_rows, 1), 1)
    return int(min(by_steps, by_rows)), by_rows < by_steps


def pack_and_train(df: pd.DataFrame, *, id_col: str, time_col: str,
                   target_cols: Union[str, Sequence[str], None] = None,
                   feature_cols: Union[str, Sequence[str], None] = None,
                   task: Optional[str] = None, series_target: Any = None,
                   horizon: Optional[int] = None, season: Optional[int] = None,
                   cell: Any = "lstm", hidden_size: int = 64,
                   num_layers: int = 2, block_len: int = 256, batch_size: int = 16,
                   epochs: Optional[int] = None, lr: Optional[float] = None,
                   val_fraction: Union[float, str] = "auto", seed: int = 0,
                   scale: Union[bool, str, None] = True, anchor: Optional[str] = None,
                   class_weight: Any = "auto", pool: Optional[Sequence[str]] = None,
                   front: Any = "auto", steps: Optional[int] = None,
                   weight_decay: Optional[float] = None,
                   label_smoothing: Optional[float] = None,
                   head_dropout: Optional[float] = None, recipe: str = "auto",
                   ensemble: Optional[int] = None, bidirectional: bool = False,
                   resume: Union[str, Path, None] = None, trusted: bool = False,
                   **trainer_options: Any
                   ) -> TrainedModel:
    """Train a recurrent model on a long-format frame for the task the arguments name.

    Tasks:
        - ``target_cols=`` numbers: a value at every step (MSE);
        - ``target_cols=`` classes (text, categorical, bool; integers with
          ``task="classification"``): a class at every step (cross-entropy);
        - ``series_target=``: one label per series, a ``pd.Series``/mapping by id or a
          column constant within each series; classes or values as above. Trained on
          the whole series with the exact gradient: the head reads the final state and
          the mean and max of the outputs over time (``pool``), carried in the state
          (:class:`~vlrnn.models.SequenceModel`), in memory of one block;
        - ``target_cols=`` numbers with ``horizon=h``: at every step the next ``h``
          values from the inputs up to that step, the targets' own values among them.

    Missing (NaN) targets are left out of the loss (their steps still feed the model)
    and counted in a ``DataWarning``; losses and metrics divide by observed targets.

    Args:
        df: one row per (series, time step); series may have any lengths.
        id_col, time_col: series id and time columns.
        target_cols, series_target: what to predict (one of them).
        feature_cols: input columns (default: every column that is not id, time or target).
        task: ``"classification"`` or ``"regression"``; ``None`` infers it from the dtype
            (integers are refused as ambiguous).
        horizon: forecast this many steps ahead.
        season: the season length of the series (forecasts; e.g. 12 for monthly data):
            ``evaluate`` adds the seasonal naive baseline (``seasonal_naive_mase``, ...).
        cell, hidden_size, num_layers: recurrent model (``"lstm"``, ``"gru"``, ``"rnn"``,
            a model of :data:`vlrnn.models.MODELS`: ``"mingru"``, ``"minlstm"``,
            ``"lru"``, ``"mamba"``, ``"qrnn"``, or an ``nn.Module`` cell class).
        block_len: time steps per block of the exact-BPTT engine.
        batch_size: series per batch (series of similar lengths are batched together).
        epochs: training epochs; ``None``: about 600 optimizer steps (10 to 100 epochs)
            but at most 3 million training rows in all (:func:`auto_epochs`; a task of
            few, long series would otherwise run 100 long epochs: the token-class
            example gets 11 epochs of 253,134 rows, not 100), with early stopping after
            10 epochs without a lower validation loss, keeping the best epoch's weights
            (``recipe="classic"``); with ``recipe="steps"`` about ``steps`` (default
            :data:`~vlrnn.training._recipe.STEPS_BUDGET`) optimizer steps (10 to
            :data:`~vlrnn.training._recipe.STEPS_MAX_EPOCHS` epochs), no early stopping.
        lr: learning rate; ``None``: 1e-3 (AdamW) with ``recipe="steps"``; with
            ``"classic"`` (Adam) 1e-2 for per-step tasks (forecasts included), 3e-3 for
            series tasks. Per-step 1e-2 over the former 1e-3, same runs side by
            side (examples/results/tasks.md): token classes (30 files, 10 epochs)
            accuracy 0.706 vs 0.286 (3e-3: 0.436; context-free rule 0.598); fertility
            forecast MAE 0.054 vs 0.078 (mean of seeds 0-2; 3e-3: 0.055); CO2 per-step
            regression (60 epochs) RMSE 0.510 vs 0.611 ppm (3e-3: 0.579).
        val_fraction: share of whole series held out for validation (``0``: none;
            ``"auto"``: 0.2 with ``recipe="classic"``; with ``"steps"`` 0.2 from
            :data:`~vlrnn.training._recipe.MIN_VAL_SERIES` series on, else none).
            Forecasts (``horizon=``) with ``"auto"``: the last ``horizon`` steps of every
            series instead (:func:`~vlrnn.training._forecast_split.last_window_split`;
            US macro panel over 6 origins, seeds 0-2: MASE 2.83 / 2.88 / 2.85 against
            2.90 / 4.50 / 2.83 with 20% of the 12 series held out).
        seed: seeds the split, the model's initialisation, shuffling and dropout.
        scale: ``"global"``: inputs and numeric targets standardised with the training
            series' statistics per column; ``"series"``: each series by its own
            statistics (series tasks: the whole series; per-step tasks and forecasts:
            causal, row ``t`` by rows ``0..t`` only, forecasts as the change from the
            origin's ``anchor`` in units of the series' own mean one-step change, the last
            change in that unit among the inputs and the absolute error in it as the
            loss (MASE's own; :func:`~vlrnn.training._losses.task_losses`), the anchor
            added back on output; see :mod:`vlrnn.training._task_scaling`); ``None``:
            none; ``True``: the task's default
            (:func:`~vlrnn.training._task_scaling.default_scale`: ``"series"`` for
            forecasts, ``"global"`` otherwise, where levels often carry the target).
        anchor: what a ``scale="series"`` forecast is the change from: ``"holt"`` (the
            default, ``None``), at every origin a damped-trend exponential smoothing
            forecast of the series' own past, its smoothing settings chosen from a grid by
            their one-step errors so far (:func:`~vlrnn.data._smoothing.causal_holt`; the
            network learns the correction, as ES-RNN does on exponential smoothing), or
            ``"last"``, the last observed value. Rolling origins, MASE, seeds 0-2, one
            model (docs/benchmarks/real-data.md): US macro (6 origins) 2.63 / 2.67 / 2.63
            against 2.83 / 2.88 / 2.85 with ``"last"`` (damped ETS 2.65, drift 3.00).
        class_weight: ``"auto"`` (balanced weights when the largest class has at least
            twice the rows/series of the smallest), ``"balanced"``, ``None`` or a list.
        pool: what a series task's head reads, a subset of ``("last", "mean", "max")``;
            ``None``: all three, or ``("mean", "max")`` with a front end whose features
            go to the head too (``front`` ``skip``).
        front: ``"conv"``: causal convolutions before the recurrent layers, their
            features also read by the head (:class:`~vlrnn.models.ConvFront`, settings
            ``recipe.CONV_FRONT``, with two more dilated layers on long series:
            :func:`~vlrnn.training._recipe.front_config`; a dict overrides some settings);
            ``None``: none; ``"auto"``:
            ``"conv"`` for series classification, ``None`` otherwise.
        steps: optimizer steps ``epochs=None`` aims for (default ``AUTO_STEPS``, or
            ``STEPS_BUDGET`` with ``recipe="steps"``).
        weight_decay: AdamW's decoupled weight decay for ``recipe="steps"`` (default
            :data:`~vlrnn.training._recipe.WEIGHT_DECAY`).
        label_smoothing: of the cross-entropy of classification tasks (the target a mix
            of the class and the uniform distribution, as in ``nn.CrossEntropyLoss``);
            ``None``: :data:`~vlrnn.training._recipe.LABEL_SMOOTHING` (0.1) for series
            classification with ``recipe="steps"``, else 0
            (:func:`~vlrnn.training._recipe.label_share`). 0.1 against none on the
            development sets, seeds 0 / 1 / 2: ArrowHead 0.794 / 0.800 / 0.754 against
            0.771 / 0.749 / 0.714, JapaneseVowels 0.959 / 0.957 / 0.954 against 0.965 /
            0.946 / 0.957, mean of the 7 sets 0.958 / 0.957 / 0.950 against 0.952 /
            0.950 / 0.947 (benchmarks/results/real_data_clf_ls01*_seedS.md).
        head_dropout: series tasks: dropout on the pooled features the head reads
            (:class:`~vlrnn.models.SequenceModel`, training mode only); ``None``:
            :data:`~vlrnn.training._recipe.HEAD_DROPOUT` (0) with ``recipe="steps"``,
            else 0 (:func:`~vlrnn.training._recipe.dropout_share`). Off by default: 0.3
            lowered ArrowHead on seeds 0-2 (0.760 / 0.789 / 0.726 against 0.794 /
            0.800 / 0.754) and JapaneseVowels' seed 1 below 1-NN DTW's (0.943).
        recipe: ``"classic"``: Adam, constant learning rate, early stopping on the
            validation split; ``"steps"``: AdamW with weight decay, a cosine decay of
            the learning rate per epoch, gradient norm clipped to 1, the last weights
            kept (:mod:`vlrnn.training._recipe`); ``"auto"``: ``"steps"`` for series
            classification, ``"classic"`` otherwise (:func:`vlrnn.training._recipe.resolve`).
        ensemble: train this many models from seeds ``seed, seed + 1, ...`` on the same
            split and average them (:class:`~vlrnn.models.MeanOfModels`; class
            probabilities for classification); their histories are stacked with a
            ``member`` column. ``None``: :func:`~vlrnn.training._recipe.default_ensemble`,
            3 for forecasts, 1 otherwise. Member ``j`` checkpoints into
            ``checkpoint_dir/member<j>`` and resumes from ``resume/member<j>``
            (:mod:`vlrnn.training._members`).
        bidirectional: series tasks (``series_target=``) with ``cell`` ``"lstm"``,
            ``"gru"`` or ``"rnn"``: the encoder reads each whole series both ways
            (``vlrnn.Blockwise`` of a bidirectional rnn: the exact gradient; the rnn's
            own memory is flat in the length, but the whole series is one block for
            the rest: the conv front's activations and the ``(T, 2 hidden)`` outputs
            the head pools grow with it). Off by default: measured in
            docs/benchmarks/real-data.md.
        resume: a checkpoint folder/file (see ``checkpoint_dir``) to continue from
            (verified; a damaged ``last.pt`` falls back to ``last.prev.pt`` with a warning;
            an ensemble: its folder, one subfolder per member).
        trusted: allow full unpickling of the ``resume`` file (it can run code the file
            holds); only for files you trust. vlrnn's own files never need it.
        **trainer_options: passed to :class:`vlrnn.Trainer` (``checkpoint_dir``,
            ``progress``, ``device``, ``clip_grad_norm``, ``early_stopping_patience``,
            ``monitor``, ``scheduler``, ``log_dir`` for TensorBoard scalars, ...).

    Returns:
        :class:`~vlrnn.TrainedModel`; its history has the loss (scaled units)
        and, with validation, ``val_accuracy`` or ``val_mae``/``val_rmse`` (target units;
        for ``scale="series"`` forecasts in the scaled units the loss sees).

    >>> import numpy as np, pandas as pd
    >>> import vlrnn
    >>> rng = np.random.default_rng(0)
    >>> df = pd.DataFrame({"unit": np.repeat(["a", "b", "c"], 40), "t": np.tile(range(40), 3),
    ...                    "temp": rng.normal(size=120)})
    >>> df["load"] = df.groupby("unit")["temp"].cumsum()       # the target: a running sum
    >>> result = vlrnn.pack_and_train(df, id_col="unit", time_col="t", target_cols="load",
    ...                               hidden_size=8, num_layers=1, epochs=3, progress=False)
    >>> pred = result.predict(df)                              # aligned with df's rows
    >>> len(pred) == len(df), sorted(result.evaluate(df))[:3]
    (True, ['mae', 'persistence_mae', 'persistence_rmse'])
    """
    if "optimizer" in trainer_options:
        raise TypeError("pack_and_train builds the model itself, so it cannot take an "
                        "optimizer; pass lr=, or scheduler= as a callable optimizer -> scheduler")
    name = cell_name(cell)
    dtype = torch.get_default_dtype()
    spec = describe_task(df, id_col=id_col, time_col=time_col, target_cols=target_cols,
                         feature_cols=feature_cols, series_target=series_target, task=task,
                         horizon=horizon, season=season)
    level = spec.level
    ds, n_missing = task_dataset(df, spec, with_targets=True, series_target=series_target,
                                 min_length=1 if level == "series" else 2)
    if n_missing:
        n_all = len(df) * len(spec.target_cols)
        warnings.warn(f"{n_missing} of {n_all} target values are missing (NaN) in "
                      f"{list(spec.target_cols)}: left out of the loss and the metrics "
                      "(their steps still feed the model)", DataWarning, stacklevel=2)
    recipe, front = resolve(level, spec.kind, recipe, front)
    watch = trainer_options.get("early_stopping_patience") is not None  # needs a split
    last_window = spec.horizon is not None and isinstance(val_fraction, str) and \
        val_fraction == "auto"
    if last_window:  # forecasts: validated one window earlier, on every series
        train, val = last_window_split(ds, spec.horizon, len(spec.target_cols))
    else:
        val_fraction = val_share(val_fraction, len(ds), "classic" if watch else recipe)
        train, val = split_series(ds, val_fraction, seed=seed) if val_fraction else (ds, None)
    mode = check_scale(scale, default_scale(spec))
    spec = spec.fitted(train, Scalers.fit(train, spec, mode, anchor))
    scalers = spec.scalers
    # targets first: series-scaled forecasts read the raw inputs (level and scale)
    train = scalers.inputs(scalers.scale_targets(train, spec), spec)
    val = None if val is None else scalers.inputs(scalers.scale_targets(val, spec), spec)
    if lr is None:
        lr = STEPS_LR if recipe == "steps" else SERIES_LR if level == "series" else STEP_LR
    fc = front_config(front, float(np.median(train.lengths)))
    per_series = level == "series"
    train_loader = make_loader(train, batch_size=batch_size, shuffle=True, seed=seed,
                               per_series=per_series)
    val_loader = None if val is None else make_loader(val, batch_size=batch_size,
                                                      shuffle=False, per_series=per_series)
    if epochs is None:
        n_rows = int(sum(train.lengths))
        steps_recipe = recipe == "steps"
        epochs, cut = auto_epochs(len(train_loader), n_rows,
                                  steps or (STEPS_BUDGET if steps_recipe else None),
                                  STEPS_MAX_EPOCHS if steps_recipe else None)
        if cut and trainer_options.get("progress", True):
            print(f"vlrnn: epochs=None chose {epochs} epochs: {n_rows:,} training rows an "
                  f"epoch, {AUTO_ROWS:,} rows in all (pass epochs= for more)",
                  file=sys.stderr)
        if val_loader is not None and recipe == "classic":
            trainer_options.setdefault("early_stopping_patience", 10)
    if not isinstance(bidirectional, bool):
        raise TypeError(f"bidirectional must be True or False, got {bidirectional!r}")
    if bidirectional and (level != "series" or name not in FUSED):
        raise ValueError("bidirectional=True reads each whole series both ways: it needs a "
                         f"series task (series_target=) and cell 'lstm', 'gru' or 'rnn', got "
                         f"a {level} task and cell {name!r}")
    if ensemble is None:
        ensemble = default_ensemble(spec.horizon)
    if isinstance(ensemble, bool) or not isinstance(ensemble, (int, np.integer)) \
            or ensemble < 1:
        raise ValueError(f"ensemble must be an int >= 1 (models trained from seeds seed, "
                         f"seed + 1, ...) or None (the task's default), got {ensemble!r}")
    n_members = int(ensemble)
    checkpoint_dir = trainer_options.pop("checkpoint_dir", None)
    log_dir = trainer_options.pop("log_dir", None)
    if recipe == "steps":
        trainer_options.setdefault("scheduler", cosine_decay(epochs))
        trainer_options.setdefault("clip_grad_norm", CLIP_NORM)
    weight = None if spec.classes is None else class_weights(
        np.concatenate([y[:1, 0].numpy() if per_series else y[:, 0].numpy()
                        for y in train.ys]), len(spec.classes), class_weight)
    config = {  # the model and how it was trained (the task is in ``spec``)
        "n_features": train.n_features, "cell": name, "hidden_size": int(hidden_size),
        "num_layers": int(num_layers), "block_len": int(block_len),
        "batch_size": int(batch_size), "lr": float(lr),
        "val_fraction": "last window" if last_window else float(val_fraction),
        "seed": int(seed), "dtype": str(dtype).replace("torch.", ""),
        "pool": head_pool(pool, fc, DEFAULT_POOL) if per_series else None, "front": fc,
        "recipe": recipe, "ensemble": n_members, "bidirectional": bidirectional,
        "weight_decay": None if recipe != "steps" else
        float(WEIGHT_DECAY if weight_decay is None else weight_decay),
        "class_weight": None if weight is None else weight.tolist(),
        "label_smoothing": None if spec.kind != "classification" else
        float(label_share(label_smoothing, level, recipe)),
        "head_dropout": float(dropout_share(head_dropout, level, recipe)) if per_series
        else None}
    if val_loader is not None:
        trainer_options.setdefault("metrics", epoch_metrics(spec, block_len))
    members, histories = [], []
    for j in range(n_members):
        member_seed = seed + j
        if j:
            train_loader = make_loader(train, batch_size=batch_size, shuffle=True,
                                       seed=member_seed, per_series=per_series)
        files = member_files(j, n_members, checkpoint_dir, log_dir, resume)
        torch.manual_seed(member_seed)  # the model's initial weights depend on the seed alone
        model = build_model({**config, "ensemble": 1}, spec,
                            cell_class=None if isinstance(cell, str) else cell)
        optimizer = None if recipe != "steps" else torch.optim.AdamW(
            model.parameters(), lr=lr, weight_decay=config["weight_decay"])
        loss_fn, sequence_loss_fn = task_losses(model, spec, weight,
                                                config["label_smoothing"] or 0.0)
        trainer = Trainer(model, loss_fn, optimizer=optimizer, lr=lr, block_len=block_len,
                          seed=member_seed, config={**config, "task": spec.describe()},
                          scaler_state=scalers.state_dict(),
                          sequence_loss_fn=sequence_loss_fn,
                          reduction="observed" if loss_fn is not None else "mean",
                          checkpoint_dir=files["checkpoint_dir"], log_dir=files["log_dir"],
                          **trainer_options)
        history = trainer.fit(train_loader, val_loader, epochs=epochs,
                              resume=files["resume"], trusted=trusted)
        members.append(trainer.model)
        histories.append(history.assign(member=j) if n_members > 1 else history)
    if n_members == 1:
        return TrainedModel(trainer.model, history, spec, config, trainer)
    model = MeanOfModels(members, probabilities=spec.kind == "classification")
    history = pd.concat(histories, ignore_index=True)
    return TrainedModel(model, history, spec, config, trainer)

