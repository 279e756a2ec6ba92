"""The `Chunk` value: one piece of Python source the encoder turns into a vector."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

ChunkKind = Literal["module", "class", "function", "method", "window"]
# What a chunk defines: a public name and its kind (`chunker` decides; module names come from
# file paths, in `repo_encoder.names`)
DefinitionKind = Literal["module", "class", "exception", "function", "method", "constant"]
Definition = tuple[str, DefinitionKind]


def content_hash(text: str) -> str:
    """Stable hash of a chunk's text; the vector cache key together with the model key."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Chunk:
    """A function, method, class body or module-level block (or a line window of a file that
    does not parse). Lines are 1-based and inclusive. `part` numbers the pieces of a chunk that
    was split to fit the token budget (0 when it was not split). `definitions` are the public
    names whose definition line lies in the chunk (rules in `chunker`), in source order."""

    path: str
    qualname: str
    kind: ChunkKind
    start_line: int
    end_line: int
    text: str
    content_hash: str
    part: int = 0
    definitions: tuple[Definition, ...] = ()
