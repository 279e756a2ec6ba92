"""What a served session tells the editor (`SessionEvents`: log and show messages, progress,
adapter changes; called from background threads), its severities, and the events of in-process
use (`QuietEvents`: kept, never sent)."""

from __future__ import annotations

import enum
from typing import Any, Protocol


class Level(enum.IntEnum):
    """Message severity; the values are LSP's MessageType."""

    ERROR = 1
    WARNING = 2
    INFO = 3
    LOG = 4


class SessionEvents(Protocol):
    """What the session tells the editor. Called from background threads."""

    def log(self, level: Level, message: str) -> None: ...
    def show(self, level: Level, message: str) -> None: ...
    def progress_begin(self, title: str) -> None: ...
    def progress_report(self, message: str, percentage: int | None) -> None: ...
    def progress_end(self, message: str) -> None: ...
    def adapter_changed(self, status: dict[str, Any]) -> None: ...


class QuietEvents:
    """Events for in-process use (benchmark, tests): messages are kept, nothing is sent."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, Level, str]] = []

    def log(self, level: Level, message: str) -> None:
        self.messages.append(("log", level, message))

    def show(self, level: Level, message: str) -> None:
        self.messages.append(("show", level, message))

    def progress_begin(self, title: str) -> None:
        self.messages.append(("progress", Level.LOG, title))

    def progress_report(self, message: str, percentage: int | None) -> None:
        return None

    def progress_end(self, message: str) -> None:
        self.messages.append(("progress", Level.LOG, message))

    def adapter_changed(self, status: dict[str, Any]) -> None:
        self.messages.append(("adapter", Level.LOG, str(status["adapter"]["version"])))
