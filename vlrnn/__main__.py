"""``python -m vlrnn``: the same command line as the ``vlrnn`` script."""
import sys

from .cli import main

sys.exit(main())
