"""The errors a user sees, and how one is shortened to a line.

:class:`UsageError` is a bad value a user gave (an option, a pattern, a ratio). It subclasses
``ValueError`` so existing ``except ValueError`` code keeps working. The command line prints
exactly these (and the file errors of :mod:`tailwise.weights`) as one ``error:`` line with
exit status 2; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["UsageError", "first_line"]


class UsageError(ValueError):
    """A value a user gave is unusable; the message names the option and what is accepted."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type name if it has none).

    >>> first_line(ValueError("bad value\\nmore detail"))
    'bad value'
    >>> first_line(KeyError())
    'KeyError'
    """
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__
