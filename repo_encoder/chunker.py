"""Cuts one Python file into content-hashed `Chunk`s: functions, classes, methods and runs of
module-level code, each within a token budget.

Rules, in the order they apply:

* Bytes are sniffed before anything else: a NUL in the first 8 KiB means "binary", more than
  `max_file_bytes` means "too_large", invalid UTF-8 (after dropping a BOM) means "undecodable",
  and text with nothing but whitespace (or nothing tree-sitter sees as code) means "empty".
  Line endings are normalised to `\\n` first, so a file checked out with CRLF chunks (and
  hashes) exactly like its LF twin.
* A file tree-sitter cannot parse cleanly is cut into windows of `window_lines` lines (kind
  "window", qualname "<window>"); windows holding only whitespace are dropped.
* Otherwise every top-level `def`/`async def` is a "function" chunk and every top-level class a
  "class" chunk. A def directly in a class body is a "method" (`Class.method`) and a class
  directly in a class body is a class chunk of its own (`Outer.Inner`, whose methods are
  `Outer.Inner.m`). Decorators belong to the definition they decorate. Anything defined inside a
  function, or inside an `if`/`try`/`with` block, stays in the chunk around it.
* A class chunk spans the whole class (`start_line`..`end_line`) but its text leaves out the
  lines of its method and nested-class chunks, so each line lands in exactly one chunk.
* Comments follow the code they sit among: a comment is never attached to the next definition.
  At module level consecutive non-definition statements and the comments between them form one
  "module" chunk (qualname "<module>"), so a comment directly above a top-level def belongs to the
  module chunk before the def (or is a module chunk on its own between two defs). In a class
  body, comments between methods stay in the class chunk. Comments inside a def's span are the
  def's; a comment after a def's last statement is the def's when indented like its body and
  the enclosing level's when indented less (that is how tree-sitter nests it). Blank lines
  between chunks belong to none.
* A chunk over `max_tokens` (estimated as UTF-8 bytes / 4, `repo_encoder.tokens`) is cut into
  consecutive runs of its lines, each within budget; a single line over budget is cut by
  characters into pieces of its own. Pieces keep the qualname and kind, are numbered `part`
  1..k and span their own first to last line, which for a class may enclose a method
  (unsplit chunks have part 0).
* A chunk lists the public names it defines (`Chunk.definitions`): its function ("function"),
  method ("method", not dunders) or class ("exception" when its name or a base's ends in Error,
  Exception or Warning, else "class"), and in a module chunk every top-level assignment to an
  UPPER_CASE name ("constant"). A name that starts with "_" is not public. A definition belongs
  to the chunk (or the part of a split one) that holds the line of its name; line windows of a
  file that does not parse define nothing.
"""

from __future__ import annotations

import bisect
import collections
import itertools
import operator
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import tree_sitter_python
from tree_sitter import Language, Node, Parser

from repo_encoder.chunk import Chunk, ChunkKind, Definition, DefinitionKind, content_hash
from repo_encoder.errors import UserError
from repo_encoder.tokens import BYTES_PER_TOKEN

SkipReason = Literal["binary", "undecodable", "too_large", "empty"]
FallbackReason = Literal["syntax_error"]

COUNT_KEYS = (
    "files_chunked",
    "skipped_binary",
    "skipped_undecodable",
    "skipped_too_large",
    "skipped_empty",
    "fallback_syntax_error",
    "chunks_split",
)

_PYTHON = Language(tree_sitter_python.language())
_BINARY_SNIFF_BYTES = 8192
_UTF8_BOM = b"\xef\xbb\xbf"

# A public name a draft defines: the row of its name (0-based), the name and its kind
_RowDefinition = tuple[int, str, DefinitionKind]
# A chunk before it is hashed and fitted to the budget: qualname, kind, first and last row of its
# span (0-based, inclusive), the row ranges whose lines make up its text, and its definitions.
_Draft = tuple[str, ChunkKind, int, int, tuple[tuple[int, int], ...], tuple[_RowDefinition, ...]]
_CONSTANT = re.compile(r"[A-Z][A-Z0-9_]*\Z")
_EXCEPTION_SUFFIXES = ("Error", "Exception", "Warning")


