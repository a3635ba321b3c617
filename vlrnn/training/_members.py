"""Where each member of an ensemble (``pack_and_train(ensemble=n)``) keeps its files.

An ensemble trains its members one after another. With one member everything is as for
a single model. With several, member ``j`` checkpoints into ``<checkpoint_dir>/member<j>``
and logs into ``<log_dir>/member<j>``; a resumed ensemble resumes each member from its
own folder: a finished member loads its final weights and trains no further, the member
that was interrupted goes on from its last epoch, and a member that had not started
starts from scratch. So an interrupted ensemble loses no finished epoch either.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Union

from ._checkpoint_files import LAST, previous_path

__all__ = ["member_files"]

PathLike = Union[str, Path]


def member_files(j: int, n_members: int, checkpoint_dir: Optional[PathLike],
                 log_dir: Optional[PathLike], resume: Optional[PathLike]
                 ) -> Dict[str, Any]:
    """``checkpoint_dir``, ``log_dir`` and ``resume`` for member ``j`` of ``n_members``.

    Args:
        checkpoint_dir, log_dir: the ensemble's folders (``None``: none).
        resume: the ensemble's checkpoint folder to resume from (``None``: a new run);
            with several members it must be a folder (each member has its own file).

    Returns:
        ``{"checkpoint_dir": ..., "log_dir": ..., "resume": ...}``; member ``j``'s resume
        is ``None`` when its folder holds no checkpoint yet (it had not started).
    """
    if n_members == 1:
        return {"checkpoint_dir": checkpoint_dir, "log_dir": log_dir, "resume": resume}
    sub = f"member{j}"
    out: Dict[str, Any] = {
        "checkpoint_dir": None if checkpoint_dir is None else Path(checkpoint_dir) / sub,
        "log_dir": None if log_dir is None else Path(log_dir) / sub, "resume": None}
    if resume is not None:
        root = Path(resume)
        if not root.is_dir():
            raise ValueError(f"an ensemble of {n_members} resumes from its checkpoint folder "
                             f"(one subfolder member0 .. member{n_members - 1}), got "
                             f"{resume} which is not a folder")
        folder = root / sub
        last = folder / LAST
        if last.is_file() or previous_path(last).is_file():
            out["resume"] = folder
        elif j == 0:
            hint = (f"; {root} holds one model's {LAST}: resume it with ensemble=1"
                    if (root / LAST).is_file() else "")
            raise FileNotFoundError(f"no checkpoint to resume the ensemble from: {folder} "
                                    f"has no {LAST}{hint}")
    return out
