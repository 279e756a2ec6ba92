"""Progress display for long benchmark runs: one rich bar per stage with elapsed time and ETA
on a terminal, or a plain line per tenth of each stage (with its ETA) in a log."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from repo2lora.progress import ProgressFn


def _clock(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class LineProgress:
    """Writes `stage done/total elapsed ETA` lines: at a stage's start, every tenth, and end."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.started: dict[str, float] = {}
        self.shown: dict[str, int] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        start = self.started.setdefault(stage, now)
        tenth = 10 if total <= 0 else min(10, done * 10 // total)
        if stage in self.shown and tenth <= self.shown[stage]:
            return
        self.shown[stage] = tenth
        elapsed = now - start
        if total and done >= total:
            tail = "done"
        elif done and elapsed >= 1.0:  # an estimate from less than a second of work is noise
            tail = f"ETA {_clock(elapsed / done * (total - done))}"
        else:
            tail = ""
        print(
            f"{stage}: {done}/{total}  elapsed {_clock(elapsed)}  {tail}".rstrip(),
            file=self.stream,
            flush=True,
        )


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