@dataclass(frozen=True)
class ChunkerConfig:
    """How files are cut: the token budget per chunk, the window size for files that do not
    parse, and the largest file that is read at all."""

    max_tokens: int = 512
    window_lines: int = 60
    max_file_bytes: int = 1_000_000

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise UserError(f"max_tokens is {self.max_tokens}; set it to 1 or more")
        if self.window_lines < 1:
            raise UserError(f"window_lines is {self.window_lines}; set it to 1 or more")
        if self.max_file_bytes < 0:
            raise UserError(f"max_file_bytes is {self.max_file_bytes}; set it to 0 or more")


@dataclass
class FileChunks:
    """The chunks of one file in source order, or why it has none (`skipped`), and whether it
    was cut by line windows because it does not parse (`fallback`)."""

    chunks: list[Chunk]
    skipped: SkipReason | None = None
    fallback: FallbackReason | None = None


@dataclass
class ChunkedSnapshot:
    """The chunks of many files, with counts of what happened to the files (`COUNT_KEYS`) and
    the number of bytes looked at."""

    chunks: list[Chunk]
    counts: collections.Counter[str]
    bytes_read: int


def chunk_source(path: str, data: bytes, config: ChunkerConfig = ChunkerConfig()) -> FileChunks:
    """Cut the file at repository-relative `path` with contents `data` into chunks (see the
    module docstring for the rules). Never raises on any bytes."""
    if b"\x00" in data[:_BINARY_SNIFF_BYTES]:
        return FileChunks([], skipped="binary")
    if len(data) > config.max_file_bytes:
        return FileChunks([], skipped="too_large")
    source = data[len(_UTF8_BOM) :] if data.startswith(_UTF8_BOM) else data
    try:
        text = source.decode("utf-8")
    except UnicodeDecodeError:
        return FileChunks([], skipped="undecodable")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        source = text.encode("utf-8")
    if not text or text.isspace():
        return FileChunks([], skipped="empty")

    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # the text ended with a newline: that is not an extra line
    root = Parser(_PYTHON).parse(source).root_node
    if root.has_error:
        drafts = _window_drafts(lines, config.window_lines)
        fallback: FallbackReason | None = "syntax_error"
    else:
        drafts = _syntax_drafts(root, source)
        fallback = None

    if not drafts:  # e.g. only a U+FEFF: text, but no statement or comment
        return FileChunks([], skipped="empty")
    return FileChunks(_chunks(path, lines, drafts, config.max_tokens), fallback=fallback)


def chunk_files(
    files: Iterable[tuple[str, bytes]], config: ChunkerConfig = ChunkerConfig()
) -> ChunkedSnapshot:
    """Chunk every `(path, data)` of `files`, keeping their order, and count what happened."""
    chunks: list[Chunk] = []
    counts: collections.Counter[str] = collections.Counter(dict.fromkeys(COUNT_KEYS, 0))
    bytes_read = 0
    for path, data in files:
        bytes_read += len(data)
        result = chunk_source(path, data, config)
        if result.skipped is not None:
            counts[f"skipped_{result.skipped}"] += 1
            continue
        counts["files_chunked"] += 1
        if result.fallback is not None:
            counts[f"fallback_{result.fallback}"] += 1
        counts["chunks_split"] += sum(1 for c in result.chunks if c.part == 1)
        chunks.extend(result.chunks)
    return ChunkedSnapshot(chunks, counts, bytes_read)


def _window_drafts(lines: list[str], window_lines: int) -> list[_Draft]:
    drafts: list[_Draft] = []
    for first in range(0, len(lines), window_lines):
        last = min(first + window_lines, len(lines)) - 1
        if any(line.strip() for line in lines[first : last + 1]):
            drafts.append(("<window>", "window", first, last, ((first, last),), ()))
    return drafts


