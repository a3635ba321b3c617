"""Checkpoint files: atomic, checksummed writes; safe, verified loads; rotation; and the
random-number state of a run.

A file is a dict written with ``torch.save`` that carries its version and a checksum of
its content (NOTE [file checksum] in ``_integrity``). It is written to a temporary file
in the destination folder, flushed and fsynced, then renamed over the destination with
``os.replace`` (atomic on POSIX and Windows), so a crash mid-write leaves either the old
file or the new one, never a torn file. A process killed between writing the temporary
file and renaming it leaves that file behind (``.last.pt.<random>.tmp``);
:func:`remove_stale_temp` clears such leftovers. :func:`rotate` keeps the file about to
be replaced as ``<stem>.prev.pt`` (``last.prev.pt``): a damaged ``last.pt`` then costs
one epoch, not the run (:func:`load_newest_intact`).

Loading never runs code from the file: ``torch.load(weights_only=True)`` with no
fallback. A file that needs full unpickling is refused unless the caller passes
``trusted=True`` (the CLI's ``--trust-file``) for a file whose source they trust.
"""
from __future__ import annotations

import errno
import os
import pickle
import random
import shutil
import tempfile
import uuid
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Tuple, Union

import numpy as np
import torch

from ._integrity import CHECKSUM_KEY, VERSION_KEY, CheckpointError, sealed, verify

PathLike = Union[str, "os.PathLike[str]"]

LAST = "last.pt"
BEST = "best.pt"
PREV = "last.prev.pt"
TRUST_HINT = ("if you trust the file and where it came from, load it with trusted=True "
              "(vlrnn predict/train: --trust-file)")


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files readable by their owner only; a checkpoint gets the permissions
# any other new file would (other ranks' users, a shared file system). Read once, at
# import: os.umask can only be read by setting it.
_UMASK = _read_umask()


def previous_path(path: PathLike) -> Path:
    """Where ``save_atomic(..., keep_previous=True)`` keeps the file it replaces:
    ``last.pt`` -> ``last.prev.pt``."""
    p = Path(path)
    return p.with_name(f"{p.stem}.prev{p.suffix}")


