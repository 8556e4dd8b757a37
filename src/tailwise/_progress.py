"""The one progress display of the package: a transient rich bar on stderr.

Every long-running public function takes ``progress: bool = True`` and reports through
:func:`progress_bar` (an iterable) or :func:`progress_task` (explicit advances). The bar is
drawn on stderr only, so stdout stays clean for piped results, and only when stderr is a
terminal: in a pipe, a log file or a test it prints nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")


def _progress(label: str) -> Any:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    console = Console(stderr=True)
    columns = (
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
    )
    return Progress(*columns, console=console, transient=True, disable=not console.is_terminal)


def progress_bar(
    items: Iterable[T],
    total: int | None,
    progress: bool,
    label: str,
    describe: Callable[[T], str] | None = None,
) -> Iterator[T]:
    """Yield ``items`` under a transient bar headed ``label`` (none when ``progress`` is
    False or stderr is not a terminal); ``describe(item)`` names the current item."""
    if not progress:
        yield from items
        return
    with _progress(label) as bar:
        task = bar.add_task("", total=total)
        for item in items:
            if describe is not None:
                bar.update(task, description=describe(item))
            yield item
            bar.advance(task)


Advance = Callable[..., None]


@contextmanager
def progress_task(label: str, total: int | None, progress: bool) -> Iterator[Advance]:
    """A bar advanced by hand: ``with progress_task("hessian", 3, True) as advance:`` then
    ``advance(1, description="trace")``. ``total=None`` shows an indeterminate bar."""
    if not progress:
        yield lambda steps=1, description=None: None
        return
    with _progress(label) as bar:
        task = bar.add_task("", total=total)

        def advance(steps: float = 1, description: str | None = None) -> None:
            if description is not None:
                bar.update(task, description=description)
            bar.advance(task, steps)

        yield advance
