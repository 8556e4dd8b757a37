"""The layering of DESIGN.md, checked on the source: imports point down, never up or sideways,
and no module imports another package's ``_private`` names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "tailwise"

# DESIGN.md "Layering", lowest floor first. A unit is a subpackage or top-level module.
FLOORS: tuple[frozenset[str], ...] = (
    frozenset(
        {"_errors", "_io", "_progress", "_threads", "_seeds", "_modules", "_plotting", "_terminal"}
    ),
    frozenset({"cache", "models", "data", "weights"}),
    frozenset({"spectral", "tails"}),
    frozenset({"prune", "hessian", "similarity"}),
    frozenset({"attacks"}),
    frozenset({"train", "loading", "report"}),
    frozenset({"reference", "sims"}),
    frozenset({"experiments"}),
    frozenset({"cli", "__init__"}),
    frozenset({"__main__"}),
)
FLOOR = {unit: level for level, units in enumerate(FLOORS) for unit in units}
# Compatibility aliases that import upward lazily (on attribute access, never at import time):
# tailwise.models.reference_model etc. moved to tailwise.reference when models/ was put below
# train/ (issue 8); the old public names keep working.
ALIASES = frozenset({("models/__init__.py", "tailwise.reference")})


def _unit(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return parts[0]


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, imported tailwise module, imported names) of every import, lazy ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "tailwise" or node.module.startswith("tailwise."):
                found.append((node.lineno, node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("tailwise."):
                    found.append((node.lineno, alias.name, []))
    return found


SOURCES = sorted(SRC.rglob("*.py"))


def test_every_unit_has_a_floor() -> None:
    units = {_unit(path) for path in SOURCES}
    assert units <= set(FLOOR), f"place these in FLOORS (and DESIGN.md): {units - set(FLOOR)}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_point_down(path: Path) -> None:
    unit = _unit(path)
    for line, module, names in _imports(path):
        parts = module.split(".")
        target = parts[1] if len(parts) > 1 else "__init__"
        if target == unit or (str(path.relative_to(SRC)), module) in ALIASES:
            continue
        if FLOOR[unit] == 0 and FLOOR[target] == 0:
            continue  # the private helpers are one floor: they may use each other
        where = f"{path.relative_to(SRC)}:{line} imports {module}"
        assert FLOOR[target] < FLOOR[unit], f"{where}: not below {unit} (DESIGN.md layering)"
        private = [n for n in names if n.startswith("_")]
        assert not private, f"{where}: private names {private} across a package wall"
