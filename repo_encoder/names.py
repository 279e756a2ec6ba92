"""The names a snapshot defines (`NameIndex`): every chunk's definitions, the modules its file
paths name, and how many chunks mention each identifier, as counts that a chunk diff moves in
O(diff): adding a commit's new chunks and removing its old ones gives exactly the index a fresh
snapshot of the commit would.

Module names come from paths: a file's stem (`pkg/io/json.py` -> `json`), and every directory
above it (`pkg`, `io`) except `src`; `__init__`/`__main__` and names starting with "_" or "."
are not module names. Mentions count the chunks whose text holds an identifier (a word of
letters, digits and "_"), once per chunk however often it appears there."""

from __future__ import annotations

import collections
import functools
import json
import re
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from repo_encoder.chunk import Chunk, DefinitionKind

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NOT_MODULES = frozenset({"src", "__init__", "__main__"})
FORMAT_VERSION = 1


@dataclass(frozen=True)
class RepoName:
    """One public name of a repository with what its learned score reads: where and how often
    it is defined, how many chunks mention it, and how deep in the tree its shallowest
    definition sits (0: a top-level file or package)."""

    name: str
    kind: DefinitionKind
    definitions: int  # of this (name, kind), across files
    files: int  # files that define it
    mentions: int  # chunks whose text holds the name
    depth: int  # directories above its shallowest defining file
    in_init: bool  # defined in a package's __init__.py


def module_names(path: str) -> list[str]:
    """The module names a Python file's repository path makes importable (see the module
    docstring)."""
    p = PurePosixPath(path)
    parts = [*p.parent.parts, p.stem]
    return [n for n in parts if n not in _NOT_MODULES and not n.startswith(("_", "."))]


class NameIndex:
    """Counts over a set of chunks: definitions by (name, kind, path), chunks by path (the
    modules that exist) and chunks by mentioned identifier."""

    def __init__(self) -> None:
        self.defined: collections.Counter[tuple[str, DefinitionKind, str]] = collections.Counter()
        self.paths: collections.Counter[str] = collections.Counter()
        self.mentions: collections.Counter[str] = collections.Counter()

    @classmethod
    def of(cls, chunks: Iterable[Chunk]) -> NameIndex:
        """The index of a snapshot's chunks."""
        index = cls()
        index.add(chunks)
        return index

    def copy(self) -> NameIndex:
        out = NameIndex()
        out.defined = self.defined.copy()
        out.paths = self.paths.copy()
        out.mentions = self.mentions.copy()
        return out

    def add(self, chunks: Iterable[Chunk]) -> None:
        self._count(chunks, 1)

    def remove(self, chunks: Iterable[Chunk]) -> None:
        self._count(chunks, -1)

    def apply(self, added: Iterable[Chunk], removed: Iterable[Chunk]) -> None:
        """One chunk diff: `added` holds the new side of modified chunks, `removed` the old."""
        self.add(added)
        self.remove(removed)

    def _count(self, chunks: Iterable[Chunk], sign: int) -> None:
        for c in chunks:
            for name, kind in c.definitions:
                key = (name, kind, c.path)
                self.defined[key] += sign
                if self.defined[key] <= 0:
                    del self.defined[key]
            self.paths[c.path] += sign
            if self.paths[c.path] <= 0:
                del self.paths[c.path]
            for word in set(_WORD.findall(c.text)):
                self.mentions[word] += sign
                if self.mentions[word] <= 0:
                    del self.mentions[word]

    def names(self) -> list[RepoName]:
        """Every public name, modules included, sorted by (name, kind)."""
        defs: dict[tuple[str, DefinitionKind], list[tuple[str, int]]] = {}
        for (name, kind, path), n in self.defined.items():
            defs.setdefault((name, kind), []).append((path, n))
        for path in self.paths:
            for name in module_names(path):
                defs.setdefault((name, "module"), []).append((path, 1))
        out = []
        for (name, kind), where in sorted(defs.items()):
            files = {p for p, _ in where}
            shallow = min(files, key=lambda p: (p.count("/"), p))
            out.append(
                RepoName(
                    name=name,
                    kind=kind,
                    definitions=sum(n for _, n in where) if kind != "module" else len(files),
                    files=len(files),
                    mentions=self.mentions.get(name, 0),
                    depth=shallow.count("/"),
                    in_init=any(p.endswith("__init__.py") for p in files),
                )
            )
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NameIndex):
            return NotImplemented
        return (self.defined, self.paths, self.mentions) == (
            other.defined,
            other.paths,
            other.mentions,
        )

    def merge(self, other: NameIndex) -> None:
        """Add `other`'s counts (the index of the union of two disjoint sets of chunks)."""
        self.defined.update(other.defined)
        self.paths.update(other.paths)
        self.mentions.update(other.mentions)

    def subtract(self, other: NameIndex) -> None:
        """Take away `other`'s counts (the index without a subset of its chunks); what falls to
        zero goes, as `remove` does."""
        self.defined -= other.defined
        self.paths -= other.paths
        self.mentions -= other.mentions

    def to_json(self) -> dict[str, Any]:
        """A deterministic JSON document (what `from_json` reads)."""
        return {
            "version": FORMAT_VERSION,
            "defined": sorted([n, k, p, c] for (n, k, p), c in self.defined.items()),
            "paths": sorted(self.paths.items()),
            "mentions": sorted(self.mentions.items()),
        }

    @classmethod
    def from_json(cls, doc: Any) -> NameIndex | None:
        """The index `to_json` wrote, or None when it is of another format."""
        if not isinstance(doc, dict) or doc.get("version") != FORMAT_VERSION:
            return None
        index = cls()
        index.defined.update({(n, k, p): c for n, k, p, c in doc["defined"]})
        index.paths.update(dict(doc["paths"]))
        index.mentions.update(dict(doc["mentions"]))
        return index

    def to_bytes(self) -> bytes:
        """A compact, deterministic encoding (zlib-compressed JSON) for the state store."""
        return zlib.compress(json.dumps(self.to_json(), separators=(",", ":")).encode(), 1)

    @classmethod
    def from_bytes(cls, data: bytes) -> NameIndex | None:
        """The index `to_bytes` wrote, or None when it is unreadable or of another format (the
        caller rebuilds it from a snapshot)."""
        try:
            doc = json.loads(zlib.decompress(data))
        except (zlib.error, ValueError):
            return None
        return cls.from_json(doc)


