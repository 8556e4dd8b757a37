"""One transient rich progress bar over an iterable, shared by the per-layer analyses."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress_bar(
    items: Iterable[T],
    total: int,
    progress: bool,
    label: str,
    describe: Callable[[T], str] | None = None,
) -> Iterator[T]:
    """Yield ``items`` under a transient bar headed ``label`` (none when ``progress`` is
    False); ``describe(item)`` names the current item next to the bar."""
    if not progress:
        yield from items
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
    )
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task("", total=total)
        for item in items:
            if describe is not None:
                bar.update(task, description=describe(item))
            yield item
            bar.advance(task)
