"""Headless Chromium for the HTML report tests (installed by `make browser`)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

RunChromium = Callable[[list[str], Path], "subprocess.CompletedProcess[str]"]


def _chromium() -> str:
    """Path of Debian's Chromium; skip without it (fail on CI, where `make browser` installs)."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None and os.path.exists("/usr/bin/chromium"):
        path = "/usr/bin/chromium"
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium not found: run `make browser` to install it")
        pytest.skip("chromium not installed (run `make browser`)")
    return path


@pytest.fixture
def run_chromium() -> RunChromium:
    """``run_chromium(args, profile)``: headless Chromium with a fresh profile folder."""
    binary = _chromium()

    def run(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    return run
