"""An LRU cache of shown completions keyed by (prefix, suffix, adapter version). It also serves
the user typing along a shown suggestion: when the new prefix is an old prefix plus the start of
that old completion (and the text after the cursor is unchanged), the rest of the completion is
the answer, without running the model."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from lsp_server.prompt import Prompt


@dataclass(frozen=True)
class CacheHit:
    text: str
    typed_along: bool  # served from a longer completion the user is typing along


class CompletionCache:
    """Thread-safe: the event loop looks up, the generation thread looks up and stores."""

    def __init__(self, capacity: int = 256) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[tuple[str, str, int], str] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, prompt: Prompt, version: int, text: str) -> None:
        if self.capacity <= 0:
            return
        with self._lock:
            key = (prompt.prefix, prompt.suffix, version)
            self._entries[key] = text
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def lookup(self, prompt: Prompt, version: int) -> CacheHit | None:
        with self._lock:
            key = (prompt.prefix, prompt.suffix, version)
            text = self._entries.get(key)
            if text is not None:
                self._entries.move_to_end(key)
                return CacheHit(text, typed_along=False)
            for (prefix, suffix, v), shown in reversed(self._entries.items()):
                if v != version or suffix != prompt.suffix or len(prefix) >= len(prompt.prefix):
                    continue
                typed = prompt.prefix[len(prefix) :]
                if (
                    len(typed) < len(shown)
                    and shown.startswith(typed)
                    and prompt.prefix.startswith(prefix)
                ):
                    self._entries.move_to_end((prefix, suffix, v))
                    return CacheHit(shown[len(typed) :], typed_along=True)
            return None

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
