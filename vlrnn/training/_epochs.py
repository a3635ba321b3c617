"""One epoch of the Trainer: the training pass (loss, backward, optimizer step per batch),
the validation pass and the validation metrics, each batch weighted into the epoch's mean."""
from __future__ import annotations

import math
import sys
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import torch
from torch import nn

from .._common import Batch
from . import _distributed as dd
from ._batch_loss import BatchLoss
from ._checkpointing import Progress
from ._guards import Guards
from ._helpers import _is_oom, _n_rows, _oom_error
from ._placement import Placement
from ._tensorboard import TensorBoardLogger

__all__ = ["EpochLoop"]


class EpochLoop:
    """The passes of one epoch, over explicit collaborators.

    Args:
        model: the plain module (evaluation, metrics); ``train_model``: what training
            runs (the same module, or its DDP wrapper).
        loss: the batch loss (moves batches, weighs them).
        optimizer, params: the optimizer and the parameters it steps (clipped together).
        guards: what to do on a non-finite loss or gradient.
        placement: the process group (this rank's share, equal lengths across ranks).
        clip_grad_norm: clip the gradient's total norm before each step, or ``None``.
        tensorboard: per-step scalars, or ``None``.
        progress: show a tqdm bar per epoch (rank 0 only, and only on a terminal).
    """

    def __init__(self, model: nn.Module, train_model: nn.Module, loss: BatchLoss,
                 optimizer: torch.optim.Optimizer, params: List[nn.Parameter],
                 guards: Guards, placement: Placement, *, clip_grad_norm: Optional[float],
                 tensorboard: Optional[TensorBoardLogger], progress: bool):
        self.model, self.train_model, self.loss = model, train_model, loss
        self.optimizer, self.params = optimizer, params
        self.guards, self.placement = guards, placement
        self.clip_grad_norm = clip_grad_norm
        self.tensorboard = tensorboard
        self.progress = progress

    def _oom(self, err: BaseException, where: str, train: bool) -> BaseException:
        return _oom_error(err, where, self.loss.block_len,
                          self.loss.memory_budget if train else None)

    @torch.no_grad()
    def evaluate(self, loader: Iterable) -> float:
        """Mean loss per row (sequence, observed target) over ``loader``, eval mode, no
        graph; all-reduced over the ranks in a distributed run."""
        was_training = self.model.training
        self.model.eval()
        try:
            total, weight = 0.0, 0.0
            for i, batch in enumerate(loader):
                x, y = self.loss.move(batch, i)
                try:
                    value = self.loss(self.model, x, y, train=False)
                except (RuntimeError, MemoryError) as err:
                    if _is_oom(err):
                        raise self._oom(err, f"evaluating batch {i}", False) from err
                    raise
                c, w = self.loss.weigh(float(value), x, y)
                total, weight = total + c, weight + w
        finally:
            self.model.train(was_training)
        if self.placement.distributed:
            total, weight = dd.all_reduce_sum([total, weight])
        if weight == 0:
            raise ValueError("the validation loader yielded no batches")
        return total / weight

    @torch.no_grad()
    def metrics(self, loader: Iterable,
                metrics: Callable[[nn.Module, Iterable], Dict[str, float]]
                ) -> Dict[str, float]:
        """``{"val_<name>": value}`` of ``metrics(model, batches)`` over ``loader``."""
        was_training = self.model.training
        self.model.eval()
        try:
            batches = (self.loss.move(b, i) for i, b in enumerate(loader))
            scores = metrics(self.model, batches)
        finally:
            self.model.train(was_training)
        return {f"val_{k}": float(v) for k, v in scores.items()}

    def train(self, loader: Iterable, epoch: int, run: Progress) -> Tuple[float, float, int]:
        """One pass over ``loader`` (this rank's share), counting ``run.global_step``:
        (mean loss per row (or sequence) of the stepped batches, rows per second, steps
        skipped)."""
        from tqdm.auto import tqdm

        self.placement.check_same_length(loader)
        self.train_model.train()
        try:
            n = len(loader)  # type: ignore[arg-type]
        except TypeError:
            n = None
        # The bar is not handed the loader: tqdm.auto's bar calls iter() on its iterable
        # when built, which would start a DataLoader (its workers, a draw from its
        # generator) and move a LengthBucketSampler on to the next epoch's order.
        # disable=None: tqdm turns itself off when stderr is not a terminal (CI logs)
        bar = tqdm(total=n, desc=f"epoch {epoch}", unit="batch", leave=True,
                   disable=None if (self.progress and self.placement.is_main) else True,
                   file=sys.stderr)
        total, weight, rows, skipped, n_batches = 0.0, 0.0, 0, 0, 0
        start = time.perf_counter()  # steps/s counts loading time too: it is throughput
        try:
            for i, batch in enumerate(loader):
                n_batches += 1
                x, y = self.loss.move(batch, i)
                value = self.step(x, y, epoch, i)
                run.global_step += 1
                if self.tensorboard is not None:
                    self.tensorboard.step(run.global_step, value)
                bar.update(1)
                if value is None:
                    skipped += 1
                    continue
                c, w = self.loss.weigh(value, x, y)
                total, weight = total + c, weight + w
                rows += _n_rows(x)
                busy = time.perf_counter() - start
                bar.set_postfix(loss=f"{total / weight:.4g}",
                                steps_s=f"{rows / max(busy, 1e-9):.3g}", refresh=False)
        finally:
            bar.close()
        if self.placement.distributed:  # every rank gets all ranks' losses, by rows
            total, weight, all_rows, all_batches = dd.all_reduce_sum(
                [total, weight, rows, n_batches])
            rows, n_batches = int(all_rows), int(all_batches)
        if n_batches == 0:
            raise ValueError("the training loader yielded no batches")
        seconds = max(time.perf_counter() - start, 1e-9)
        return (total / weight if weight else math.nan), rows / seconds, skipped

    def step(self, x: Batch, y: Any, epoch: int, i: int) -> Optional[float]:
        """Loss, backward and optimizer step on one batch; returns the loss, or ``None``
        when the step was skipped (non-finite loss or gradient, ``skip_nonfinite``)."""
        self.optimizer.zero_grad(set_to_none=True)
        try:
            loss = self.loss(self.train_model, x, y, train=True)
            value = float(loss.detach())
            if self.guards.bad_loss(value, epoch, i):
                return None  # no backward: parameters and optimizer state untouched
            if loss.requires_grad:
                loss.backward()
        except (RuntimeError, MemoryError) as err:
            if _is_oom(err):
                raise self._oom(err, f"at epoch {epoch}, batch {i}", True) from err
            raise
        if self.guards.bad_gradient(epoch, i):
            self.optimizer.zero_grad(set_to_none=True)
            return None
        if self.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.clip_grad_norm)
        self.optimizer.step()
        return value
