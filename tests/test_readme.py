"""Every ```python block of the README runs, in order, in one namespace."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


PACKAGES = (
    "tailwise",
    "tailwise.data",
    "tailwise.hessian",
    "tailwise.models",
    "tailwise.prune",
    "tailwise.report",
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
