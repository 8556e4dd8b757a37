"""Every ```python block of the README runs, in order, in one namespace, in a temporary
working directory; nothing that runs in the test suite leaves output files in the checkout."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import matplotlib
import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


PACKAGES = (
    "tailwise",
    "tailwise.attacks",
    "tailwise.data",
    "tailwise.hessian",
    "tailwise.models",
    "tailwise.prune",
    "tailwise.report",
    "tailwise.similarity",
    "tailwise.sims",
    "tailwise.tails",
    "tailwise.train",
)


@pytest.mark.parametrize("package", PACKAGES)
def test_readme_has_examples_for_the_public_api(package: str) -> None:
    import importlib

    module = importlib.import_module(package)
    text = "\n".join(BLOCKS)
    for name in module.__all__:
        if name.startswith("__") or name.isupper() or name[0].isupper():
            continue  # constants and types are documented in prose
        assert name in text, f"public function {package}.{name} has no README example"


def test_readme_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TAILWISE_CACHE_DIR", str(tmp_path / "cache"))
    namespace: dict[str, object] = {"__name__": "readme"}
    for index, block in enumerate(BLOCKS):
        code = compile(block, f"README.md python block {index + 1}", "exec")
        exec(code, namespace)
    assert (tmp_path / "report.html").exists()


# What examples, doctests and commands write: figures, reports, tables, checkpoints.
OUTPUT_SUFFIXES = frozenset({".png", ".svg", ".pdf", ".html", ".csv", ".safetensors", ".pt"})


def test_nothing_left_output_files_in_the_checkout() -> None:
    """README blocks (above) and doctests write into temporary folders, never into the working
    directory: a figure once ended up committed at the repository root. pytest runs the
    doctests of ``src/tailwise`` before ``tests/`` (``testpaths``), so this also sees theirs."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    strays = [
        path
        for path in listed
        if Path(path).suffix.lower() in OUTPUT_SUFFIXES
        and (REPO / path).exists()
        and ("/" not in path or path.startswith(("src/", "tests/")))
    ]
    assert not strays, f"output files in the checkout (write them to a tmp_path): {strays}"
