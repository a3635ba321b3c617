"""Checkpoints of a :class:`vlrnn.Trainer` run: what goes in (weights, optimizer,
scheduler, history, every random-number state), atomic writes, and resuming bit for bit.

:class:`Checkpoints` is one of the Trainer's collaborators: it is given the run's parts
(model, optimizer, scheduler, :class:`Progress`) and never reads the Trainer itself.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from torch import nn

from . import _checkpoint_files as ckpt_io
from . import _distributed as dd
from ._helpers import _config_diff, _loader_generators, _short
from ._placement import Placement

CHECKPOINT_FORMAT = "vlrnn.Trainer/1"


@dataclass
class Progress:
    """How far a run has come, besides its weights and optimizer: the history rows, the
    best epoch so far (its validation loss, monitored score, weights kept for
    ``restore_best``), epochs without improvement, whether it stopped early, and the
    optimizer steps taken (TensorBoard's x axis)."""

    rows: List[Dict[str, Any]] = field(default_factory=list)
    best_epoch: Optional[int] = None
    best_val_loss: float = math.inf
    best_score: float = math.nan
    bad_epochs: int = 0
    best_state: Optional[Dict[str, Any]] = None
    stopped_early: bool = False
    global_step: int = 0

    def improves(self, row: Dict[str, Any], monitor: str, maximise: bool) -> bool:
        """Whether ``row``'s ``monitor`` value beats the best so far (NaN never does)."""
        if monitor not in row:
            raise ValueError(f"monitor={monitor!r} is not in the history; it has {sorted(row)}")
        value = row[monitor]
        if math.isnan(value):
            return False
        if math.isnan(self.best_score):
            return True
        return value > self.best_score if maximise else value < self.best_score


def _is_trainer_file(data: Dict[str, Any], path: Path) -> None:
    if data.get("format") != CHECKPOINT_FORMAT:
        raise ckpt_io.CheckpointError(
            f"{path} is not a vlrnn Trainer checkpoint (format {data.get('format')!r}, "
            f"expected {CHECKPOINT_FORMAT!r}; a saved model is read by TrainedModel.load)")


class Checkpoints:
    """The checkpoint files of one run in ``folder`` (``None``: none are written).

    Args:
        folder: where ``best.pt``, ``last.pt`` and ``last.prev.pt`` go.
        placement: the run's ranks (rank 0 writes; every rank reads on resume).
        config, scaler_state, seed: recorded in every file; ``config`` is compared on
            resume (a mismatch is a ``ValueError``).
    """

    def __init__(self, folder: Union[str, Path, None], placement: Placement,
                 config: Optional[Dict[str, Any]], scaler_state: Any, seed: int):
        self.folder = None if folder is None else Path(folder)
        self.placement = placement
        self.config = config
        self.scaler_state = scaler_state
        self.seed = seed

    def clear_stale(self) -> None:
        """Remove temporary files of a writer killed between writing and renaming."""
        if self.folder is not None and self.placement.is_main:
            ckpt_io.remove_stale_temp(self.folder)

    # -- writing -------------------------------------------------------------------------------
    def payload(self, epoch: int, model: nn.Module, optimizer: Any, scheduler: Any,
                progress: Progress, keep_best_state: bool, loader: Any) -> Dict[str, Any]:
        """The dict a checkpoint holds (collective in a distributed run: it gathers every
        rank's random-number state). ``keep_best_state``: store the best epoch's weights
        (early stopping, when the current ones are not the best)."""
        from .. import __version__

        p = self.placement
        rng = ckpt_io.rng_state()
        loader_rng = [g.get_state() for g in _loader_generators(loader)]
        ranks = (dd.all_gather_object(rng), dd.all_gather_object(loader_rng)) \
            if p.distributed else None
        return {
            "format": CHECKPOINT_FORMAT,
            "vlrnn_version": __version__,
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": None if scheduler is None else scheduler.state_dict(),
            "history": [dict(r) for r in progress.rows],
            "rng": rng,
            "loader_rng": loader_rng,
            # each rank's generators (ranks draw different dropout masks): a resumed
            # distributed run continues every rank's random stream where it was
            "world_size": p.world_size,
            "rng_ranks": ranks[0] if ranks else None,
            "loader_rng_ranks": ranks[1] if ranks else None,
            "config": self.config,
            "scaler_state": self.scaler_state,
            "seed": self.seed,
            "best": {"epoch": progress.best_epoch, "val_loss": progress.best_val_loss,
                     "score": progress.best_score, "bad_epochs": progress.bad_epochs,
                     "state": progress.best_state if keep_best_state else None},
            "stopped_early": progress.stopped_early,
            "global_step": progress.global_step,
        }

    def save(self, data: Dict[str, Any], improved: bool) -> None:
        """Write ``best.pt`` (if improved), then ``last.pt``, each atomically; rank 0
        only, the other ranks wait. ``best.pt`` goes first: a crash between the two
        leaves ``last.pt`` one epoch behind, and the resumed run redoes that epoch and
        writes both again (the other order could leave a stale ``best.pt`` for good)."""
        assert self.folder is not None
        if self.placement.is_main:
            if improved:
                ckpt_io.save_atomic(data, self.folder / ckpt_io.BEST)
            # the previous last.pt stays as last.prev.pt: a damaged last.pt costs one epoch
            ckpt_io.rotate(self.folder / ckpt_io.LAST)
            ckpt_io.save_atomic(data, self.folder / ckpt_io.LAST)
        dd.barrier()

    # -- resuming ------------------------------------------------------------------------------
    def resume(self, where: Union[str, Path], loader: Any, model: nn.Module, optimizer: Any,
               scheduler: Any, patience: Optional[int], trusted: bool = False
               ) -> Tuple[int, Progress]:
        """Restore model, optimizer, scheduler and random-number state from a checkpoint;
        returns ``(its epoch, its Progress)``. In a distributed run every rank loads it,
        and all ranks raise together if one cannot (rather than the others waiting for
        it in the next collective)."""
        args = (where, loader, model, optimizer, scheduler, patience, trusted)
        if not self.placement.distributed:
            return self._restore(*args)
        try:
            (epoch, progress), problem = self._restore(*args), None
        except Exception as err:  # reported to every rank below, then raised
            epoch, progress, problem = -1, Progress(), err
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
        return epoch, progress

    def _restore(self, where, loader, model, optimizer, scheduler, patience, trusted
                 ) -> Tuple[int, Progress]:
        ckpt_io.resolve(where)  # FileNotFoundError when there is nothing at all
        data, path = ckpt_io.load_newest_intact(where, trusted=trusted, check=_is_trainer_file)
        saved_cfg = data.get("config")
        if self.config is not None and saved_cfg is not None and saved_cfg != self.config:
            raise ValueError(f"checkpoint {path} was written by a run with another config: "
                             + "; ".join(_config_diff(saved_cfg, self.config)))
        try:
            model.load_state_dict(data["model"])
        except RuntimeError as err:
            raise ValueError(f"checkpoint {path} does not match this model: "
                             f"{_short(err)}") from None
        try:
            optimizer.load_state_dict(data["optimizer"])
        except (ValueError, KeyError, RuntimeError) as err:
            raise ValueError(f"checkpoint {path}: its optimizer state does not fit this "
                             f"optimizer ({type(optimizer).__name__}): {_short(err)}") from None
        sched = data.get("scheduler")
        if (sched is None) != (scheduler is None):
            raise ValueError(f"checkpoint {path} was written "
                             f"{'without' if sched is None else 'with'} an LR scheduler, "
                             f"this Trainer has {'one' if sched is None else 'none'}")
        if sched is not None:
            scheduler.load_state_dict(sched)
        best = data.get("best", {})
        epoch = int(data["epoch"])
        progress = Progress(
            rows=[{"skipped": 0, **r} for r in data.get("history", [])],
            best_epoch=best.get("epoch"),
            best_val_loss=float(best.get("val_loss", math.inf)),
            bad_epochs=int(best.get("bad_epochs", 0)),
            best_state=best.get("state"),
            stopped_early=bool(data.get("stopped_early", False)),
            global_step=int(data.get("global_step", 0)))
        progress.best_score = float(best.get("score", math.nan if progress.best_epoch is None
                                             else progress.best_val_loss))
        if progress.best_state is None and patience is not None and progress.best_epoch == epoch:
            progress.best_state = {k: v.detach().to("cpu", copy=True)
                                   for k, v in model.state_dict().items()}
        self._restore_rng(data, path, loader)
        return epoch, progress

    def _restore_rng(self, data: Dict[str, Any], path: Path, loader: Any) -> None:
        p = self.placement
        rng, saved = data["rng"], data.get("loader_rng", [])
        written_by = int(data.get("world_size") or 1)
        if written_by == p.world_size and p.distributed and data.get("rng_ranks"):
            rng = data["rng_ranks"][p.rank]
            saved = data["loader_rng_ranks"][p.rank]
        elif written_by != p.world_size:
            # weights, optimizer, scheduler, epoch and the epoch order of batches carry on
            # (tests/test_resume_world_size.py); only per-rank random streams cannot
            warnings.warn(f"checkpoint {path} was written by a run of {written_by} "
                          f"process(es), this one has {p.world_size}: training continues "
                          "from its weights, optimizer state and epoch, and every rank from "
                          "rank 0's random-number state (dropout masks and shuffling differ "
                          "from an uninterrupted run; keep the global batch the same)",
                          RuntimeWarning, stacklevel=5)
        ckpt_io.set_rng_state(rng)
        gens = _loader_generators(loader)
        if len(saved) == len(gens):
            for g, s in zip(gens, saved):
                g.set_state(s)
