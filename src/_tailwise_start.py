"""Entry point of the ``tailwise`` console script, outside the ``tailwise`` package.

Importing ``tailwise.cli`` imports torch, SciPy and the package (a second or more). A Ctrl-C
in that window would print a ``KeyboardInterrupt`` traceback from the import machinery
before :func:`tailwise.cli.main` could install its handling. This module imports nothing
heavy itself, so it can catch that interrupt and end like every other one: ``interrupted``
on stderr, exit status 130.
"""

from __future__ import annotations

import sys


def main() -> None:
    """Import the command line (interruptibly), then run it."""
    try:
        from tailwise.cli import main as run
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    run()