def renamed_definitions(before: NameIndex, after: NameIndex) -> set[str]:
    """The names one commit renamed to, as seen in its definitions: a name `after` defines
    that `before` did not, in a file where `before` defined a name of the same kind that
    `after` no longer defines (a definition replaced by another of its kind in place). What
    a real history's renames look like without a manifest that records them."""
    old = {(n, k, p) for (n, k, p) in before.defined if not n.startswith("_")}
    new = {(n, k, p) for (n, k, p) in after.defined if not n.startswith("_")}
    old_names = {n for n, _, _ in old}
    new_names = {n for n, _, _ in new}
    gone = {(k, p) for n, k, p in old if n not in new_names}
    return {n for n, k, p in new if n not in old_names and (k, p) in gone}


_DEFINING = re.compile(r"(?:def|class)\s+$")
_USES_KEPT = 8  # offsets kept per identifier and text (more than any reader asks for)


@functools.lru_cache(maxsize=1 << 16)  # a chunk's text is scanned once while it lives
def _uses_in(text: str) -> dict[str, tuple[int, ...]]:
    """Where each identifier of `text` is used (not defined with `def`/`class`, not at its very
    start): the offsets of its first uses."""
    out: dict[str, list[int]] = {}
    start = len(text) - len(text.lstrip())  # a word here has nothing before it
    for m in _WORD.finditer(text):
        got = out.setdefault(m.group(), [])
        if len(got) >= _USES_KEPT or m.start() <= start:
            continue
        if _DEFINING.search(text[max(0, m.start() - 16) : m.start()]):
            continue
        got.append(m.start())
    return {w: tuple(v) for w, v in out.items() if v}


def mention_contexts(
    texts: Iterable[str], names: Iterable[str], per_name: int, chars: int = 400
) -> dict[str, list[str]]:
    """Where the code uses each of `names`: the text before each of its first `per_name`
    mentions in `texts` (in order), at most `chars` characters, without the spaces that end
    it (the state there is the one that writes ` Name`). A definition (`def Name`, `class
    Name`) is not a use; a mention at the very start of a text has no context and is skipped.
    Names with no use are left out. Each text is scanned once (cached), so a commit's call
    costs its new chunks plus a set lookup per chunk."""
    wanted = set(names)
    out: dict[str, list[str]] = {}
    for text in texts:
        if not wanted:
            break
        uses = _uses_in(text)
        for word in wanted.intersection(uses):
            got = out.setdefault(word, [])
            for at in uses[word][: per_name - len(got)]:
                got.append(text[max(0, at - chars - 16) : at].rstrip(" \t")[-chars:])
            if len(got) >= per_name:
                wanted.discard(word)
    return out
