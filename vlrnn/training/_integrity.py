"""What makes a vlrnn file trustworthy: a content checksum, a file version, and the one
error class every failed load raises.

NOTE [file checksum]: every file vlrnn writes and later reads (Trainer checkpoints,
``best.pt``/``last.pt``, a saved ``TrainedModel``) is a ``torch.save``'d dict that
carries two extra keys: ``"vlrnn_file"`` (the file version, :data:`FILE_VERSION`) and
``"sha256"``, a SHA-256 over the rest of the dict's *content*: every tensor's dtype,
shape and raw bytes, every plain value's type and exact ``repr``, in the dict's order.
``torch.load`` does not verify the bytes of a tensor record (a flipped byte inside one
loads as a wrong number, silently), so the loader recomputes the digest from what it
loaded and refuses the file when the two differ. Hashing the content rather than the
zip's bytes keeps the file an ordinary checkpoint that ``torch.load(path,
weights_only=True)`` reads as before.

The digest accepts only what ``weights_only=True`` loads back (tensors, dicts, lists,
tuples, numbers, strings, bytes, ``None``, dtypes, devices): an object outside that set
makes :func:`digest` raise at save time, so vlrnn never writes a file that would need
full unpickling to read.
"""
from __future__ import annotations

import hashlib
from typing import Any, Dict

import torch

FILE_VERSION = 1
VERSION_KEY = "vlrnn_file"
CHECKSUM_KEY = "sha256"

_PLAIN = (bool, int, float, complex, str, bytes, type(None), torch.dtype, torch.device)


class CheckpointError(ValueError):
    """A file vlrnn cannot vouch for: empty, truncated, damaged (checksum mismatch), not
    a vlrnn file, written by an unknown version, or needing full unpickling. The message
    names the file, what failed and what to do.

    >>> import tempfile, pathlib
    >>> from vlrnn import CheckpointError, TrainedModel
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "model.pt"
    >>> _ = path.write_bytes(b"")                      # an empty file: refused, not loaded
    >>> try:
    ...     TrainedModel.load(path)
    ... except CheckpointError as err:
    ...     print("refused:", "empty" in str(err))
    refused: True
    """


def digest(obj: Any) -> str:
    """SHA-256 (hex) over the content of ``obj`` (see NOTE [file checksum]).

    >>> digest({"w": torch.zeros(2)}) == digest({"w": torch.zeros(2)})
    True
    >>> digest({"w": torch.zeros(2)}) == digest({"w": torch.ones(2)})
    False
    """
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def _feed(h: Any, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous().reshape(-1)
        h.update(f"T{t.dtype}{tuple(obj.shape)}:".encode())
        if t.numel():
            h.update(t.view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}:".encode())
        for k, v in obj.items():
            _feed(h, k)
            _feed(h, v)
    elif isinstance(obj, (list, tuple)):
        h.update(f"{'L' if isinstance(obj, list) else 'U'}{len(obj)}:".encode())
        for v in obj:
            _feed(h, v)
    elif isinstance(obj, _PLAIN):
        text = repr(obj)
        h.update(f"{type(obj).__name__}{len(text)}:{text}".encode())
    else:
        raise TypeError(f"cannot write a {type(obj).__module__}.{type(obj).__qualname__} into "
                        "a vlrnn file: files hold only tensors, dicts, lists, tuples, numbers, "
                        "strings and None (what torch.load(weights_only=True) reads back); "
                        "convert it to one of those (e.g. its state_dict())")


def sealed(obj: Dict[str, Any]) -> Dict[str, Any]:
    """``obj`` with the file version and the checksum of its content added."""
    if VERSION_KEY in obj or CHECKSUM_KEY in obj:
        raise ValueError(f"a vlrnn file's dict may not use the keys {VERSION_KEY!r} and "
                         f"{CHECKSUM_KEY!r} (they hold the version and checksum)")
    body = {**obj, VERSION_KEY: FILE_VERSION}
    return {**body, CHECKSUM_KEY: digest(body)}


def verify(obj: Any, where: str) -> Dict[str, Any]:
    """The payload of a loaded file (the dict without the checksum), after checking its
    version and checksum; raises :class:`CheckpointError` naming ``where`` otherwise."""
    if not isinstance(obj, dict) or VERSION_KEY not in obj or CHECKSUM_KEY not in obj:
        held = f"a dict without a {VERSION_KEY!r} checksum record" if isinstance(obj, dict) \
            else f"a {type(obj).__name__}"
        raise CheckpointError(
            f"{where} is not a vlrnn file (it holds {held}; vlrnn writes every checkpoint and "
            "saved model with a version and a checksum): point at a file vlrnn wrote, or "
            "re-create it with this version")
    version = obj[VERSION_KEY]
    if not isinstance(version, int) or version > FILE_VERSION or version < 1:
        raise CheckpointError(
            f"{where} was written by an unknown version of vlrnn (file version {version!r}; "
            f"this one reads version {FILE_VERSION}): upgrade vlrnn to read it")
    body = {k: v for k, v in obj.items() if k != CHECKSUM_KEY}
    if digest(body) != obj[CHECKSUM_KEY]:
        raise CheckpointError(
            f"{where} is damaged: checksum mismatch (its content is not what was written; a "
            "bad disk, a partial copy or an interrupted sync): use an earlier checkpoint or "
            "copy the file again")
    del body[VERSION_KEY]
    return body
