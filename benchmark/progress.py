"""Progress display for long benchmark runs: one rich bar per stage with elapsed time and ETA
on a terminal, or a plain line per tenth of each stage (with its ETA) in a log."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from repo2lora.progress import LineProgress, ProgressFn


@contextmanager
def progress_display(enabled: bool, stream: TextIO | None = None) -> Iterator[ProgressFn]:
    """A ProgressFn: rich bars with ETA when `stream` (default stderr) is a terminal, lines
    otherwise, nothing when disabled."""
    out = stream or sys.stderr
    if not enabled:
        yield lambda stage, done, total: None
        return
    if not out.isatty():
        yield LineProgress(out)
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("{task.description:<34}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=Console(file=out),
    ) as bars:
        tasks: dict[str, Any] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bars.add_task(stage, total=total)
            bars.update(tasks[stage], completed=done, total=total)

        yield update
