"""``Trainer``: the block engine inside an ordinary optimisation loop.

Each batch ``(x, y)`` goes through :func:`vlrnn.block_loss` (exact BPTT gradient in
memory of one block), then ``loss.backward()`` and an optimizer step. Around that: a
validation loss streamed block by block, a per-epoch history, early stopping, atomic
checkpoints that a run can resume from bit for bit, and ``predict`` (streamed). Here: the
options and the fit loop, over collaborators with explicit inputs: ``BatchLoss`` (one
batch's loss), ``EpochLoop`` (one epoch's passes), ``Guards``, ``Placement``,
``Checkpoints`` and ``Progress``.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

import pandas as pd
import torch
from torch import nn

from .._common import Batch
from ..engine import Options
from ..engine._loss import check_reduction
from . import _distributed as dd
from ._batch_loss import BatchLoss, dtype_of
from ._checkpointing import CHECKPOINT_FORMAT, Checkpoints, Progress
from ._epochs import EpochLoop
from ._guards import Guards
from ._helpers import (
    _move,
    _set_epoch,
    seed_everything,
)
from ._placement import Placement
from ._predict import predict_blocks
from ._tensorboard import TensorBoardLogger
from ._trainer_checks import check_arguments, check_loop_options, optimizer_and_scheduler

HISTORY_COLUMNS = ["epoch", "train_loss", "val_loss", "seconds", "steps_per_s", "lr",
                   "skipped"]
__all__ = ["CHECKPOINT_FORMAT", "HISTORY_COLUMNS", "Trainer", "predict_blocks",
           "seed_everything"]


# -- the trainer -------------------------------------------------------------------------------
class Trainer:
    """Train a recurrent model with exact BPTT over long ragged batches.

    Args:
        model: ``model(x, state) -> (y, new_state)`` (``nn.LSTM``, ``WithHead``, ...);
            moved to ``device``.
        loss_fn: per-row loss ``loss_fn(output_rows, target_rows) -> (R, ...)``, e.g.
            ``nn.MSELoss(reduction="none")``; see :func:`vlrnn.block_loss`.
        optimizer: default ``torch.optim.Adam(params, lr=lr)`` over the trainable
            parameters of ``model`` (and of ``loss_fn`` and ``sequence_loss_fn`` if they
            are modules).
        lr: learning rate of the default optimizer.
        scheduler: an LR scheduler built on ``optimizer``, or a callable
            ``optimizer -> scheduler``; stepped once per epoch (``ReduceLROnPlateau`` with
            the validation loss, or the training loss without validation).
        block_len: time steps per block for :func:`vlrnn.block_loss`, or ``"auto"``: the
            planner (:func:`vlrnn.plan`) picks it from ``memory_budget`` for each batch
            (and the schedule too, with ``schedule=None``).
        memory_budget: bytes or a size (``"4GB"``) for the engine's working memory, as in
            ``block_loss``; with ``block_len="auto"``, default half the free memory.
        offload: ``"cpu"`` keeps the engine's boundary states in (pinned) host memory
            during training, as in ``block_loss``; ``None`` (default) keeps them where
            the model runs.
        reduction: ``"mean"``, ``"sum"`` or ``"seq_mean"``, as in ``block_loss``; or
            ``"observed"``: the sum of the per-row losses divided by the number of
            observed (finite) target values of the batch, for targets with NaN where
            they are missing (``loss_fn`` must give 0 there, e.g.
            :func:`vlrnn.training._losses.masked_mse`). Exact: the engine sums, and the
            division by a count fixed before the first block is a constant factor.
        sequence_loss_fn: ``sequence_loss_fn(final_state, series_targets) -> scalar``, a
            loss on every sequence's final state (``out.state`` of
            :func:`vlrnn.block_loss`: model's state format, batch in input order), e.g.
            cross-entropy of ``model.readout(state)`` for a
            :class:`~vlrnn.models.SequenceModel`. Its gradient is exact too. With
            ``loss_fn=None`` it is the whole loss and each batch is ``(x, y_series)``;
            with both, each batch is ``(x, (y_steps, y_series))`` and the losses add.
        metrics: ``metrics(model, batches) -> {name: value}``, called after each epoch
            on the validation batches (moved to the device, model in eval mode, no
            graph; in a distributed run every rank scores the whole validation loader);
            each value goes to the history as column ``val_<name>``.
        monitor: the history column early stopping, ``best.pt`` and ``restore_best``
            watch: ``"val_loss"`` (default) or ``"val_<metric>"``; names ending in
            ``accuracy`` are maximised, the others minimised.
        schedule: which block boundaries the engine keeps (``"flat"``, ``"two_level"``,
            ``"revolve"``; :data:`vlrnn.SCHEDULES`), as in ``block_loss``;
            ``None``: ``"flat"``, or the planner's choice with ``block_len="auto"``.
        clip_grad_norm: clip the gradient's total norm to this before each step.
        early_stopping_patience: stop after this many epochs without a better
            ``monitor`` value (needs ``val_loader``).
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
        log_dir: write TensorBoard scalars there (needs the ``tensorboard`` package):
            the loss of every optimizer step, every numeric history column and the peak
            memory per epoch; rank 0 only; a resumed run continues the step numbering.
            See :mod:`vlrnn.training._tensorboard`.
        distributed: data-parallel training over the processes of the default
            ``torch.distributed`` process group. ``None`` (default): on when a process
            group is initialised. ``True`` also initialises one from ``torchrun``'s
            environment if there is none yet. See "Distributed training" below.

    Distributed training (``torchrun --nproc_per_node=N train.py``, every process runs the
    same script with the same seed and loaders): the model is wrapped in
    ``DistributedDataParallel`` unless it is already (``trainer.model`` stays the plain
    module); each rank trains on every ``world_size``-th batch of the epoch's order, padded
    so that all ranks make the same number of steps (a ``DistributedSampler`` loader is
    taken as it is); epoch losses are all-reduced, so every rank takes the same early
    stopping and scheduler decisions; rank 0 alone shows progress and writes checkpoints.
    ``evaluate`` splits its loader the same way and must be called on every rank. The
    distributed guide (docs/guides/distributed.md) has the details and resume rules.

    Batches: every item of a loader is ``(x, y)``, ``x`` a ``PackedSequence`` or a dense
    ``(T, B, F)`` tensor (``(B, T, F)`` for a batch-first model), ``y`` the targets in the
    same layout, moved to ``device`` (floating data cast to the model's dtype). History
    losses are means per row (``"mean"``, ``"sum"``) or per sequence (``"seq_mean"``).

    Attributes:
        history: ``pandas.DataFrame``, one row per finished epoch: ``epoch`` (from 1),
            ``train_loss``, ``val_loss`` (NaN without validation), ``seconds`` (wall time of
            the epoch), ``steps_per_s`` (training rows, i.e. time steps of all sequences,
            per second), ``lr`` (learning rate used during the epoch) and ``skipped``
            (optimizer steps skipped for a non-finite loss or gradient; their batches are
            left out of ``train_loss``); with ``metrics``, also a ``val_<name>`` column
            per metric.
        best_epoch, best_score: the epoch with the best ``monitor`` value so far and
            that value; best_val_loss: its validation loss.
        stopped_early: whether the last ``fit`` stopped on patience.

    >>> import torch
    >>> from torch import nn
    >>> from torch.nn.utils.rnn import pack_sequence
    >>> import vlrnn
    >>> from vlrnn.models import WithHead
    >>> xs = [torch.randn(n, 2) for n in (30, 20, 10)]
    >>> batch = (pack_sequence(xs), pack_sequence([x.cumsum(0)[:, :1] for x in xs]))
    >>> trainer = vlrnn.Trainer(WithHead(nn.GRU(2, 8), nn.Linear(8, 1)),
    ...                         nn.MSELoss(reduction="none"), lr=1e-2, block_len=8,
    ...                         progress=False)
    >>> history = trainer.fit([batch], epochs=5)
    >>> list(history.epoch), bool(history.train_loss.iloc[-1] < history.train_loss.iloc[0])
    ([1, 2, 3, 4, 5], True)
    >>> y, state = trainer.predict(batch[0])          # streamed, no graph
    >>> y.data.shape
    torch.Size([60, 1])
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
                 memory_budget: Union[int, str, None] = None, offload: Optional[str] = None,
                 skip_nonfinite: bool = False,
                 distributed: Optional[bool] = None,
                 sequence_loss_fn: Optional[Callable[[Any, Any], torch.Tensor]] = None,
                 metrics: Optional[Callable[[nn.Module, Iterable], Dict[str, float]]] = None,
                 monitor: str = "val_loss", log_dir: Union[str, Path, None] = None):
        check_arguments(model, loss_fn, sequence_loss_fn, metrics, monitor)
        self.reduction = reduction if reduction == "observed" else check_reduction(reduction)
        self.sequence_loss_fn = sequence_loss_fn
        self.metrics = metrics
        self.monitor = monitor
        self._maximise = monitor.endswith("accuracy")
        # the engine's options, checked once (vlrnn.engine._options); "observed" is the
        # Trainer's own reduction, run as the engine's "sum"
        Options(block_len=block_len, schedule=schedule, memory_budget=memory_budget,
                offload=offload)
        self.schedule = schedule
        check_loop_options(early_stopping_patience, clip_grad_norm, config)
        self.placement = Placement(distributed, device)  # process group, rank, device
        self.distributed, self.device = self.placement.distributed, self.placement.device
        self.rank, self.world_size = self.placement.rank, self.placement.world_size
        self.is_main = self.placement.is_main
        self.seed = int(seed)
        seed_everything(self.seed)
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
        if isinstance(sequence_loss_fn, nn.Module):  # e.g. a head outside the model
            self.sequence_loss_fn = sequence_loss_fn.to(self.device)
        self.block_len = block_len
        self.memory_budget = memory_budget
        self.offload = offload
        self.skip_nonfinite = bool(skip_nonfinite)
        self.clip_grad_norm = clip_grad_norm
        self.patience = early_stopping_patience
        self.restore_best = bool(restore_best)
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.progress = bool(progress)
        self.scaler_state = scaler_state
        self.config = config
        self.tensorboard = None if log_dir is None else TensorBoardLogger(
            log_dir, write=self.is_main)
        self.params = self._trainable()
        self.guards = Guards(self.skip_nonfinite, self.distributed, self.params,
                             [("", self.model), ("loss_fn.", self.loss_fn),
                              ("sequence_loss_fn.", self.sequence_loss_fn)])
        self.optimizer, self.scheduler = optimizer_and_scheduler(self.params, optimizer, lr,
                                                                 scheduler)
        self.run = Progress()  # history, best epoch, early stopping: what resume restores
        self.checkpoints = Checkpoints(checkpoint_dir, self.placement, config, scaler_state,
                                       self.seed)
        self.batch_loss = BatchLoss(self.model, self.loss_fn, self.sequence_loss_fn,
                                    reduction=self.reduction, block_len=block_len,
                                    schedule=schedule, memory_budget=memory_budget,
                                    offload=offload, device=self.device)
        self.loop = EpochLoop(self.model, self._train_model, self.batch_loss, self.optimizer,
                              self.params, self.guards, self.placement,
                              clip_grad_norm=clip_grad_norm, tensorboard=self.tensorboard,
                              progress=self.progress)

    # -- public ------------------------------------------------------------------------------
    # the run's progress, read-only (the Trainer's public attributes of old)
    best_epoch = property(lambda self: self.run.best_epoch,
                          doc="The epoch with the best ``monitor`` value so far.")
    best_val_loss = property(lambda self: self.run.best_val_loss,
                             doc="The validation loss of :attr:`best_epoch`.")
    best_score = property(lambda self: self.run.best_score,
                          doc="The ``monitor`` value of :attr:`best_epoch`.")
    stopped_early = property(lambda self: self.run.stopped_early,
                             doc="Whether the last ``fit`` stopped on patience.")

    @property
    def history(self) -> pd.DataFrame:
        extra = [k for r in self.run.rows for k in r if k not in HISTORY_COLUMNS]
        return pd.DataFrame(self.run.rows, columns=HISTORY_COLUMNS + list(dict.fromkeys(extra)))

    def fit(self, train_loader: Iterable, val_loader: Optional[Iterable] = None,
            epochs: int = 10, resume: Union[str, Path, None] = None, *,
            trusted: bool = False) -> pd.DataFrame:
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
                Every checkpoint is verified (checksum, version); a damaged ``last.pt``
                falls back, with a ``RuntimeWarning``, to ``last.prev.pt`` (one epoch
                earlier), never to silently changed weights.
            trusted: allow full unpickling of the resume file (it can run code the file
                holds): only for a file whose source you trust. Off by default: files
                vlrnn writes never need it.

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
        self.run = Progress()
        if self.monitor != "val_loss" and self.metrics is None:
            raise ValueError(f"monitor={self.monitor!r} needs metrics= that compute it")
        self.checkpoints.clear_stale()  # a killed writer's leftovers: nobody writes now
        if resume is not None:
            done, self.run = self.checkpoints.resume(
                resume, train_loader, self.model, self.optimizer, self.scheduler,
                self.patience, trusted)
            if self.run.stopped_early or done >= epochs:
                self._finish()
                return self.history
        if self.tensorboard is not None:
            self.tensorboard.open()
        train_batches = self.placement.share(train_loader, "pad")
        val_batches = None if val_loader is None else self.placement.share(val_loader, None)
        for epoch in range(done + 1, epochs + 1):
            t0 = time.perf_counter()
            lr = float(self.optimizer.param_groups[0]["lr"])
            _set_epoch(train_loader, epoch - 1)
            if train_batches is not train_loader:
                _set_epoch(train_batches, epoch - 1)
            train_loss, steps_per_s, skipped = self.loop.train(train_batches, epoch, self.run)
            val_loss, scores = math.nan, {}
            if val_loader is not None:
                _set_epoch(val_loader, epoch - 1)
                if val_batches is not val_loader:
                    _set_epoch(val_batches, epoch - 1)
                assert val_batches is not None
                val_loss = self.loop.evaluate(val_batches)
                if self.metrics is not None:
                    # the whole validation set on every rank: the same scores everywhere,
                    # so a metric that drives early stopping never splits the ranks
                    scores = self.loop.metrics(val_loader, self.metrics)
            self.run.rows.append(dict(epoch=epoch, train_loss=train_loss, val_loss=val_loss,
                                   seconds=time.perf_counter() - t0, steps_per_s=steps_per_s,
                                   lr=lr, skipped=skipped, **scores))
            if self.tensorboard is not None:
                self.tensorboard.epoch(self.run.rows[-1], self.device)
            if self.scheduler is not None:
                if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    self.scheduler.step(val_loss if val_loader is not None else train_loss)
                else:
                    self.scheduler.step()
            improved = val_loader is not None and self.run.improves(
                self.run.rows[-1], self.monitor, self._maximise)
            if improved:
                self.run.best_epoch, self.run.best_val_loss = epoch, val_loss
                self.run.best_score = float(self.run.rows[-1][self.monitor])
                self.run.bad_epochs = 0
                if self.patience is not None:
                    self.run.best_state = {k: v.detach().to("cpu", copy=True)
                                        for k, v in self.model.state_dict().items()}
            elif val_loader is not None:
                self.run.bad_epochs += 1
            self.run.stopped_early = self.patience is not None and self.run.bad_epochs >= self.patience
            if self.checkpoint_dir is not None:
                keep_best = self.patience is not None and self.run.best_epoch != epoch
                data = self.checkpoints.payload(epoch, self.model, self.optimizer,
                                                self.scheduler, self.run, keep_best,
                                                train_loader)
                self.checkpoints.save(data, improved)
            if self.run.stopped_early:
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
        return self.loop.evaluate(self.placement.share(loader, None))

    def predict(self, x: Batch, state: Any = None, block_len: Optional[int] = None
                ) -> Tuple[Batch, Any]:
        """The model's output over ``x`` in eval mode, streamed block by block.

        ``x``: ``PackedSequence`` or dense ``(T, B, F)`` (``(B, T, F)`` for a batch-first
        model), moved to the trainer's device; ``state``: initial state in the model's
        format and ``x``'s batch order, or ``None``. Returns ``(y, final_state)`` with
        ``y`` in ``x``'s layout and batch order; see :func:`predict_blocks`.
        """
        x = _move(x, self.device, dtype_of(self.model))
        chosen = block_len or self.block_len
        steps = 1024 if chosen == "auto" else int(chosen)  # no graph: any length streams
        was_training = self.model.training
        self.model.eval()
        try:
            return predict_blocks(self.model, x, state, block_len=steps)
        finally:
            self.model.train(was_training)

    def _trainable(self) -> List[torch.nn.Parameter]:
        params, seen = [], set()
        for mod in (self.model, self.loss_fn, self.sequence_loss_fn):
            if isinstance(mod, nn.Module):
                for p in mod.parameters():
                    if p.requires_grad and id(p) not in seen:
                        seen.add(id(p))
                        params.append(p)
        return params

    def _finish(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.patience is not None and self.restore_best and self.run.best_state is not None:
            self.model.load_state_dict(self.run.best_state)
        if self.distributed:
            # every rank has written what it writes: a script may now tear the group down
            # (or just exit, which gloo survives more reliably than destroy_process_group)
            dd.barrier()
