"""Running the ``tailwise`` command as a real subprocess, for the CLI tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path


def run_cli(
    *args: str,
    cache: Path,
    pythonpath: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``python -m tailwise.cli ARGS`` with its cache in ``cache``, a wide terminal, extra
    ``env`` variables, and ``pythonpath`` put first on PYTHONPATH (for ``--model`` modules)."""
    environment = {
        **os.environ,
        "TAILWISE_CACHE_DIR": str(cache),
        "COLUMNS": "200",
        **(env or {}),
    }
    if pythonpath is not None:
        environment["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(pythonpath), environment.get("PYTHONPATH", "")) if p
        )
    return subprocess.run(
        [sys.executable, "-m", "tailwise.cli", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
        check=False,
    )
