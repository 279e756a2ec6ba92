"""The progress callback type that long steps report through (the CLI draws bars with it, the
language server sends `$/progress`, tests pass nothing)."""

from __future__ import annotations

from typing import Protocol


class ProgressFn(Protocol):
    def __call__(self, stage: str, done: int, total: int) -> None:
        """`stage` is a short verb ("chunk", "encode"); `done` of `total` units are complete."""


def no_progress(stage: str, done: int, total: int) -> None:
    return None
