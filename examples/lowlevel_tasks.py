"""The three tasks of the examples written with vlrnn's lower-level API (``block_loss``).

``series_classification.py``, ``forecasting.py`` and ``step_classification.py`` train
through the one-call API (``vlrnn.pack_and_train(..., series_target= | task= | horizon=)``).
Where the installed vlrnn does not have those tasks yet (``one_call_supports``), they fall
back on these functions, which do the same with a plain loop over
``vlrnn.block_loss``: an ``nn.LSTM`` read by a linear head, Adam, length-bucketed packed
batches, features standardised with the training series' statistics.

* series classification: cross-entropy on the head of each series' final state
  (``out.state``, each series at its own last step), ``loss_fn=None``;
* per-step classification: cross-entropy on every step (``loss_fn`` on the rows);
* forecasting: at every step, the next ``h`` values minus the current one (scaled), MSE
  on the steps whose ``h`` next values exist.
"""
from __future__ import annotations

import inspect
from typing import Callable, List, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_sequence

import vlrnn
from vlrnn.data import LengthBucketSampler


def one_call_supports(*names: str) -> bool:
    """Whether ``vlrnn.pack_and_train`` takes all of the keyword arguments ``names``."""
    params = inspect.signature(vlrnn.pack_and_train).parameters
    return all(n in params for n in names)


def standardise(train: Sequence[np.ndarray]) -> Callable[[np.ndarray], torch.Tensor]:
    """A function ``(T, F) array -> (T, F) float32 tensor`` scaling by the training rows'
    mean and standard deviation."""
    rows = np.concatenate(list(train))
    mean, std = rows.mean(0), rows.std(0)
    std[std == 0] = 1.0
    return lambda a: torch.as_tensor((np.asarray(a, dtype=np.float64) - mean) / std,
                                     dtype=torch.float32)


class Net(nn.Module):
    """``nn.LSTM`` + linear head; ``model(x, state) -> (head(y), state)`` for per-step
    losses, ``model.rnn`` alone for a loss on the final state."""

    state_batch_dim = 1

    def __init__(self, n_in: int, hidden: int, n_out: int, layers: int = 1):
        super().__init__()
        self.rnn = nn.LSTM(n_in, hidden, num_layers=layers)
        self.head = nn.Linear(hidden, n_out)

    def forward(self, x, state=None):
        y, state = self.rnn(x, state)
        return y._replace(data=self.head(y.data)), state


def _batches(n_items: Sequence[int], batch_size: int, epoch: int, seed: int, shuffle=True):
    sampler = LengthBucketSampler(list(n_items), batch_size, shuffle=shuffle, seed=seed)
    sampler.set_epoch(epoch)
    return list(sampler)


