"""Checkpoints of a :class:`vlrnn.Trainer` run: what goes in (weights, optimizer,
scheduler, history, every random-number state), atomic writes, and resuming bit for bit."""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Dict, Union

from . import checkpoint_files as ckpt_io
from . import distributed as dd
from .helpers import _config_diff, _loader_generators, _short

CHECKPOINT_FORMAT = "vlrnn.Trainer/1"


def _is_trainer_file(data: Dict[str, Any], path: Path) -> None:
    if data.get("format") != CHECKPOINT_FORMAT:
        raise ckpt_io.CheckpointError(
            f"{path} is not a vlrnn Trainer checkpoint (format {data.get('format')!r}, "
            f"expected {CHECKPOINT_FORMAT!r}; a saved model is read by TrainedModel.load)")


class CheckpointMixin:
    """The checkpoint half of :class:`vlrnn.Trainer` (it reads the trainer's fields)."""

    def _checkpoint(self, epoch: int, loader: Any) -> Dict[str, Any]:
        from .. import __version__

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
                     "score": self.best_score,
                     "bad_epochs": self._bad_epochs, "state": best_state},
            "stopped_early": self.stopped_early,
            "global_step": self._global_step,
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
            # the previous last.pt stays as last.prev.pt: a damaged last.pt costs one epoch
            ckpt_io.rotate(self.checkpoint_dir / ckpt_io.LAST)
            ckpt_io.save_atomic(data, self.checkpoint_dir / ckpt_io.LAST)
        dd.barrier()

    def _resume(self, where: Union[str, Path], loader: Any, trusted: bool = False) -> int:
        """Restore the run from a checkpoint; returns its epoch. In a distributed run
        every rank loads it, and all ranks raise together if one cannot (rather than
        the others waiting for it in the next collective)."""
        if not self.distributed:
            return self._load_run(where, loader, trusted)
        try:
            epoch, problem = self._load_run(where, loader, trusted), None
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

    def _load_run(self, where: Union[str, Path], loader: Any, trusted: bool = False) -> int:
        ckpt_io.resolve(where)  # FileNotFoundError when there is nothing at all
        data, path = ckpt_io.load_newest_intact(where, trusted=trusted, check=_is_trainer_file)
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
        self.best_score = float(best.get("score", math.nan if self.best_epoch is None
                                         else self.best_val_loss))
        self._bad_epochs = int(best.get("bad_epochs", 0))
        self._best_state = best.get("state")
        epoch = int(data["epoch"])
        if self._best_state is None and self.patience is not None and self.best_epoch == epoch:
            self._best_state = {k: v.detach().to("cpu", copy=True)
                                for k, v in self.model.state_dict().items()}
        self.stopped_early = bool(data.get("stopped_early", False))
        self._global_step = int(data.get("global_step", 0))
        rng, saved = data["rng"], data.get("loader_rng", [])
        written_by = int(data.get("world_size") or 1)
        if written_by == self.world_size and self.distributed and data.get("rng_ranks"):
            rng = data["rng_ranks"][self.rank]
            saved = data["loader_rng_ranks"][self.rank]
        elif written_by != self.world_size:
            # weights, optimizer, scheduler, epoch and the epoch order of batches carry on
            # (tests/test_resume_world_size.py); only per-rank random streams cannot
            warnings.warn(f"checkpoint {path} was written by a run of {written_by} "
                          f"process(es), this one has {self.world_size}: training continues "
                          "from its weights, optimizer state and epoch, and every rank from "
                          "rank 0's random-number state (dropout masks and shuffling differ "
                          "from an uninterrupted run; keep the global batch the same)",
                          RuntimeWarning, stacklevel=3)
        ckpt_io.set_rng_state(rng)
        gens = _loader_generators(loader)
        if len(saved) == len(gens):
            for g, s in zip(gens, saved):
                g.set_state(s)
        return epoch
