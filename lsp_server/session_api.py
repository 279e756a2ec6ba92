"""The session's interface with no model in sight: what a completion returns and the calls the
protocol layer makes of a workspace session (what a session tells the editor, and its
severities, are `lsp_server.events`, re-exported here). Importing it costs nothing, so the
server answers `initialize` before torch, transformers or peft are loaded
(`lsp_server.fast_start`)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from lsp_server.events import Level, QuietEvents, SessionEvents
from lsp_server.prompt import Prompt

__all__ = ["CompletionResult", "Level", "QuietEvents", "SessionEvents", "WorkspaceSession"]

if TYPE_CHECKING:
    from lsp_server.config import ServerConfig
    from repo2lora.generation import CompletionTimings


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