def _train(model: nn.Module, step: Callable[[List[int]], torch.Tensor], lengths, epochs: int,
           lr: float, batch_size: int, seed: int, log: Callable[[str], None]) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for epoch in range(epochs):
        total, n = 0.0, 0
        for idx in _batches(lengths, batch_size, epoch, seed):
            opt.zero_grad(set_to_none=True)
            loss = step(idx)
            loss.backward()                      # exact BPTT through every series
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            total, n = total + float(loss.detach()) * len(idx), n + len(idx)
        if epoch == 0 or (epoch + 1) % max(1, epochs // 5) == 0 or epoch + 1 == epochs:
            log(f"  epoch {epoch + 1}/{epochs}: train loss {total / n:.4f}")


def fit_series_classifier(xs: Sequence[np.ndarray], labels: Sequence, *, hidden: int = 64,
                          epochs: int = 40, lr: float = 3e-3, batch_size: int = 16,
                          block_len: int = 256, seed: int = 0, log=print
                          ) -> Callable[[Sequence[np.ndarray]], np.ndarray]:
    """Train on ``xs`` (``(T_i, F)`` arrays) and one label per series; returns
    ``predict(xs) -> (N,) labels``."""
    torch.manual_seed(seed)
    classes = sorted(set(labels), key=str)
    code = {c: k for k, c in enumerate(classes)}
    y = torch.tensor([code[c] for c in labels])
    scale = standardise(xs)
    data = [scale(x) for x in xs]
    model = Net(data[0].shape[1], hidden, len(classes))

    def logits_of(batch: List[torch.Tensor]) -> torch.Tensor:
        out = vlrnn.block_loss(model.rnn, None, pack_sequence(batch, enforce_sorted=False),
                               None, block_len=block_len)
        return model.head(out.state[0][-1])      # (B, classes): final state, batch order

    def step(idx: List[int]) -> torch.Tensor:
        return nn.functional.cross_entropy(logits_of([data[i] for i in idx]), y[idx])

    _train(model, step, [len(x) for x in data], epochs, lr, batch_size, seed, log)

    @torch.no_grad()
    def predict(new: Sequence[np.ndarray]) -> np.ndarray:
        d = [scale(x) for x in new]
        out = np.empty(len(d), dtype=object)
        for i0 in range(0, len(d), 256):
            k = logits_of(d[i0:i0 + 256]).argmax(-1).tolist()
            out[i0:i0 + len(k)] = [classes[j] for j in k]
        return out

    return predict


def fit_step_classifier(xs: Sequence[np.ndarray], ys: Sequence[np.ndarray], *, hidden: int = 64,
                        epochs: int = 10, lr: float = 3e-3, batch_size: int = 8,
                        block_len: int = 256, seed: int = 0, log=print
                        ) -> Callable[[Sequence[np.ndarray]], List[np.ndarray]]:
    """Train on ``xs`` (``(T_i, F)``) and per-step labels ``ys`` (``(T_i,)``); returns
    ``predict(xs) -> list of (T_i,) label arrays``."""
    torch.manual_seed(seed)
    classes = sorted(set(np.concatenate(list(ys)).tolist()), key=str)
    code = {c: k for k, c in enumerate(classes)}
    scale = standardise(xs)
    data = [scale(x) for x in xs]
    targets = [torch.tensor([code[c] for c in y.tolist()]) for y in ys]
    model = Net(data[0].shape[1], hidden, len(classes))
    ce = nn.CrossEntropyLoss(reduction="none")

    def step(idx: List[int]) -> torch.Tensor:
        x = pack_sequence([data[i] for i in idx], enforce_sorted=False)
        t = pack_sequence([targets[i] for i in idx], enforce_sorted=False)
        return vlrnn.block_loss(model, ce, x, t, block_len=block_len).loss

    _train(model, step, [len(x) for x in data], epochs, lr, batch_size, seed, log)

    @torch.no_grad()
    def predict(new: Sequence[np.ndarray]) -> List[np.ndarray]:
        out = []
        for x in new:
            y, _ = model(pack_sequence([scale(x)]), None)
            out.append(np.array(classes, dtype=object)[y.data.argmax(-1).numpy()])
        return out

    return predict


def fit_forecaster(series: Sequence[np.ndarray], horizon: int, *, hidden: int = 64,
                   epochs: int = 60, lr: float = 3e-3, batch_size: int = 16,
                   block_len: int = 256, seed: int = 0, log=print
                   ) -> Callable[[Sequence[np.ndarray]], np.ndarray]:
    """Train on univariate ``series`` (``(T_i,)``) to predict, at every step, the next
    ``horizon`` values from the values so far; returns ``forecast(series) -> (N, horizon)``,
    the ``horizon`` values after each series' last one."""
    torch.manual_seed(seed)
    allv = np.concatenate(list(series))
    mean, std = float(allv.mean()), float(allv.std()) or 1.0
    steps = np.concatenate([np.diff(s) for s in series if len(s) > 1])
    dstd = float(steps.std()) or 1.0           # scale of one step's change

    def inputs(s: np.ndarray) -> torch.Tensor:
        d = np.r_[0.0, np.diff(s)]
        return torch.tensor(np.stack([(s - mean) / std, d / dstd], 1), dtype=torch.float32)

    usable = [s for s in series if len(s) > horizon]
    xs = [inputs(s[:-horizon]) for s in usable]  # steps whose next ``horizon`` values exist
    ys = []
    for s in usable:
        T = len(s) - horizon
        ahead = np.stack([s[1 + k:T + 1 + k] for k in range(horizon)], 1)  # (T, h)
        ys.append(torch.tensor((ahead - s[:T, None]) / dstd, dtype=torch.float32))
    model = Net(2, hidden, horizon)
    mse = nn.MSELoss(reduction="none")

    def step(idx: List[int]) -> torch.Tensor:
        x = pack_sequence([xs[i] for i in idx], enforce_sorted=False)
        t = pack_sequence([ys[i] for i in idx], enforce_sorted=False)
        return vlrnn.block_loss(model, mse, x, t, block_len=block_len).loss

    _train(model, step, [len(x) for x in xs], epochs, lr, batch_size, seed, log)

    @torch.no_grad()
    def forecast(new: Sequence[np.ndarray]) -> np.ndarray:
        out = np.empty((len(new), horizon))
        for i, s in enumerate(new):
            y, _ = model(pack_sequence([inputs(np.asarray(s, dtype=float))]), None)
            out[i] = s[-1] + y.data[-1].numpy() * dstd
        return out

    return forecast


def accuracy(pred: Sequence, truth: Sequence) -> float:
    pred, truth = np.asarray(pred, dtype=object), np.asarray(truth, dtype=object)
    return float((pred == truth).mean())


def majority_accuracy(train_labels: Sequence, truth: Sequence) -> Tuple[object, float]:
    values, counts = np.unique(np.asarray(train_labels, dtype=str), return_counts=True)
    top = values[counts.argmax()]
    return top, float((np.asarray(truth, dtype=str) == top).mean())
