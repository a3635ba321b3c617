"""One epoch of the Trainer: the training pass (loss, backward, optimizer step per batch)
and the validation pass, with batches moved to the device and weighted into the epoch's
mean loss."""
from __future__ import annotations

import math
import sys
import time
from typing import Any, Dict, Iterable, Optional, Tuple

import torch

from .._common import Batch
from . import _distributed as dd
from ._helpers import _is_oom, _move, _n_observed, _n_rows, _n_seqs, _oom_error


class EpochMixin:
    """The epoch half of :class:`vlrnn.Trainer` (it reads the trainer's fields; the batch
    loss itself is the Trainer's ``_loss``)."""

    @torch.no_grad()
    def _evaluate(self, loader: Iterable) -> float:
        was_training = self.model.training
        self.model.eval()
        try:
            total, weight = 0.0, 0.0
            for i, batch in enumerate(loader):
                x, y = self._batch(batch, i)
                try:
                    loss = self._loss(self.model, x, y, train=False)
                except (RuntimeError, MemoryError) as err:
                    if _is_oom(err):
                        raise _oom_error(err, f"evaluating batch {i}", self.block_len,
                                         None) from err
                    raise
                c, w = self._weigh(float(loss), x, y)
                total, weight = total + c, weight + w
        finally:
            self.model.train(was_training)
        if self.distributed:
            total, weight = dd.all_reduce_sum([total, weight])
        if weight == 0:
            raise ValueError("the validation loader yielded no batches")
        return total / weight

    def _train_epoch(self, loader: Iterable, epoch: int) -> Tuple[float, float, int]:
        """One pass over ``loader`` (this rank's share): (mean loss per row (or sequence)
        of the stepped batches, rows per second, steps skipped)."""
        from tqdm.auto import tqdm

        self.placement.check_same_length(loader)
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
                self.run.global_step += 1
                if self.tensorboard is not None:
                    self.tensorboard.step(self.run.global_step, value)
                bar.update(1)
                if value is None:
                    skipped += 1
                    continue
                c, w = self._weigh(value, x, y)
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
            loss = self._loss(self._train_model, x, y, train=True)
            value = float(loss.detach())
            if self.guards.bad_loss(value, epoch, i):
                return None  # no backward: parameters and optimizer state untouched
            if loss.requires_grad:
                loss.backward()
        except (RuntimeError, MemoryError) as err:
            if _is_oom(err):
                raise _oom_error(err, f"at epoch {epoch}, batch {i}", self.block_len,
                                 self.memory_budget) from err
            raise
        if self.guards.bad_gradient(epoch, i):
            self.optimizer.zero_grad(set_to_none=True)
            return None
        if self.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.clip_grad_norm)
        self.optimizer.step()
        return value

    def _batch(self, batch: Any, i: int) -> Tuple[Batch, Any]:
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise TypeError(f"batch {i}: every batch must be a pair (x, y), got "
                            f"{type(batch).__name__}"
                            + (f" of length {len(batch)}" if isinstance(batch, (tuple, list))
                               else ""))
        dtype = self._dtype()
        return _move(batch[0], self.device, dtype), _move(batch[1], self.device, dtype)

    def _targets(self, y: Any) -> Tuple[Any, Any]:
        """(per-step targets, per-series targets) of a batch's ``y``."""
        if self.loss_fn is not None and self.sequence_loss_fn is not None:
            if not isinstance(y, (tuple, list)) or len(y) != 2:
                raise TypeError("with both loss_fn and sequence_loss_fn each batch must be "
                                f"(x, (y_steps, y_series)), got y of type {type(y).__name__}")
            return y[0], y[1]
        return (None, y) if self.loss_fn is None else (y, None)

    def _better(self, row: Dict[str, float]) -> bool:
        value = row.get(self.monitor, math.nan)
        if self.monitor not in row:
            raise ValueError(f"monitor={self.monitor!r} is not in the history; it has "
                             f"{sorted(row)}")
        if math.isnan(value):
            return False
        if math.isnan(self.run.best_score):
            return True
        return value > self.run.best_score if self._maximise else value < self.run.best_score

    @torch.no_grad()
    def _metrics(self, loader: Iterable) -> Dict[str, float]:
        was_training = self.model.training
        self.model.eval()
        try:
            batches = (self._batch(b, i) for i, b in enumerate(loader))
            scores = self.metrics(self.model, batches)
        finally:
            self.model.train(was_training)
        return {f"val_{k}": float(v) for k, v in scores.items()}

    def _weigh(self, loss: float, x: Batch, y: Any = None) -> Tuple[float, float]:
        """(contribution, weight) of one batch to the epoch's average loss."""
        if self.loss_fn is None:  # a loss per sequence, averaged by sequence_loss_fn
            n = _n_seqs(x, bool(getattr(self.model, "batch_first", False)))
            return loss * n, float(n)
        if self.reduction == "observed":
            n = _n_observed(self._targets(y)[0])
            return loss * n, float(n)
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
