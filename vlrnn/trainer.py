"""``Trainer``: the block engine inside an ordinary optimisation loop.

Each batch ``(x, y)`` goes through :func:`vlrnn.block_loss` (exact BPTT gradient in
memory of one block), then ``loss.backward()`` and an optimizer step. Around that: a
validation loss streamed block by block, a per-epoch history, early stopping, atomic
checkpoints that a run can resume from bit for bit, and :func:`predict_blocks`, the
streaming forward pass used for inference.
"""
from __future__ import annotations

import math
import os
import random
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from . import checkpoint as ckpt_io
from . import distributed as dd
from .blocks import check_block_len
from .bptt import block_loss, block_outputs
from .loss import check_reduction
from .schedules import SCHEDULES

Batch = Union[torch.Tensor, PackedSequence]
HISTORY_COLUMNS = ["epoch", "train_loss", "val_loss", "seconds", "steps_per_s", "lr",
                   "skipped"]
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
    return block_outputs(model, x, block_len=block_len, state=state, batch_first=batch_first,
                         state_batch_dim=state_batch_dim)


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


def _nonfinite_grad(named: Sequence[Tuple[str, torch.Tensor]]) -> Optional[str]:
    """Name of the first parameter whose gradient holds NaN/inf, or ``None``. One
    device-to-host sync per device, not per parameter."""
    by_device: Dict[torch.device, List[Tuple[str, torch.Tensor]]] = {}
    for name, p in named:
        g = p.grad
        if g is not None:
            by_device.setdefault(g.device, []).append((name, g._values() if g.is_sparse else g))
    for items in by_device.values():
        if bool(torch.stack([torch.isfinite(g).all() for _, g in items]).all()):
            continue
        for name, g in items:
            if not bool(torch.isfinite(g).all()):
                return name
    return None


# Messages of the allocators: CUDA ("CUDA out of memory"), CPU ("DefaultCPUAllocator: not
# enough memory"), MPS ("MPS backend out of memory"), and the OS via Python.
_OOM_TEXT = ("out of memory", "not enough memory", "can't allocate memory",
             "cannot allocate memory")
_OOM_TYPES: Tuple[type, ...] = tuple(
    t for t in (MemoryError, getattr(torch, "OutOfMemoryError", None),
                getattr(torch.cuda, "OutOfMemoryError", None)) if isinstance(t, type))


def _is_oom(err: BaseException) -> bool:
    if isinstance(err, _OOM_TYPES):
        return True
    return isinstance(err, RuntimeError) and any(t in str(err).lower() for t in _OOM_TEXT)