def save_atomic(obj: Dict[str, Any], path: PathLike) -> Path:
    """``torch.save`` the dict ``obj``, with a file version and a checksum of its content,
    to ``path`` atomically; creates the parent folder. Returns the path.

    Args:
        obj: a dict of tensors and plain values (what ``weights_only=True`` reads back;
            anything else is a ``TypeError`` before a byte is written).

    Raises:
        OSError: the write failed (a full disk, say); the message says so, and the file
            at ``path`` (and its previous one) are left as they were.
    """
    path = Path(path)
    data = sealed(obj)  # checks the content too: raises before anything is written
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            torch.save(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        os_err = _os_error_in(err)
        if os_err is None:
            raise
        why = "no space left on device" if os_err.errno == errno.ENOSPC else \
            (os_err.strerror or str(os_err) or type(os_err).__name__)
        raise OSError(os_err.errno, f"could not write {path}: {why}; the file that was there "
                      "is unchanged (free some space, or write to another folder)") from err
    _fsync_dir(path.parent)  # make the rename itself durable
    return path


def _os_error_in(err: BaseException) -> "OSError | None":
    """The ``OSError`` behind ``err``: torch.save reports a failed write (a full disk) as
    a ``RuntimeError`` of its zip writer, with the ``OSError`` as its context."""
    seen = 0
    e: "BaseException | None" = err
    while e is not None and seen < 8:
        if isinstance(e, OSError):
            return e
        e, seen = e.__cause__ or e.__context__, seen + 1
    return None


def rotate(path: PathLike) -> None:
    """Keep the file at ``path`` as :func:`previous_path` (``last.pt`` -> ``last.prev.pt``)
    before a new one is written there; nothing to do if there is none. ``path`` exists at
    every moment (a hard link, or a copy where the file system has none), so a crash
    while the next file is written leaves both the old file and its copy."""
    src = Path(path)
    if not src.is_file():
        return
    dst = previous_path(src)
    if dst.exists() and os.path.samefile(src, dst):
        # already linked (a run killed right after linking): renaming one hard link over
        # another of the same file does nothing, and would leave the temporary link behind
        return
    tmp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        try:
            os.link(src, tmp)
        except OSError:  # no hard links here (some network and FAT file systems)
            shutil.copy2(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def remove_stale_temp(folder: PathLike, names: Iterable[str] = (LAST, BEST, PREV)
                      ) -> List[Path]:
    """Delete the temporary files :func:`save_atomic` left in ``folder`` for ``names``
    when its process died before the rename; returns what was removed. Call it only
    while nothing writes to ``folder`` (a live writer's temporary file would go too)."""
    folder = Path(folder)
    removed: List[Path] = []
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


def load(path: PathLike, name: str = LAST, *, trusted: bool = False) -> Dict[str, Any]:
    """Load and verify a file vlrnn wrote, from a file or ``name`` in a folder (on the
    CPU); returns its dict without the version and checksum records.

    Nothing in the file runs: it loads with ``weights_only=True``. ``trusted=True``
    allows full unpickling (which can run any code the file holds) and files without a
    vlrnn checksum; a checksum that is present is verified either way.

    Raises:
        FileNotFoundError: nothing there.
        CheckpointError: (a ``ValueError``) the file is empty, truncated, damaged
            (checksum mismatch), not a vlrnn file, from an unknown version, or needs
            full unpickling; the message names the file and what to do.
    """
    p = resolve(path, name)
    if p.stat().st_size == 0:
        raise CheckpointError(f"{p} is empty (0 bytes): the write that made it never finished; "
                              "use an earlier checkpoint or write it again")
    with open(p, "rb") as f:
        is_zip = f.read(2) == b"PK"  # torch.save writes a zip archive
    if not is_zip and not trusted:
        raise CheckpointError(f"{p} is not a vlrnn file (not the zip archive torch.save "
                              "writes); point at a checkpoint or model file vlrnn wrote")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if not trusted:
            raise CheckpointError(
                f"{p} was refused: it holds objects that only full unpickling can load, and "
                "unpickling can run any code the file contains (vlrnn never writes such "
                f"files); {TRUST_HINT}") from None
        try:
            obj = torch.load(p, map_location="cpu", weights_only=False)
        except Exception:
            raise _unreadable(p, err, is_zip) from None
    except Exception as err:  # torch raises RuntimeError, EOFError, zipfile/OSError kinds
        raise _unreadable(p, err, is_zip) from None
    if trusted and isinstance(obj, dict) and CHECKSUM_KEY not in obj and VERSION_KEY not in obj:
        return obj
    return verify(obj, str(p))


def _unreadable(p: Path, err: BaseException, is_zip: bool) -> CheckpointError:
    detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if is_zip:  # an archive cut short or damaged
        return CheckpointError(f"{p} is truncated or damaged ({detail}): its write or copy did "
                               "not finish; use an earlier checkpoint or copy it again")
    return CheckpointError(f"{p} is not a vlrnn file (torch cannot read it: {detail}); point "
                           "at a checkpoint or model file vlrnn wrote")


def load_newest_intact(path: PathLike, *, trusted: bool = False,
                       check: Callable[[Dict[str, Any], Path], None] = lambda d, p: None
                       ) -> Tuple[Dict[str, Any], Path]:
    """Load ``path`` (a file, or a folder's ``last.pt``), falling back to its previous
    file (:func:`previous_path`) with a ``RuntimeWarning`` when it cannot be vouched
    for; returns ``(dict, the file it came from)``. ``check(dict, path)`` may raise
    :class:`CheckpointError` to reject a file too (a wrong format, say).

    Raises:
        FileNotFoundError: neither file exists.
        CheckpointError: no intact file; the message lists why each was refused.
    """
    first = Path(path) / LAST if Path(path).is_dir() else Path(path)
    candidates = [first, previous_path(first)]
    problems: List[str] = []
    for i, c in enumerate(candidates):
        if not c.is_file():
            if i == 0:
                problems.append(f"{c} does not exist")
            continue
        try:
            data = load(c, trusted=trusted)
            check(data, c)
        except CheckpointError as err:
            problems.append(str(err))
            continue
        if problems:
            warnings.warn(f"resuming from {c} (epoch {data.get('epoch', '?')}), the newest "
                          f"intact checkpoint, because {'; '.join(problems)}",
                          RuntimeWarning, stacklevel=3)
        return data, c
    if len(problems) == 1 and not first.exists():
        raise FileNotFoundError(f"no checkpoint to load: {problems[0]}")
    raise CheckpointError("no intact checkpoint to resume from: " + "; ".join(problems))


# -- random-number state --------------------------------------------------------------------
def rng_state() -> Dict[str, Any]:
    """State of every generator a training run draws from: torch CPU, each CUDA device
    (if available), numpy's global one and Python's ``random``. Plain values only (so
    the checkpoint loads with ``weights_only=True``)."""
    np_state: Any = np.random.get_state()  # the legacy tuple form
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
