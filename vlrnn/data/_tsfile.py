"""``read_ts``: the ``.ts`` text format of the UCR/UEA time-series archives, without sktime.

A ``.ts`` file has ``#`` comment lines, ``@key value`` header lines ending with ``@data``,
then one line per series: its dimensions separated by ``:``, each a comma-separated list
of values (``?`` = missing), and, when ``@classLabel true``, the class label as the last
``:``-separated field (regression files, ``@targetLabel true``: the target value there).
Series may have different lengths (``@equalLength false``).
Time-stamped files (``@timeStamps true``, values written as ``(time,value)``) are refused.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["read_ts"]


def _fail(path: Path, line_no: int, msg: str) -> ValueError:
    return ValueError(f"{path}: line {line_no}: {msg}")


def read_ts(path: str | Path) -> tuple[list[np.ndarray], np.ndarray | None,
                                             dict[str, str]]:
    """Read a ``.ts`` file into per-series arrays.

    Returns:
        ``(arrays, labels, header)``: ``arrays`` a list of ``N`` float64 arrays of shape
        ``(T_i, D)`` (time first, ``D`` dimensions; missing values NaN); ``labels`` an
        ``(N,)`` array of the class labels as strings, in file order, or for a regression
        file (``@targetLabel true``) a float64 ``(N,)`` array of the targets (``None``
        when the file has neither); ``header`` the ``@key value`` lines as a dict of strings (keys
        lower-case, e.g. ``header["problemname"]``).  ``vlrnn.data.from_arrays(arrays,
        labels)`` turns them into a frame.

    Raises:
        ValueError: naming the file and line: a missing ``@data`` line, a series whose
            dimensions differ in length, a dimension count that differs from
            ``@dimensions``, a label outside ``@classLabel``'s list, a target that is not a
            number, values that are not numbers, time stamps, both ``@classLabel true``
            and ``@targetLabel true``.

    >>> import tempfile, pathlib
    >>> from vlrnn.data import from_arrays, read_ts
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "tiny.ts"
    >>> _ = path.write_text("@problemName tiny\\n@univariate true\\n@classLabel true a b\\n"
    ...                     "@data\\n1.0,2.0,3.0:a\\n4.0,5.0:b\\n")
    >>> arrays, labels, header = read_ts(path)
    >>> [a.shape for a in arrays], labels.tolist(), header["problemname"]
    ([(3, 1), (2, 1)], ['a', 'b'], 'tiny')
    >>> frame, y = from_arrays(arrays, labels)
    >>> len(frame)
    5
    """
    path = Path(path)
    header: dict[str, str] = {}
    arrays: list[np.ndarray] = []
    labels: list[str] = []
    in_data = False
    with path.open(encoding="utf-8") as f:
        for line_no, raw in enumerate(f, start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if not in_data:
                if not line.startswith("@"):
                    raise _fail(path, line_no, "expected a '@key value' header line or "
                                "'@data' before the data, got {line[:40]!r}")
                key, _, value = line[1:].partition(" ")
                key = key.lower()
                if key == "data":
                    in_data = True
                    if _class_labels(header) is not None and _has_targets(header):
                        raise _fail(path, line_no, "the header says both @classLabel true "
                                    "and @targetLabel true; expected one of them")
                    if header.get("timestamps", "false").lower() == "true":
                        raise _fail(path, line_no, "time-stamped .ts files ((time,value) "
                                    "pairs) are not supported; export the values only")
                else:
                    header[key] = value.strip()
                continue
            arrays_labels = _parse_case(line, header, path, line_no)
            arrays.append(arrays_labels[0])
            if arrays_labels[1] is not None:
                labels.append(arrays_labels[1])
    if not in_data:
        raise ValueError(f"{path}: no '@data' line: not a .ts file")
    if not arrays:
        raise ValueError(f"{path}: no series after '@data'")
    if _has_targets(header):
        return arrays, np.array(labels, dtype=np.float64), header
    has_labels = _class_labels(header) is not None
    return arrays, (np.array(labels) if has_labels else None), header


def _has_targets(header: dict[str, str]) -> bool:
    """A regression file: ``@targetLabel true`` (the last field is a float target)."""
    return header.get("targetlabel", "").lower().split()[:1] == ["true"]


def _class_labels(header: dict[str, str]) -> list[str] | None:
    value = header.get("classlabel")
    if value is None:
        return None
    parts = value.split()
    if not parts or parts[0].lower() != "true":
        return None
    return parts[1:]


def _parse_case(line: str, header: dict[str, str], path: Path, line_no: int
                ) -> tuple[np.ndarray, str | float | None]:
    fields = line.split(":")
    classes = _class_labels(header)
    label: str | float | None = None
    if _has_targets(header):
        if len(fields) < 2:
            raise _fail(path, line_no, "expected dimensions and a target value separated by "
                        "':' (@targetLabel true), found no ':'")
        text = fields.pop().strip()
        try:
            label = float(text)
        except ValueError:
            raise _fail(path, line_no, f"the target value must be a number (@targetLabel "
                        f"true), got {text[:40]!r}") from None
    elif classes is not None:
        if len(fields) < 2:
            raise _fail(path, line_no, "expected dimensions and a class label separated by "
                        "':', found no ':'")
        label = fields.pop().strip()
        if classes and label not in classes:
            raise _fail(path, line_no, f"class label {label!r} is not among @classLabel's "
                        f"{classes}")
    want = header.get("dimensions")
    if want is not None and want.isdigit() and len(fields) != int(want):
        raise _fail(path, line_no, f"{len(fields)} dimensions, but the header says "
                    f"@dimensions {want}")
    dims = []
    for d, field in enumerate(fields):
        if "(" in field:
            raise _fail(path, line_no, "time-stamped values ((time,value) pairs) are not "
                        "supported")
        try:
            dims.append(np.array([np.nan if v.strip() == "?" else float(v)
                                  for v in field.split(",")], dtype=np.float64))
        except ValueError:
            raise _fail(path, line_no, f"dimension {d}: values must be numbers or '?', got "
                        f"{field[:40]!r}") from None
    lengths = {len(v) for v in dims}
    if len(lengths) != 1:
        raise _fail(path, line_no, f"the dimensions of one series have different lengths "
                    f"{[len(v) for v in dims]}; expected the same number of steps in each")
    return np.stack(dims, axis=1), label
