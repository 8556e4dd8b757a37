"""Where tailwise keeps files it can rebuild (reference checkpoints, downloaded-once data)."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV_VAR = "TAILWISE_CACHE_DIR"


def cache_dir() -> Path:
    """Return tailwise's cache directory, creating it if missing.

    The first of these that is set (and non-empty) wins:

    1. ``$TAILWISE_CACHE_DIR``
    2. ``$XDG_CACHE_HOME/tailwise``
    3. ``~/.cache/tailwise``

    Everything in it can be deleted at any time; tailwise rebuilds what it needs.

    >>> cache_dir().is_dir()
    True
    """
    explicit = os.environ.get(CACHE_ENV_VAR, "")
    if explicit:
        path = Path(explicit).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME", "")
        base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
        path = base / "tailwise"
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(
            f"cache_dir: {path} exists but is not a directory "
            f"(set ${CACHE_ENV_VAR} to a directory tailwise may write to)"
        )
    path.mkdir(parents=True, exist_ok=True)
    return path
