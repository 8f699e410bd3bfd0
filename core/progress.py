"""Progress of a long management command: a bar (tqdm) on the command's stderr when that
is a terminal, nothing otherwise — cron jobs, pipes and logs get the command's one-line
summary only, not a line per batch."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from django.core.management.base import BaseCommand
from tqdm import tqdm


class Progress(Protocol):
    def update(self, n: int = 1) -> Any: ...


class _Silent:
    def update(self, n: int = 1) -> None:
        return None


def on_terminal(command: BaseCommand) -> bool:
    """Whether the command's stderr is an interactive terminal (OutputWrapper.isatty)."""
    return bool(command.stderr.isatty())


@contextmanager
def progress_bar(
    command: BaseCommand, *, total: int | None, unit: str, desc: str, quiet: bool = False
) -> Iterator[Progress]:
    """`with progress_bar(self, total=n, unit="event", desc="export") as bar: bar.update(k)`;
    `quiet` (--verbosity 0) shows no bar."""
    if quiet or not on_terminal(command):
        yield _Silent()
        return
    # The bar writes to the real stream behind Django's OutputWrapper (which would add a
    # newline to each redraw).
    stream = command.stderr._out
    columns, lines = _size(stream)
    with tqdm(total=total, unit=unit, desc=desc, file=stream, leave=False, ncols=columns, nrows=lines) as bar:
        yield bar
        # Drawn at most every 0.1 s: a quick job would otherwise vanish at 0 %. Show where it
        # ended before the bar is cleared for the one-line summary.
        bar.refresh()


def _size(stream: Any) -> tuple[int, int]:
    """The terminal's columns and lines; 80 x 24 where it reports none (a pty without a
    size, where tqdm would draw nothing)."""
    try:
        size = os.get_terminal_size(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return 80, 24
    return size.columns or 80, size.lines or 24
