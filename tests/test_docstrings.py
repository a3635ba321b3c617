"""The examples in vlrnn's docstrings run as written and print what they show (doctest)."""
from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest
import torch

import vlrnn


def _modules():
    names = []
    for info in pkgutil.walk_packages(vlrnn.__path__, prefix="vlrnn."):
        if not info.name.endswith("__main__"):  # importing it runs the command line
            names.append(info.name)
    return sorted(names)


MODULES = _modules()


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    try:
        module = importlib.import_module(name)
    except ImportError as err:  # an optional extra's adapter without the extra installed
        pytest.skip(f"{name}: {err}")
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)  # as a user runs them
    try:
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS
                                 | doctest.NORMALIZE_WHITESPACE, report=False)
    finally:
        torch.set_default_dtype(old)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed"


def test_the_doctest_runner_sees_examples():
    finder = doctest.DocTestFinder()
    found = [t for name in MODULES if not name.endswith(("aeon", "sktime"))
             for t in finder.find(importlib.import_module(name)) if t.examples]
    assert len(found) >= 3, [t.name for t in found]
