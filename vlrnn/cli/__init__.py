"""The command line: ``vlrnn train``, ``vlrnn predict`` (``commands``) and ``vlrnn demo``
(``demo``). ``python -m vlrnn`` and the ``vlrnn`` script both call :func:`main`."""
from ._commands import build_parser, main

__all__ = ["build_parser", "main"]