def _oom_error(err: BaseException, where: str, block_len: Any,
               memory_budget: Any) -> BaseException:
    """``err`` (an out-of-memory error) again, same type, with what to change."""
    budget = "" if memory_budget is None else f", memory_budget={memory_budget!r}"
    msg = (f"out of memory {where} (block_len={block_len!r}{budget}): the activations of "
           "one time block (block_len steps x series in the batch x model width) and the "
           "boundary states did not fit. Pass block_len='auto' with a memory_budget "
           "(e.g. memory_budget='4GB', a little under what the device has free) to let "
           "vlrnn.plan pick the block length and schedule, or a smaller block_len, or "
           f"fewer series per batch. Original error: {_short(err, 2)}")
    try:
        return type(err)(msg)
    except Exception:  # an error type that cannot be built from a message
        return RuntimeError(msg)


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
        block_len: time steps per block for :func:`vlrnn.block_loss`, or ``"auto"``: the
            planner (:func:`vlrnn.plan`) picks it from ``memory_budget`` for each batch
            (and the schedule too, with ``schedule=None``).
        memory_budget: bytes or a size (``"4GB"``) for the engine's working memory, as in
            ``block_loss``; with ``block_len="auto"``, default half the free memory.
        reduction: ``"mean"``, ``"sum"`` or ``"seq_mean"``, as in ``block_loss``.
        schedule: which block boundaries the engine keeps (``"flat"``, ``"two_level"``,
            ``"revolve"``; :data:`vlrnn.schedules.SCHEDULES`), as in ``block_loss``;
            ``None``: ``"flat"``, or the planner's choice with ``block_len="auto"``.
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
        skip_nonfinite: when the loss or a gradient is NaN/inf, skip that optimizer step
            (parameters and optimizer state stay as they were) and count it in the
            history's ``skipped`` column, instead of raising ``FloatingPointError``.
        distributed: data-parallel training over the processes of the default
            ``torch.distributed`` process group. ``None`` (default): on when a process
            group is initialised. ``True`` also initialises one from ``torchrun``'s
            environment if there is none yet. See "Distributed training" below.

    Distributed training (``torchrun --nproc_per_node=N train.py``, every process runs the
    same script with the same seed and loaders): the model is wrapped in
    ``DistributedDataParallel`` unless it is already (``trainer.model`` stays the plain
    module); each epoch every rank trains on every ``world_size``-th batch of the loader's
    epoch order (:func:`vlrnn.distributed.shard_loader`: series split across ranks, still
    grouped by length), the last batches padded by repeating the epoch's first ones so
    that all ranks make the same number of optimizer steps; a loader that already uses a
    ``DistributedSampler`` is taken as it is. DDP averages the gradients over ranks, so a
    step is the mean of the ranks' batch losses. The epoch losses are all-reduced
    (weighted by rows), so every rank has the same history and takes the same early
    stopping and scheduler decisions; a non-finite loss on any rank stops (or skips the
    step on) every rank. Only rank 0 shows progress and writes checkpoints (the others
    wait at a barrier); checkpoints hold every rank's random-number state, and a resumed
    run must see the checkpoint folder on every rank (a shared file system) and use the
    same number of processes to continue bit for bit. ``evaluate`` splits its loader the
    same way, unpadded, and must be called on every rank.

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
            per second), ``lr`` (learning rate used during the epoch) and ``skipped``
            (optimizer steps skipped for a non-finite loss or gradient; their batches are
            left out of ``train_loss``).
        best_epoch, best_val_loss: the epoch with the lowest validation loss so far.
        stopped_early: whether the last ``fit`` stopped on patience.
    """

    def __init__(self, model: nn.Module, loss_fn: Optional[Callable], *,
                 optimizer: Optional[torch.optim.Optimizer] = None, lr: float = 1e-3,
                 scheduler: Any = None, block_len: Union[int, str] = 256,
                 reduction: str = "mean",
                 schedule: Optional[str] = "flat", clip_grad_norm: Optional[float] = None,
                 early_stopping_patience: Optional[int] = None, restore_best: bool = True,
                 checkpoint_dir: Union[str, Path, None] = None, progress: bool = True,
                 seed: int = 0, device: Union[str, torch.device, None] = None,
                 scaler_state: Any = None, config: Optional[Dict[str, Any]] = None,
                 memory_budget: Union[int, str, None] = None, skip_nonfinite: bool = False,
                 distributed: Optional[bool] = None):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        self.reduction = check_reduction(reduction)
        if schedule is not None and not callable(schedule) and schedule not in SCHEDULES:
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
        if block_len != "auto":
            check_block_len(block_len)  # a clear error now rather than at the first batch
        self.distributed = self._want_distributed(distributed, device)
        self.rank, self.world_size = dd.get_rank(), dd.get_world_size()
        self.is_main = self.rank == 0
        self.seed = int(seed)
        seed_everything(self.seed)
        self.device = self._pick_device(device)
        ddp_cls = nn.parallel.DistributedDataParallel
        train_model: Optional[nn.Module] = None
        if isinstance(model, ddp_cls):  # wrapped by the caller: train through it as it is
            train_model, model = model, model.module
        self.model = model.to(self.device)  # the plain module: checkpoints, predict, eval
        if train_model is None and self.distributed:
            # DDP broadcasts rank 0's weights here: every rank starts from the same ones
            ids = [self.device.index] if self.device.type == "cuda" else None
            train_model = ddp_cls(self.model, device_ids=ids)
        self._train_model = train_model if train_model is not None else self.model
        self.loss_fn = loss_fn.to(self.device) if isinstance(loss_fn, nn.Module) else loss_fn
        self.block_len = block_len
        self.memory_budget = memory_budget
        self.skip_nonfinite = bool(skip_nonfinite)
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
                In a distributed run, the whole loader, the same on every rank: each rank
                trains on its share (see the class docstring).
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
        if self.checkpoint_dir is not None and self.is_main:
            # leftovers of a writer killed between writing and renaming: nobody writes now
            ckpt_io.remove_stale_temp(self.checkpoint_dir)
        if resume is not None:
            done = self._resume(resume, train_loader)
            if self.stopped_early or done >= epochs:
                self._finish()
                return self.history
        train_batches = self._share(train_loader, "pad")
        val_batches = None if val_loader is None else self._share(val_loader, None)
        for epoch in range(done + 1, epochs + 1):
            t0 = time.perf_counter()
            lr = float(self.optimizer.param_groups[0]["lr"])
            _set_epoch(train_loader, epoch - 1)
            if train_batches is not train_loader:
                _set_epoch(train_batches, epoch - 1)
            train_loss, steps_per_s, skipped = self._train_epoch(train_batches, epoch)
            val_loss = math.nan
            if val_loader is not None:
                _set_epoch(val_loader, epoch - 1)
                if val_batches is not val_loader:
                    _set_epoch(val_batches, epoch - 1)
                val_loss = self._evaluate(val_batches)
            self._rows.append(dict(epoch=epoch, train_loss=train_loss, val_loss=val_loss,
                                   seconds=time.perf_counter() - t0, steps_per_s=steps_per_s,
                                   lr=lr, skipped=skipped))
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

    def evaluate(self, loader: Iterable) -> float:
        """Loss over all batches of ``loader`` in eval mode, no graph (memory of one block).

        Batches are weighted by their number of rows (sequences for ``"seq_mean"``), so
        the result is the mean loss per row of the whole set. In a distributed run every
        rank evaluates its share of ``loader`` (unpadded) and the sums are all-reduced:
        call it on every rank.
        """
        return self._evaluate(self._share(loader, None))

    @torch.no_grad()
    def _evaluate(self, loader: Iterable) -> float:
        was_training = self.model.training
        self.model.eval()
        try:
            total, weight = 0.0, 0.0
            for i, batch in enumerate(loader):
                x, y = self._batch(batch, i)
                try:
                    out = block_loss(self.model, self.loss_fn, x, y, block_len=self.block_len,
                                     reduction=self.reduction)
                except (RuntimeError, MemoryError) as err:
                    if _is_oom(err):
                        raise _oom_error(err, f"evaluating batch {i}", self.block_len,
                                         None) from err
                    raise
                c, w = self._weigh(float(out.loss), x)
                total, weight = total + c, weight + w
        finally:
            self.model.train(was_training)
        if self.distributed:
            total, weight = dd.all_reduce_sum([total, weight])
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
        block_len = block_len or self.block_len
        if block_len == "auto":  # no graph is kept: any length streams in flat memory
            block_len = 1024
        was_training = self.model.training
        self.model.eval()
        try:
            return predict_blocks(self.model, x, state, block_len=block_len)
        finally:
            self.model.train(was_training)

    # -- one epoch ---------------------------------------------------------------------------
    def _train_epoch(self, loader: Iterable, epoch: int) -> Tuple[float, float, int]:
        """One pass over ``loader`` (this rank's share): (mean loss per row (or sequence)
        of the stepped batches, rows per second, steps skipped)."""
        from tqdm.auto import tqdm

        self._check_same_length(loader)
        self._train_model.train()
        try:
            n = len(loader)  # type: ignore[arg-type]
        except TypeError:
            n = None
        # The bar is not handed the loader: tqdm.auto's bar calls iter() on its iterable
        # when built, which would start a DataLoader (its workers, a draw from its
        # generator) and move a LengthBucketSampler on to the next epoch's order.
        # disable=None: tqdm turns itself off when stderr is not a terminal (CI logs)
        bar = tqdm(total=n, desc=f"epoch {epoch}", unit="batch", leave=True,
                   disable=None if (self.progress and self.is_main) else True,
                   file=sys.stderr)
        total, weight, rows, skipped, n_batches = 0.0, 0.0, 0, 0, 0
        start = time.perf_counter()  # steps/s counts loading time too: it is throughput
        try:
            for i, batch in enumerate(loader):
                n_batches += 1
                x, y = self._batch(batch, i)
                value = self._train_step(x, y, epoch, i)
                bar.update(1)
                if value is None:
                    skipped += 1
                    continue
                c, w = self._weigh(value, x)
                total, weight = total + c, weight + w
                rows += _n_rows(x)
                busy = time.perf_counter() - start
                bar.set_postfix(loss=f"{total / weight:.4g}",
                                steps_s=f"{rows / max(busy, 1e-9):.3g}", refresh=False)
        finally:
            bar.close()
        if self.distributed:  # every rank gets the losses of all ranks, weighted by rows
            total, weight, rows, n_batches = dd.all_reduce_sum([total, weight, rows, n_batches])
        if n_batches == 0:
            raise ValueError("the training loader yielded no batches")
        seconds = max(time.perf_counter() - start, 1e-9)
        return (total / weight if weight else math.nan), rows / seconds, skipped

    def _train_step(self, x: Batch, y: Any, epoch: int, i: int) -> Optional[float]:
        """Loss, backward and optimizer step on one batch; returns the loss, or ``None``
        when the step was skipped (non-finite loss or gradient, ``skip_nonfinite``)."""
        self.optimizer.zero_grad(set_to_none=True)
        try:
            out = block_loss(self._train_model, self.loss_fn, x, y, block_len=self.block_len,
                             reduction=self.reduction, schedule=self.schedule,
                             memory_budget=self.memory_budget)
            value = float(out.loss.detach())
            if self._bad_loss(value, epoch, i):
                return None  # no backward: parameters and optimizer state untouched
            if out.loss.requires_grad:
                out.loss.backward()
        except (RuntimeError, MemoryError) as err:
            if _is_oom(err):
                raise _oom_error(err, f"at epoch {epoch}, batch {i}", self.block_len,
                                 self.memory_budget) from err
            raise
        if self._bad_gradient(epoch, i):
            self.optimizer.zero_grad(set_to_none=True)
            return None
        if self.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.clip_grad_norm)
        self.optimizer.step()
        return value

    def _bad_loss(self, value: float, epoch: int, i: int) -> bool:
        """Whether to skip this step for a non-finite loss (on any rank); raises
        ``FloatingPointError`` without ``skip_nonfinite``."""
        bad = not math.isfinite(value)
        ranks = dd.ranks_with(bad) if self.distributed else ([0] if bad else [])
        if not ranks:
            return False
        if self.skip_nonfinite:
            return True
        where = f"at epoch {epoch}, batch {i} (0-based)"
        if self.distributed:
            where += f" of each rank's share, on rank(s) {ranks}"
        shown = value if bad else "not finite"
        raise FloatingPointError(
            f"loss is {shown} {where}, before the optimizer step; check the data for "
            "NaN/inf or extreme values, lower lr, set clip_grad_norm, or pass "
            "skip_nonfinite=True to skip such steps")

    def _bad_gradient(self, epoch: int, i: int) -> bool:
        """Whether a parameter's gradient holds NaN/inf (then skip the step); raises
        ``FloatingPointError`` without ``skip_nonfinite``. DDP has already averaged the
        gradients, so every rank sees the same ones and decides alike."""
        name = _nonfinite_grad(self._named_params())
        if name is None:
            return False
        if self.skip_nonfinite:
            return True
        raise FloatingPointError(
            f"gradient of {name} is not finite (NaN/inf) at epoch {epoch}, batch {i} "
            "(0-based), although the loss is finite; the optimizer step was not taken. "
            "Set clip_grad_norm, lower lr, check the model for operations with infinite "
            "derivatives (sqrt or log at 0), or pass skip_nonfinite=True to skip such steps")

    def _named_params(self) -> List[Tuple[str, torch.Tensor]]:
        names = {id(p): n for n, p in self.model.named_parameters()}
        if isinstance(self.loss_fn, nn.Module):
            for n, p in self.loss_fn.named_parameters():
                names.setdefault(id(p), f"loss_fn.{n}")
        return [(names.get(id(p), f"parameter {j}"), p) for j, p in enumerate(self.params)]

    def _check_same_length(self, loader: Iterable) -> None:
        """Refuse (on every rank at once) shares of different lengths, which would leave
        a rank waiting in an all-reduce forever."""
        if not self.distributed:
            return
        try:
            n = len(loader)  # type: ignore[arg-type]
        except TypeError:
            n = -1
        counts = dd.all_gather_object(int(n))
        if -1 not in counts and len(set(counts)) > 1:
            raise ValueError(f"ranks have different numbers of training batches {counts}: "
                             "DDP needs the same number of optimizer steps on every rank; "
                             "pass the whole loader and let the Trainer split it, or pad "
                             "your own split (DistributedSampler(drop_last=False))")

    def _share(self, loader: Iterable, even: Optional[str]) -> Iterable:
        """This rank's batches of ``loader`` (``loader`` itself when not distributed)."""
        if not self.distributed:
            return loader
        return dd.shard_loader(loader, self.world_size, self.rank, even)

    @staticmethod
    def _want_distributed(distributed: Optional[bool], device: Any) -> bool:
        if distributed is None:
            return dd.is_initialized() and dd.get_world_size() > 1
        if not distributed:
            return False
        if not dd.is_initialized():
            if not dd.launched_by_torchrun():
                raise RuntimeError(
                    "distributed=True needs torch.distributed: launch the script with "
                    "torchrun (e.g. torchrun --nproc_per_node=2 train.py), or call "
                    "torch.distributed.init_process_group(...) before building the Trainer")
            dev = _resolve_device(device) if device is not None else torch.device(
                "cuda" if torch.cuda.is_available() else "cpu")
            dd.init_from_env(dev)
        return True

    def _pick_device(self, device: Any) -> torch.device:
        """``device``; in a distributed run without one, this process's GPU
        (``LOCAL_RANK``) if there are GPUs."""
        if device is None and self.distributed and torch.cuda.is_available():
            local = int(os.environ.get("LOCAL_RANK", self.rank % torch.cuda.device_count()))
            torch.cuda.set_device(local)
            return torch.device("cuda", local)
        dev = _resolve_device(device)
        if self.distributed and dev.type == "cuda" and dev.index is not None:
            torch.cuda.set_device(dev)  # NCCL collectives run on the current device
        return dev

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
        rng = ckpt_io.rng_state()
        loader_rng = [g.get_state() for g in _loader_generators(loader)]
        ranks = (dd.all_gather_object(rng), dd.all_gather_object(loader_rng)) \
            if self.distributed else None
        return {
            "format": CHECKPOINT_FORMAT,
            "vlrnn_version": __version__,
            "epoch": epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "history": [dict(r) for r in self._rows],
            "rng": rng,
            "loader_rng": loader_rng,
            # each rank's generators (ranks draw different dropout masks): a resumed
            # distributed run continues every rank's random stream where it was
            "world_size": self.world_size,
            "rng_ranks": ranks[0] if self.distributed else None,
            "loader_rng_ranks": ranks[1] if self.distributed else None,
            "config": self.config,
            "scaler_state": self.scaler_state,
            "seed": self.seed,
            "best": {"epoch": self.best_epoch, "val_loss": self.best_val_loss,
                     "bad_epochs": self._bad_epochs, "state": best_state},
            "stopped_early": self.stopped_early,
        }

    def _save_checkpoints(self, epoch: int, loader: Any, improved: bool) -> None:
        """Write ``best.pt`` (if improved), then ``last.pt``, each atomically; rank 0
        only, the other ranks wait. ``best.pt`` goes first: a crash between the two
        leaves ``last.pt`` one epoch behind, and the resumed run redoes that epoch and
        writes both again (the other order could leave a stale ``best.pt`` for good)."""
        data = self._checkpoint(epoch, loader)  # collective: gathers every rank's RNG
        if self.is_main:
            if improved:
                ckpt_io.save_atomic(data, self.checkpoint_dir / ckpt_io.BEST)
            ckpt_io.save_atomic(data, self.checkpoint_dir / ckpt_io.LAST)
        dd.barrier()

    def _resume(self, where: Union[str, Path], loader: Any) -> int:
        """Restore the run from a checkpoint; returns its epoch. In a distributed run
        every rank loads it, and all ranks raise together if one cannot (rather than
        the others waiting for it in the next collective)."""
        if not self.distributed:
            return self._load_run(where, loader)
        try:
            epoch, problem = self._load_run(where, loader), None
        except Exception as err:  # reported to every rank below, then raised
            epoch, problem = -1, err
        seen = dd.all_gather_object((epoch, None if problem is None
                                     else f"{type(problem).__name__}: {problem}"))
        if problem is not None:
            raise problem
        failed = [f"rank {r}: {msg}" for r, (_, msg) in enumerate(seen) if msg is not None]
        if failed:
            raise RuntimeError("resume failed on other ranks (the checkpoint folder must "
                               "be visible to every rank): " + "; ".join(failed))
        if len({e for e, _ in seen}) > 1:
            raise RuntimeError(f"ranks resumed from different epochs {[e for e, _ in seen]}: "
                               "every rank must read the same checkpoint")
        return epoch

    def _load_run(self, where: Union[str, Path], loader: Any) -> int:
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
        self._rows = [{"skipped": 0, **r} for r in data.get("history", [])]
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
        rng, saved = data["rng"], data.get("loader_rng", [])
        if self.distributed:
            if data.get("rng_ranks") is not None and data.get("world_size") == self.world_size:
                rng = data["rng_ranks"][self.rank]
                saved = data["loader_rng_ranks"][self.rank]
            else:
                warnings.warn(f"checkpoint {path} was written by a run of "
                              f"{data.get('world_size', 1)} process(es), this one has "
                              f"{self.world_size}: every rank continues from rank 0's "
                              "random-number state, so the run will not repeat an "
                              "uninterrupted one bit for bit", RuntimeWarning, stacklevel=3)
        ckpt_io.set_rng_state(rng)
        gens = _loader_generators(loader)
        if len(saved) == len(gens):
            for g, s in zip(gens, saved):
                g.set_state(s)
        return epoch
