"""``Trainer``: the block engine inside an ordinary optimisation loop.

Each batch ``(x, y)`` goes through :func:`vlrnn.block_loss` (exact BPTT gradient in
memory of one block), then ``loss.backward()`` and an optimizer step. Around that: a
validation loss streamed block by block, a per-epoch history, early stopping, atomic
checkpoints that a run can resume from bit for bit, and :func:`predict_blocks`, the
streaming forward pass used for inference.
"""
from __future__ import annotations

import math
import random
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from . import checkpoint as ckpt_io
from . import state as st
from .bptt import block_loss
from .engine import assemble_final
from .layout import Layout
from .loss import check_reduction
from .schedules import SCHEDULES

Batch = Union[torch.Tensor, PackedSequence]
HISTORY_COLUMNS = ["epoch", "train_loss", "val_loss", "seconds", "steps_per_s", "lr"]
CHECKPOINT_FORMAT = "vlrnn.Trainer/1"


# -- streaming inference ----------------------------------------------------------------------
def predict_blocks(model: nn.Module, x: Batch, state: Any = None, *, block_len: int = 256,
                   batch_first: Optional[bool] = None,
                   state_batch_dim: Optional[int] = None) -> Tuple[Batch, Any]:
    """Run ``model`` over ``x`` block by block, as the engine does, without a graph.

    The same result as ``model(x, state)`` in one call, but a long batch never holds
    more than one block's activations (outputs are kept: ``(N, K)`` rows).

    Args:
        model: called as ``model(x_block, state) -> (y_block, new_state)``.
        x: ``PackedSequence`` (sorted or ``enforce_sorted=False``) or dense ``(T, B, F)``
            (``(B, T, F)`` when batch-first); a dense numpy array or ``np.memmap`` is read
            block by block (see :mod:`vlrnn.streaming`) onto the model's device.
        state: initial state in the model's format and ``x``'s batch order (input order);
            ``None`` lets the model start from its zeros.
        block_len: time steps per model call.
        batch_first: dense ``x`` is ``(B, T, F)``; ``None`` follows ``model.batch_first``.
        state_batch_dim: batch dim of the state tensors; default as in
            :func:`vlrnn.block_loss` (1 for ``nn.RNNBase``, else ``model.state_batch_dim``,
            else 0).

    Returns:
        ``(y, final_state)``: ``y`` in ``x``'s layout (a ``PackedSequence`` with ``x``'s
        ``batch_sizes``, ``sorted_indices`` and ``unsorted_indices``, or a dense tensor with
        ``x``'s time and batch dims); ``final_state`` each sequence's state after its own
        last step, in the model's format and ``x``'s batch order.

    Runs under ``torch.no_grad()``; the model's train/eval mode is left as it is.
    """
    if batch_first is None:
        attr = getattr(getattr(model, "module", model), "batch_first", False)
        batch_first = attr if isinstance(attr, bool) else False
    if state_batch_dim is None:
        state_batch_dim = st.default_batch_dim(model) if isinstance(model, nn.Module) else 0
    d = int(state_batch_dim)
    param = next(iter(model.parameters()), None) if isinstance(model, nn.Module) else None
    lay = Layout(x, None, bool(batch_first), device=None if param is None else param.device)
    blocks = lay.blocks(block_len)
    spec = None
    cur: Optional[List[torch.Tensor]] = None
    if state is not None:
        leaves, spec = st.flatten(state)
        st.check_batch(leaves, d, lay.n_batch, "initial state")
        # Blocks run in the packed (sorted) order, as the engine runs them.
        cur = [lay.to_sorted(t, d) for t in leaves]
    outs: List[torch.Tensor] = []
    enders: List[Optional[List[torch.Tensor]]] = []
    with torch.no_grad():
        for blk in blocks:
            inp = lay.model_input(lay.part(lay.x_data, blk), blk)
            res = model(inp, None if cur is None else st.unflatten(cur, spec))
            if not isinstance(res, (tuple, list)) or len(res) != 2:
                raise TypeError("model must return a pair (y, new_state) as nn.LSTM does")
            y, new_state = res
            leaves, spec = st.flatten(new_state)
            st.check_batch(leaves, d, blk.n_in,
                           f"state returned by the model for steps {blk.start}:{blk.stop}")
            outs.append(y.data if isinstance(y, PackedSequence) else y)
            # Sequences that end in this block are rows [n_out, n_in) of its state.
            enders.append([t.narrow(d, blk.n_out, blk.n_in - blk.n_out) for t in leaves]
                          if blk.n_out < blk.n_in else None)
            cur = [t.narrow(d, 0, blk.n_out) for t in leaves]
    final = [lay.to_input(t, d) for t in assemble_final(enders, d)]
    if lay.packed:
        y_all: Batch = PackedSequence(torch.cat(outs), x.batch_sizes, x.sorted_indices,
                                      x.unsorted_indices)
    else:
        y_all = torch.cat(outs, dim=1 if lay.batch_first else 0)
    return y_all, st.unflatten(final, spec)


