"""The progress callback type that long steps report through (the CLI draws bars with it, the
language server sends `$/progress`, tests pass nothing), and its plain-line form for a log."""

from __future__ import annotations

import time
from collections.abc import Collection
from typing import Protocol, TextIO


class ProgressFn(Protocol):
    def __call__(self, stage: str, done: int, total: int) -> None:
        """`stage` is a short verb ("chunk", "encode"); `done` of `total` units are complete."""


def no_progress(stage: str, done: int, total: int) -> None:
    return None


def _clock(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class LineProgress:
    """Writes `stage done/total elapsed ETA` lines: at a stage's start, every tenth, and end
    (only for `stages`, when given: a long command's outer stage, not each of its steps')."""

    def __init__(self, stream: TextIO, stages: Collection[str] | None = None) -> None:
        self.stream = stream
        self.stages = stages
        self.started: dict[str, float] = {}
        self.shown: dict[str, int] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.stages is not None and stage not in self.stages:
            return
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
