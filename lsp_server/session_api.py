"""The session's interface with no model in sight: what a session tells the editor (events,
severities), what a completion returns, and the calls the protocol layer makes of a workspace
session. Importing it costs nothing, so the server answers `initialize` before torch,
transformers or peft are loaded (`lsp_server.fast_start`)."""

from __future__ import annotations

import enum
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from lsp_server.prompt import Prompt

if TYPE_CHECKING:
    from lsp_server.config import ServerConfig
    from repo2lora.generation import CompletionTimings


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


@dataclass(frozen=True)
class CompletionResult:
    text: str
    version: int  # of the adapter it was made with
    source: str  # "model", "cache" or "typed-along"
    timings: CompletionTimings | None = None  # where a model run's time went


class WorkspaceSession(Protocol):
    """What the protocol layer (`lsp_server.server`) calls on the workspace it serves:
    `lsp_server.session.Session`, and `lsp_server.fast_start.FastStartSession` in front of it."""

    roots: list[Path]

    @property
    def config(self) -> ServerConfig: ...
    def cached(self, prompt: Prompt) -> CompletionResult | None: ...
    def complete(self, prompt: Prompt, should_stop: Callable[[], bool]) -> CompletionResult: ...
    def configure(self, options: Any) -> list[str]: ...
    def status(self) -> dict[str, Any]: ...
    def regenerate(self) -> Future[None]: ...
    def file_saved(self, path: str) -> None: ...
    def close(self) -> None: ...