# -- helpers -----------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy's global generator and Python's ``random``."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _resolve_device(device) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _n_rows(x: Batch) -> int:
    """Valid (sequence, step) rows of a batch: what steps/s counts."""
    if isinstance(x, PackedSequence):
        return int(x.data.shape[0])
    return int(x.shape[0] * x.shape[1])


def _n_seqs(x: Batch, batch_first: bool) -> int:
    if isinstance(x, PackedSequence):
        return int(x.batch_sizes[0])
    return int(x.shape[0] if batch_first else x.shape[1])


def _move(t: Any, device: torch.device, dtype: Optional[torch.dtype]) -> Any:
    """``t`` on ``device``; floating data cast to the model's ``dtype`` (integer targets,
    e.g. class ids, keep theirs)."""
    if isinstance(t, PackedSequence):
        data = t.data
        cast = dtype if (dtype is not None and data.is_floating_point()) else data.dtype
        return t.to(device=device, dtype=cast)
    if isinstance(t, torch.Tensor):
        cast = dtype if (dtype is not None and t.is_floating_point()) else t.dtype
        return t.to(device=device, dtype=cast)
    return t


def _loader_objects(loader: Any) -> List[Any]:
    """The loader and its (batch) sampler: where ``set_epoch`` and generators may live."""
    objs = [loader]
    for name in ("batch_sampler", "sampler"):
        obj = getattr(loader, name, None)
        if obj is not None:
            objs.append(obj)
            inner = getattr(obj, "sampler", None)  # BatchSampler(RandomSampler(...))
            if inner is not None:
                objs.append(inner)
    seen, out = set(), []
    for o in objs:
        if id(o) not in seen:
            seen.add(id(o))
            out.append(o)
    return out


def _set_epoch(loader: Any, epoch: int) -> None:
    """Make the loader's shuffling a function of (seed, epoch) where it supports that
    (``LengthBucketSampler``, ``DistributedSampler``)."""
    for obj in _loader_objects(loader):
        fn = getattr(obj, "set_epoch", None)
        if callable(fn):
            fn(epoch)


def _loader_generators(loader: Any) -> List[torch.Generator]:
    """``torch.Generator`` objects a loader shuffles with (a ``DataLoader(shuffle=True,
    generator=g)``): their state is checkpointed so that a resumed run draws the same
    order."""
    gens, seen = [], set()
    for obj in _loader_objects(loader):
        g = getattr(obj, "generator", None)
        if isinstance(g, torch.Generator) and id(g) not in seen:
            seen.add(id(g))
            gens.append(g)
    return gens


def _is_scheduler(obj: Any) -> bool:
    return hasattr(obj, "step") and hasattr(obj, "state_dict") and hasattr(obj, "optimizer")


def _config_diff(saved: Dict[str, Any], now: Dict[str, Any]) -> List[str]:
    diffs = []
    for k in sorted(set(saved) | set(now), key=str):
        a, b = saved.get(k, "<missing>"), now.get(k, "<missing>")
        if a != b:
            diffs.append(f"{k}: checkpoint {a!r}, now {b!r}")
    return diffs


def _short(err: Exception, lines: int = 4) -> str:
    text = str(err).strip().splitlines()
    return " ".join(s.strip() for s in text[:lines]) + (" ..." if len(text) > lines else "")