def _syntax_drafts(root: Node, source: bytes) -> list[_Draft]:
    """Walk only the module's top level and class bodies; everything deeper rides along."""
    drafts: list[_Draft] = []
    classes: list[tuple[Node, str, int, int]] = []
    run: tuple[int, int] | None = None  # rows of the module-level run being collected
    run_defs: list[_RowDefinition] = []
    for child in root.children:
        definition = _definition(child)
        first, last = _rows(child)
        if definition is None:
            run = (first, last) if run is None else (run[0], last)
            run_defs += _constants(child, source)
            continue
        if run is not None:
            drafts.append(("<module>", "module", run[0], run[1], (run,), tuple(run_defs)))
            run, run_defs = None, []
        name = _name(definition, source)
        if definition.type == "function_definition":
            defs = _public(definition, name, "function")
            drafts.append((name, "function", first, last, ((first, last),), defs))
        else:
            classes.append((definition, name, first, last))
    if run is not None:
        drafts.append(("<module>", "module", run[0], run[1], (run,), tuple(run_defs)))

    while classes:  # a worklist, not recursion: nesting depth is up to the input
        node, qualname, first, last = classes.pop()
        holes: list[tuple[int, int]] = []
        body = node.child_by_field_name("body")
        header_row = node.start_point.row
        for child in body.children if body is not None else ():
            definition = _definition(child)
            if definition is None:
                continue
            child_first, child_last = _rows(child)
            if child_first <= header_row:
                continue  # shares the header's line; cannot be cut out by lines
            child_name = f"{qualname}.{_name(definition, source)}"
            holes.append((child_first, child_last))
            if definition.type == "function_definition":
                span = ((child_first, child_last),)
                method = _name(definition, source)
                dunder = method.startswith("__") and method.endswith("__")
                defs = () if dunder else _public(definition, method, "method")
                drafts.append((child_name, "method", child_first, child_last, span, defs))
            else:
                classes.append((definition, child_name, child_first, child_last))
        short = qualname.rsplit(".", 1)[-1]
        defs = _public(node, short, _class_kind(node, short, source))
        drafts.append((qualname, "class", first, last, _without(first, last, holes), defs))
    return drafts


def _public(definition: Node, name: str, kind: DefinitionKind) -> tuple[_RowDefinition, ...]:
    """The definition of `name` at its name's row, unless the name is private."""
    if name.startswith("_") or name == "<anonymous>":
        return ()
    node = definition.child_by_field_name("name")
    row = node.start_point.row if node is not None else definition.start_point.row
    return ((row, name, kind),)


def _class_kind(definition: Node, name: str, source: bytes) -> DefinitionKind:
    """ "exception" when the class's name or one of its bases' ends like an exception's."""
    if name.endswith(_EXCEPTION_SUFFIXES):
        return "exception"
    bases = definition.child_by_field_name("superclasses")
    for base in bases.named_children if bases is not None else ():
        text = source[base.start_byte : base.end_byte].decode("utf-8", "replace")
        if base.type in ("identifier", "attribute") and text.endswith(_EXCEPTION_SUFFIXES):
            return "exception"
    return "class"


def _constants(statement: Node, source: bytes) -> list[_RowDefinition]:
    """UPPER_CASE names a top-level statement assigns (`A = 1`, `A: int = 1`, `A = B = 1`)."""
    if statement.type != "expression_statement" or not statement.named_children:
        return []
    out: list[_RowDefinition] = []
    node: Node | None = statement.named_children[0]
    while node is not None and node.type == "assignment":
        left = node.child_by_field_name("left")
        if left is not None and left.type == "identifier":
            name = source[left.start_byte : left.end_byte].decode("utf-8", "replace")
            if _CONSTANT.match(name):
                out.append((left.start_point.row, name, "constant"))
        node = node.child_by_field_name("right")
    return out


def _definition(node: Node) -> Node | None:
    """The function or class definition that a statement is (through its decorators), if any."""
    kind = node.type
    if kind in ("function_definition", "class_definition"):
        return node
    if kind == "decorated_definition":
        inner = node.child_by_field_name("definition")
        if inner is not None and inner.type in ("function_definition", "class_definition"):
            return inner
    return None


def _rows(node: Node) -> tuple[int, int]:
    """First and last row (0-based, inclusive) that hold any of the node's text."""
    first = node.start_point.row
    end = node.end_point
    last = end.row - 1 if end.column == 0 and end.row > first else end.row
    return first, last


