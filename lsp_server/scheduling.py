"""Completion requests as an editor sends them while the user types: per document, a newer
request replaces an older one (debounce before the model starts, a stop flag after), and a
request the client cancels (`$/cancelRequest`) stops its generation between decoding steps."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TypeVar

from repo2lora.generation import Cancelled

T = TypeVar("T")


class DocumentRequests:
    """Runs one blocking job per request on `executor`, giving it a `should_stop` callable that
    turns true when the request is cancelled or superseded by a newer one for the same key."""

    def __init__(self, executor: Executor) -> None:
        self.executor = executor
        self._latest: dict[str, tuple[object, threading.Event]] = {}

    async def run(
        self, key: str, job: Callable[[Callable[[], bool]], T], debounce_s: float
    ) -> T | None:
        """`job(should_stop)`'s result, or None when a newer request for `key` replaced this
        one. Cancelling the awaiting task (pygls does on `$/cancelRequest`) stops the job."""
        ticket, stop = object(), threading.Event()
        previous = self._latest.get(key)
        if previous is not None:
            previous[1].set()
        self._latest[key] = (ticket, stop)
        try:
            if debounce_s > 0:
                await asyncio.sleep(debounce_s)
            if stop.is_set():
                return None
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self.executor, job, stop.is_set)
        except Cancelled:
            return None  # superseded while decoding
        except asyncio.CancelledError:
            stop.set()
            raise
        finally:
            if self._latest.get(key, (None,))[0] is ticket:
                del self._latest[key]