# -- the trainer -------------------------------------------------------------------------------
class Trainer:
    """Train a recurrent model with exact BPTT over long ragged batches.

    Args:
        model: ``model(x, state) -> (y, new_state)`` (``nn.LSTM``, ``WithHead``, ...);
            moved to ``device``.
        loss_fn: per-row loss ``loss_fn(output_rows, target_rows) -> (R, ...)``, e.g.
            ``nn.MSELoss(reduction="none")``; see :func:`vlrnn.block_loss`.
        optimizer: default ``torch.optim.Adam(params, lr=lr)`` over the trainable
            parameters of ``model`` (and of ``loss_fn`` if it is a module).
        lr: learning rate of the default optimizer.
        scheduler: an LR scheduler built on ``optimizer``, or a callable
            ``optimizer -> scheduler``; stepped once per epoch (``ReduceLROnPlateau`` with
            the validation loss, or the training loss without validation).
        block_len: time steps per block for :func:`vlrnn.block_loss`.
        reduction: ``"mean"``, ``"sum"`` or ``"seq_mean"``, as in ``block_loss``.
        schedule: which block boundaries the engine keeps (``"flat"``, ``"two_level"``,
            ``"recursive"``; :data:`vlrnn.schedules.SCHEDULES`), as in ``block_loss``.
        clip_grad_norm: clip the gradient's total norm to this before each step.
        early_stopping_patience: stop after this many epochs without a lower validation
            loss (needs ``val_loader``).
        restore_best: with early stopping, load the best epoch's weights back at the end
            of ``fit`` (kept in CPU memory meanwhile).
        checkpoint_dir: write ``last.pt`` after every epoch and ``best.pt`` when the
            validation loss improves (atomically); ``fit(resume=...)`` continues from them.
        progress: a tqdm bar per epoch; also off when stderr is not a terminal.
        seed: seeds torch, numpy and ``random`` now (model init, dropout, shuffling).
        device: ``"cpu"``, ``"cuda"``, ...; ``None``: CUDA if available, else CPU.
        scaler_state: anything to store in checkpoints with the weights (e.g. the data
            scalers' ``state_dict()``), so a checkpoint is usable on its own.
        config: a dict of plain values describing the run; stored in checkpoints and
            compared on resume (a mismatch is a ``ValueError``).

    Batches: every item of a loader is ``(x, y)``, ``x`` a ``PackedSequence`` or a dense
    ``(T, B, F)`` tensor (``(B, T, F)`` for a batch-first model), ``y`` the targets in the
    same layout. They are moved to ``device``; floating data is cast to the model's dtype.

    Losses in the history: for ``"mean"`` (and ``"sum"``) the mean loss per row over the
    epoch (batches weighted by their number of rows); for ``"seq_mean"`` the mean per
    sequence (weighted by sequences).

    Attributes:
        history: ``pandas.DataFrame``, one row per finished epoch: ``epoch`` (from 1),
            ``train_loss``, ``val_loss`` (NaN without validation), ``seconds`` (wall time of
            the epoch), ``steps_per_s`` (training rows, i.e. time steps of all sequences,
            per second) and ``lr`` (learning rate used during the epoch).
        best_epoch, best_val_loss: the epoch with the lowest validation loss so far.
        stopped_early: whether the last ``fit`` stopped on patience.
    """

    def __init__(self, model: nn.Module, loss_fn: Optional[Callable], *,
                 optimizer: Optional[torch.optim.Optimizer] = None, lr: float = 1e-3,
                 scheduler: Any = None, block_len: int = 256, reduction: str = "mean",
                 schedule: str = "flat", clip_grad_norm: Optional[float] = None,
                 early_stopping_patience: Optional[int] = None, restore_best: bool = True,
                 checkpoint_dir: Union[str, Path, None] = None, progress: bool = True,
                 seed: int = 0, device: Union[str, torch.device, None] = None,
                 scaler_state: Any = None, config: Optional[Dict[str, Any]] = None):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        self.reduction = check_reduction(reduction)
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}; expected one of "
                             + ", ".join(repr(k) for k in SCHEDULES))
        self.schedule = schedule
        if early_stopping_patience is not None and (
                isinstance(early_stopping_patience, bool)
                or not isinstance(early_stopping_patience, int) or early_stopping_patience < 1):
            raise ValueError(f"early_stopping_patience must be an int >= 1 or None, got "
                             f"{early_stopping_patience!r}")
        if clip_grad_norm is not None and not clip_grad_norm > 0:
            raise ValueError(f"clip_grad_norm must be > 0 or None, got {clip_grad_norm!r}")
        if config is not None and not isinstance(config, dict):
            raise TypeError(f"config must be a dict or None, got {type(config).__name__}")
        self.seed = int(seed)
        seed_everything(self.seed)
        self.device = _resolve_device(device)
        self.model = model.to(self.device)
        self.loss_fn = loss_fn.to(self.device) if isinstance(loss_fn, nn.Module) else loss_fn
        self.block_len = block_len
        self.clip_grad_norm = clip_grad_norm
        self.patience = early_stopping_patience
        self.restore_best = bool(restore_best)
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.progress = bool(progress)
        self.scaler_state = scaler_state
        self.config = config
        self.params = self._trainable()
        if optimizer is None:
            if not self.params:
                raise ValueError("model has no trainable parameters")
            optimizer = torch.optim.Adam(self.params, lr=lr)
        self.optimizer = optimizer
        if scheduler is not None and not _is_scheduler(scheduler):
            if not callable(scheduler):
                raise TypeError("scheduler must be an LR scheduler or a callable "
                                f"optimizer -> scheduler, got {type(scheduler).__name__}")
            scheduler = scheduler(self.optimizer)
        if scheduler is not None and getattr(scheduler, "optimizer", None) is not self.optimizer:
            raise ValueError("scheduler was built on another optimizer than the Trainer's; "
                             "pass optimizer= too, or pass scheduler as a callable "
                             "optimizer -> scheduler")
        self.scheduler = scheduler
        self._rows: List[Dict[str, float]] = []
        self.best_epoch: Optional[int] = None
        self.best_val_loss = math.inf
        self._best_state: Optional[Dict[str, torch.Tensor]] = None
        self._bad_epochs = 0
        self.stopped_early = False

    # -- public ------------------------------------------------------------------------------
    @property
    def history(self) -> pd.DataFrame:
        return pd.DataFrame(self._rows, columns=HISTORY_COLUMNS)

    def fit(self, train_loader: Iterable, val_loader: Optional[Iterable] = None,
            epochs: int = 10, resume: Union[str, Path, None] = None) -> pd.DataFrame:
        """Train until ``epochs`` epochs are done in all (or early stopping).

        Args:
            train_loader: iterable of ``(x, y)`` batches; if it (or its batch sampler /
                sampler) has ``set_epoch``, it is called with the 0-based epoch first.
            val_loader: batches to compute the validation loss on after each epoch.
            epochs: total number of epochs, counting those of a resumed run.
            resume: a checkpoint file or a folder holding ``last.pt``: restore weights,
                optimizer, scheduler, history and random-number state, and continue with
                the next epoch; the result equals that of an uninterrupted run. A finished
                run (all epochs done, or stopped early) returns its history untrained.

        Returns:
            the history (also ``self.history``). Each call without ``resume`` starts a new
            history (from the current weights and optimizer state).
        """
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
            raise ValueError(f"epochs must be an int >= 0, got {epochs!r}")
        if self.patience is not None and val_loader is None:
            raise ValueError("early_stopping_patience needs a val_loader to watch")
        done = 0
        # A fit without resume is a new run from the current weights and optimizer state.
        self._rows, self._best_state, self._bad_epochs = [], None, 0
        self.best_epoch, self.best_val_loss, self.stopped_early = None, math.inf, False
        if resume is not None:
            done = self._resume(resume, train_loader)
            if self.stopped_early or done >= epochs:
                self._finish()
                return self.history
        for epoch in range(done + 1, epochs + 1):
            t0 = time.perf_counter()
            lr = float(self.optimizer.param_groups[0]["lr"])
            _set_epoch(train_loader, epoch - 1)
            train_loss, steps_per_s = self._train_epoch(train_loader, epoch)
            val_loss = math.nan
            if val_loader is not None:
                _set_epoch(val_loader, epoch - 1)
                val_loss = self.evaluate(val_loader)
            self._rows.append(dict(epoch=epoch, train_loss=train_loss, val_loss=val_loss,
                                   seconds=time.perf_counter() - t0, steps_per_s=steps_per_s,
                                   lr=lr))
            if self.scheduler is not None:
                if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    self.scheduler.step(val_loss if val_loader is not None else train_loss)
                else:
                    self.scheduler.step()
            improved = val_loader is not None and val_loss < self.best_val_loss
            if improved:
                self.best_epoch, self.best_val_loss = epoch, val_loss
                self._bad_epochs = 0
                if self.patience is not None:
                    self._best_state = {k: v.detach().to("cpu", copy=True)
                                        for k, v in self.model.state_dict().items()}
            elif val_loader is not None:
                self._bad_epochs += 1
            self.stopped_early = self.patience is not None and self._bad_epochs >= self.patience
            if self.checkpoint_dir is not None:
                self._save_checkpoints(epoch, train_loader, improved)
            if self.stopped_early:
                break
        self._finish()
        return self.history

    @torch.no_grad()
    def evaluate(self, loader: Iterable) -> float:
        """Loss over all batches of ``loader`` in eval mode, no graph (memory of one block).

        Batches are weighted by their number of rows (sequences for ``"seq_mean"``), so
        the result is the mean loss per row of the whole set.
        """
        was_training = self.model.training
        self.model.eval()
        try:
            total, weight = 0.0, 0.0
            for i, batch in enumerate(loader):
                x, y = self._batch(batch, i)
                out = block_loss(self.model, self.loss_fn, x, y, block_len=self.block_len,
                                 reduction=self.reduction)
                c, w = self._weigh(float(out.loss), x)
                total, weight = total + c, weight + w
        finally:
            self.model.train(was_training)
        if weight == 0:
            raise ValueError("the validation loader yielded no batches")
        return total / weight

    def predict(self, x: Batch, state: Any = None, block_len: Optional[int] = None
                ) -> Tuple[Batch, Any]:
        """The model's output over ``x`` in eval mode, streamed block by block.

        ``x``: ``PackedSequence`` or dense ``(T, B, F)`` (``(B, T, F)`` for a batch-first
        model), moved to the trainer's device; ``state``: initial state in the model's
        format and ``x``'s batch order, or ``None``. Returns ``(y, final_state)`` with
        ``y`` in ``x``'s layout and batch order; see :func:`predict_blocks`.
        """
        x = _move(x, self.device, self._dtype())
        was_training = self.model.training
        self.model.eval()
        try:
            return predict_blocks(self.model, x, state,
                                  block_len=block_len or self.block_len)
        finally:
            self.model.train(was_training)

    # -- one epoch ---------------------------------------------------------------------------
    def _train_epoch(self, loader: Iterable, epoch: int) -> Tuple[float, float]:
        from tqdm.auto import tqdm

        self.model.train()
        # disable=None: tqdm turns itself off when stderr is not a terminal (CI logs)
        bar = tqdm(loader, desc=f"epoch {epoch}", unit="batch", leave=True,
                   disable=None if self.progress else True, file=sys.stderr)
        total, weight, rows = 0.0, 0.0, 0
        start = time.perf_counter()  # steps/s counts loading time too: it is throughput
        try:
            for i, batch in enumerate(bar):
                x, y = self._batch(batch, i)
                self.optimizer.zero_grad(set_to_none=True)
                out = block_loss(self.model, self.loss_fn, x, y, block_len=self.block_len,
                                 reduction=self.reduction, schedule=self.schedule)
                value = float(out.loss.detach())
                if not math.isfinite(value):
                    raise FloatingPointError(
                        f"loss is {value} at epoch {epoch}, batch {i} (0-based), before the "
                        "optimizer step; check the data for NaN/inf or extreme values, lower "
                        "lr, or set clip_grad_norm")
                if out.loss.requires_grad:
                    out.loss.backward()
                if self.clip_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(self.params, self.clip_grad_norm)
                self.optimizer.step()
                c, w = self._weigh(value, x)
                total, weight = total + c, weight + w
                rows += _n_rows(x)
                busy = time.perf_counter() - start
                bar.set_postfix(loss=f"{total / weight:.4g}",
                                steps_s=f"{rows / max(busy, 1e-9):.3g}", refresh=False)
        finally:
            bar.close()
        if weight == 0:
            raise ValueError("the training loader yielded no batches")
        return total / weight, rows / max(time.perf_counter() - start, 1e-9)

    def _batch(self, batch: Any, i: int) -> Tuple[Batch, Any]:
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise TypeError(f"batch {i}: every batch must be a pair (x, y), got "
                            f"{type(batch).__name__}"
                            + (f" of length {len(batch)}" if isinstance(batch, (tuple, list))
                               else ""))
        dtype = self._dtype()
        return _move(batch[0], self.device, dtype), _move(batch[1], self.device, dtype)

    def _weigh(self, loss: float, x: Batch) -> Tuple[float, float]:
        """(contribution, weight) of one batch to the epoch's average loss."""
        if self.reduction == "seq_mean":
            n = _n_seqs(x, bool(getattr(self.model, "batch_first", False)))
            return loss * n, float(n)
        n = _n_rows(x)
        return (loss * n if self.reduction == "mean" else loss), float(n)

    def _dtype(self) -> Optional[torch.dtype]:
        for p in self.model.parameters():
            if p.is_floating_point():
                return p.dtype
        return None

    def _trainable(self) -> List[torch.nn.Parameter]:
        params, seen = [], set()
        for mod in (self.model, self.loss_fn):
            if isinstance(mod, nn.Module):
                for p in mod.parameters():
                    if p.requires_grad and id(p) not in seen:
                        seen.add(id(p))
                        params.append(p)
        return params

    def _finish(self) -> None:
        if self.patience is not None and self.restore_best and self._best_state is not None:
            self.model.load_state_dict(self._best_state)

    # -- checkpoints -------------------------------------------------------------------------
    def _checkpoint(self, epoch: int, loader: Any) -> Dict[str, Any]:
        from . import __version__

        best_state = None
        if self.patience is not None and self.best_epoch != epoch:
            best_state = self._best_state  # the current weights are the best otherwise
        return {
            "format": CHECKPOINT_FORMAT,
            "vlrnn_version": __version__,
            "epoch": epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "history": [dict(r) for r in self._rows],
            "rng": ckpt_io.rng_state(),
            "loader_rng": [g.get_state() for g in _loader_generators(loader)],
            "config": self.config,
            "scaler_state": self.scaler_state,
            "seed": self.seed,
            "best": {"epoch": self.best_epoch, "val_loss": self.best_val_loss,
                     "bad_epochs": self._bad_epochs, "state": best_state},
            "stopped_early": self.stopped_early,
        }

    def _save_checkpoints(self, epoch: int, loader: Any, improved: bool) -> None:
        data = self._checkpoint(epoch, loader)
        ckpt_io.save_atomic(data, self.checkpoint_dir / ckpt_io.LAST)
        if improved:
            ckpt_io.save_atomic(data, self.checkpoint_dir / ckpt_io.BEST)

    def _resume(self, where: Union[str, Path], loader: Any) -> int:
        path = ckpt_io.resolve(where)
        data = ckpt_io.load(path)
        if data.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path} is not a vlrnn Trainer checkpoint (format "
                             f"{data.get('format')!r}, expected {CHECKPOINT_FORMAT!r})")
        saved_cfg = data.get("config")
        if self.config is not None and saved_cfg is not None and saved_cfg != self.config:
            raise ValueError(f"checkpoint {path} was written by a run with another config: "
                             + "; ".join(_config_diff(saved_cfg, self.config)))
        try:
            self.model.load_state_dict(data["model"])
        except RuntimeError as err:
            raise ValueError(f"checkpoint {path} does not match this model: "
                             f"{_short(err)}") from None
        try:
            self.optimizer.load_state_dict(data["optimizer"])
        except (ValueError, KeyError, RuntimeError) as err:
            raise ValueError(f"checkpoint {path}: its optimizer state does not fit this "
                             f"optimizer ({type(self.optimizer).__name__}): "
                             f"{_short(err)}") from None
        sched = data.get("scheduler")
        if (sched is None) != (self.scheduler is None):
            raise ValueError(f"checkpoint {path} was written "
                             f"{'without' if sched is None else 'with'} an LR scheduler, "
                             f"this Trainer has {'one' if sched is None else 'none'}")
        if sched is not None:
            self.scheduler.load_state_dict(sched)
        self._rows = [dict(r) for r in data.get("history", [])]
        best = data.get("best", {})
        self.best_epoch = best.get("epoch")
        self.best_val_loss = float(best.get("val_loss", math.inf))
        self._bad_epochs = int(best.get("bad_epochs", 0))
        self._best_state = best.get("state")
        epoch = int(data["epoch"])
        if self._best_state is None and self.patience is not None and self.best_epoch == epoch:
            self._best_state = {k: v.detach().to("cpu", copy=True)
                                for k, v in self.model.state_dict().items()}
        self.stopped_early = bool(data.get("stopped_early", False))
        ckpt_io.set_rng_state(data["rng"])
        gens = _loader_generators(loader)
        saved = data.get("loader_rng", [])
        if len(saved) == len(gens):
            for g, s in zip(gens, saved):
                g.set_state(s)
        return epoch
