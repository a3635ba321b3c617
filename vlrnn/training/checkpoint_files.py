"""Checkpoint files: atomic writes, loading, and the random-number state of a run.

A checkpoint is a dict written with ``torch.save``. It is written to a temporary file in
the destination folder, flushed and fsynced, then renamed over the destination with
``os.replace`` (atomic on POSIX and Windows), so a crash mid-write leaves either the old
file or the new one, never a torn file. A process killed between writing the temporary
file and renaming it leaves that file behind (``.last.pt.<random>.tmp``);
:func:`remove_stale_temp` clears such leftovers.
"""
from __future__ import annotations

import os
import pickle
import random
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterable, List, Union

import numpy as np
import torch

PathLike = Union[str, "os.PathLike[str]"]

LAST = "last.pt"
BEST = "best.pt"


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files readable by their owner only; a checkpoint gets the permissions
# any other new file would (other ranks' users, a shared file system). Read once, at
# import: os.umask can only be read by setting it.
_UMASK = _read_umask()


def save_atomic(obj: Any, path: PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically; creates the parent folder. Returns
    the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)  # make the rename itself durable
    return path


def remove_stale_temp(folder: PathLike, names: Iterable[str] = (LAST, BEST)) -> List[Path]:
    """Delete the temporary files :func:`save_atomic` left in ``folder`` for ``names``
    when its process died before the rename; returns what was removed. Call it only
    while nothing writes to ``folder`` (a live writer's temporary file would go too)."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for name in names:
        for p in folder.glob(f".{name}.*.tmp"):
            try:
                p.unlink()
                removed.append(p)
            except FileNotFoundError:
                pass
    return removed


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not possible on some platforms (Windows); the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def resolve(path: PathLike, name: str = LAST) -> Path:
    """``path`` itself if it is a file, ``path / name`` if it is a folder.

    Raises:
        FileNotFoundError: nothing there.
    """
    p = Path(path)
    if p.is_dir():
        p = p / name
    if not p.is_file():
        where = f"folder {path} has no {name}" if Path(path).is_dir() else f"{path} does not exist"
        raise FileNotFoundError(f"no checkpoint to load: {where}")
    return p


def load(path: PathLike, name: str = LAST) -> Dict[str, Any]:
    """Load a checkpoint dict from a file, or from ``name`` in a folder (on the CPU).

    Files written by vlrnn hold only tensors and plain Python values and load with
    ``weights_only=True``; a file that also pickles other objects (a custom scheduler's
    state, say) is loaded in full, so load only checkpoints you trust.
    """
    p = resolve(path, name)
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        obj = torch.load(p, map_location="cpu", weights_only=False)
    except (EOFError, RuntimeError) as err:
        raise ValueError(f"{p} is not a readable checkpoint: {err}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{p} is not a vlrnn checkpoint (it holds a {type(obj).__name__}, "
                         "expected a dict)")
    return obj


# -- random-number state --------------------------------------------------------------------
def rng_state() -> Dict[str, Any]:
    """State of every generator a training run draws from: torch CPU, each CUDA device
    (if available), numpy's global one and Python's ``random``. Plain values only (so
    the checkpoint loads with ``weights_only=True``)."""
    np_state = np.random.get_state()
    state: Dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore what :func:`rng_state` recorded (CUDA only if both sides have it)."""
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.int64).astype(np.uint32), int(pos),
                         int(has_gauss), float(cached)))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