def _name(definition: Node, source: bytes) -> str:
    name = definition.child_by_field_name("name")
    if name is None:
        return "<anonymous>"
    return source[name.start_byte : name.end_byte].decode("utf-8", "replace")


def _without(first: int, last: int, holes: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """The row ranges of first..last that are not in any of the (disjoint) holes."""
    ranges: list[tuple[int, int]] = []
    row = first
    for hole_first, hole_last in sorted(holes):
        if hole_first > row:
            ranges.append((row, hole_first - 1))
        row = max(row, hole_last + 1)
    if row <= last:
        ranges.append((row, last))
    return tuple(ranges)


def _chunks(path: str, lines: list[str], drafts: list[_Draft], max_tokens: int) -> list[Chunk]:
    """Hash the drafts' texts, splitting those over budget, in source order."""
    budget = max_tokens * BYTES_PER_TOKEN
    drafts.sort(key=operator.itemgetter(2))
    chunks: list[Chunk] = []
    split_class = False
    for qualname, kind, first, last, ranges, defs in drafts:
        if len(ranges) == 1:
            text = "\n".join(lines[ranges[0][0] : ranges[0][1] + 1])
        else:
            text = "\n".join(itertools.chain.from_iterable(lines[a : b + 1] for a, b in ranges))
        if len(text.encode("utf-8")) <= budget:
            named = tuple((name, k) for _, name, k in defs)
            chunks.append(
                Chunk(path, qualname, kind, first + 1, last + 1, text, content_hash(text), 0, named)
            )
        else:
            chunks.extend(_split(path, lines, qualname, kind, ranges, defs, budget))
            split_class = split_class or len(ranges) > 1
    if split_class:  # a class's later parts start after some of its methods
        chunks.sort(key=lambda c: (c.start_line, c.part))
    return chunks


def _split(
    path: str,
    lines: list[str],
    qualname: str,
    kind: ChunkKind,
    ranges: tuple[tuple[int, int], ...],
    defs: tuple[_RowDefinition, ...],
    budget: int,
) -> Iterator[Chunk]:
    """Parts 1..k of a chunk whose text (the lines of `ranges`) is over `budget` bytes; each
    definition goes to the first part that holds its row."""
    rows = list(itertools.chain.from_iterable(range(a, b + 1) for a, b in ranges))
    texts = list(itertools.chain.from_iterable(lines[a : b + 1] for a, b in ranges))
    left = list(defs)
    for part, (first, last, piece) in enumerate(_pieces(rows, texts, budget), 1):
        mine: tuple[Definition, ...] = ()
        if left:
            mine = tuple((name, k) for row, name, k in left if first <= row <= last)
            left = [d for d in left if not first <= d[0] <= last]
        yield Chunk(
            path, qualname, kind, first + 1, last + 1, piece, content_hash(piece), part, mine
        )


def _pieces(rows: list[int], texts: list[str], budget: int) -> Iterator[tuple[int, int, str]]:
    """Greedy runs of consecutive lines, each at most `budget` UTF-8 bytes when joined.

    Works on prefix sums so the per-line work stays in C: ends[k] is the joined size of the
    first k lines plus one newline each, so lines i..j-1 take ends[j] - ends[i] - 1 bytes."""
    sizes = map(len, map(str.encode, texts))
    ends = list(itertools.accumulate(map((1).__add__, sizes), initial=0))
    start = 0
    while start < len(texts):
        stop = bisect.bisect_right(ends, ends[start] + budget + 1) - 1
        if stop > start:
            yield rows[start], rows[stop - 1], "\n".join(texts[start:stop])
            start = stop
        else:  # this line alone is over budget
            for cut in _cut_line(texts[start], budget):
                yield rows[start], rows[start], cut
            start += 1


def _cut_line(line: str, budget: int) -> Iterator[str]:
    """Cut one line into pieces of at most `budget` UTF-8 bytes, never inside a character
    (a budget of 4 bytes or more always fits the longest character)."""
    data = line.encode("utf-8")
    start = 0
    while start < len(data):
        end = min(start + budget, len(data))
        while end < len(data) and data[end] & 0xC0 == 0x80:
            end -= 1  # back off to the first byte of a character
        yield data[start:end].decode("utf-8")
        start = end
