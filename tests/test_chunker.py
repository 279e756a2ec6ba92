"""The chunker puts every function, method and class of a file in exactly one chunk, with
hashes that depend only on the chunk's own code."""

from __future__ import annotations

import itertools
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from repo_encoder.chunk import Chunk, content_hash
from repo_encoder.chunker import (
    COUNT_KEYS,
    ChunkerConfig,
    chunk_files,
    chunk_source,
)
from repo_encoder.errors import UserError
from repo_encoder.tokens import estimate_tokens

UNLIMITED = ChunkerConfig(max_tokens=10**9)
PROPERTY_SETTINGS = settings(max_examples=100, deadline=None)


# --- generated Python files -------------------------------------------------------------------


@dataclass(frozen=True)
class Definition:
    """A def or class in a generated file and where the chunker must put it."""

    header: str  # text found only on its `def name(`/`class name` line
    owner: str  # qualname of the one chunk whose text must hold the header line
    qualname: str | None  # qualname of its own chunk, when it gets one
    kind: str | None
    edit_at: int | None  # line index where a statement can be added to its body
    edit_indent: str


@dataclass(frozen=True)
class GeneratedFile:
    lines: tuple[str, ...]
    definitions: tuple[Definition, ...]

    def source(self) -> str:
        return "\n".join(self.lines) + "\n"

    def edited(self, definition: Definition) -> str:
        """The source with one statement added at the end of `definition`'s body."""
        assert definition.edit_at is not None
        new = f"{definition.edit_indent}edited_here = 1"
        lines = (*self.lines[: definition.edit_at], new, *self.lines[definition.edit_at :])
        return "\n".join(lines) + "\n"


STATEMENTS = (
    ("value = a + 1",),
    ("print(value)",),
    ("items = [i for i in range(3)]",),
    ("for i in range(3):", "    total = i"),
    ("if a:", "    pass", "else:", "    a = 2"),
    ("with open(a) as fh:", "    data = fh.read()"),
    ("result = call(", "    a,", "    b,", ")"),
    ('text = """', "def looks_like_code(", '"""'),
)
MODULE_STATEMENTS = (
    ("import os",),
    ("from typing import TYPE_CHECKING",),
    ("LIMIT = 10",),
    ("NAMES = [", '    "a",', '    "b",', "]"),
    ("if TYPE_CHECKING:", "    import collections"),
    ('if __name__ == "__main__":', "    main()"),
)
DECORATORS = ("staticmethod", "functools.cache", "register(1, key='k')", "property")
WORDS = st.sampled_from(["note", "see: later", "def not_code(x):", "class NotCode:", "---"])


@st.composite
def python_files(draw: st.DrawFn) -> GeneratedFile:
    """A file of module code, functions, classes, methods and nested classes with unique names
    `f<n>x`/`C<n>x` (no name is a substring of another), and what the chunker must do with it."""
    counter = itertools.count()
    lines: list[str] = []
    definitions: list[Definition] = []

    def fresh(prefix: str) -> str:
        return f"{prefix}{next(counter)}x"

    def gap(indent: str) -> None:
        for _ in range(draw(st.integers(0, 2))):
            choice = draw(st.sampled_from(["blank", "spaces", "comment"]))
            if choice == "blank":
                lines.append("")
            elif choice == "spaces":
                lines.append("   ")
            else:
                lines.append(f"{indent}# {draw(WORDS)}")

    def statement(indent: str, choices: tuple[tuple[str, ...], ...]) -> None:
        lines.extend(indent + line for line in draw(st.sampled_from(choices)))

    def function(indent: str, context: str, owner: str | None, depth: int) -> None:
        name = fresh("f")
        if context == "nested":
            assert owner is not None
            qualname, chunk_owner = None, owner
        else:
            qualname = name if owner is None else f"{owner}.{name}"
            chunk_owner = qualname
        for _ in range(draw(st.integers(0, 2))):
            lines.append(f"{indent}@{draw(st.sampled_from(DECORATORS))}")
        keyword = "async def" if draw(st.booleans()) else "def"
        params = "self, a" if context == "class" else "a, b=1"
        if draw(st.booleans()):
            lines.append(f"{indent}{keyword} {name}({params}):")
        else:
            lines.extend([f"{indent}{keyword} {name}(", f"{indent}    {params},", f"{indent}):"])
        body = indent + "    "
        if draw(st.booleans()):
            lines.append(f'{body}"""Doc of {name}."""')
        for _ in range(draw(st.integers(1, 3))):
            if depth < 2 and draw(st.integers(0, 4)) == 0:
                if draw(st.booleans()):
                    function(body, "nested", chunk_owner, depth + 1)
                else:
                    klass(body, "nested", chunk_owner, depth + 1)
            gap(body)
            statement(body, STATEMENTS)
        header = f"def {name}("
        if qualname is None:
            definitions.append(Definition(header, chunk_owner, None, None, None, body))
        else:
            kind = "function" if owner is None else "method"
            definitions.append(Definition(header, qualname, qualname, kind, len(lines), body))

    def klass(indent: str, context: str, owner: str | None, depth: int) -> None:
        name = fresh("C")
        if context == "nested":
            assert owner is not None
            qualname, chunk_owner = None, owner
        else:
            qualname = name if owner is None else f"{owner}.{name}"
            chunk_owner = qualname
        for _ in range(draw(st.integers(0, 1))):
            lines.append(f"{indent}@dataclass")
        style = draw(st.integers(0, 2))
        if style == 0:
            lines.append(f"{indent}class {name}:")
        elif style == 1:
            lines.append(f"{indent}class {name}(Base):")
        else:
            lines.extend([f"{indent}class {name}(", f"{indent}    Base,", f"{indent}):"])
        body = indent + "    "
        if draw(st.booleans()):
            lines.append(f'{body}"""Doc of {name}."""')
        else:
            lines.append(f"{body}pass")
        for _ in range(draw(st.integers(0, 4))):
            member = draw(st.sampled_from(["method", "method", "class", "attribute", "gap"]))
            if member == "method":
                function(body, "nested" if qualname is None else "class", chunk_owner, depth + 1)
            elif member == "class" and depth < 2:
                klass(body, "nested" if qualname is None else "class", chunk_owner, depth + 1)
            elif member == "attribute":
                lines.append(f"{body}limit: int = 3")
            else:
                gap(body)
        kind = None if qualname is None else "class"
        definitions.append(Definition(f"class {name}", chunk_owner, qualname, kind, None, body))

    if draw(st.booleans()):
        lines.append('"""A generated module."""')
    for _ in range(draw(st.integers(1, 8))):
        block = draw(st.sampled_from(["module", "function", "class", "guarded_def", "gap"]))
        if block == "module":
            statement("", MODULE_STATEMENTS)
        elif block == "function":
            function("", "top", None, 0)
        elif block == "class":
            klass("", "top", None, 0)
        elif block == "guarded_def":  # a def inside try/except is module-level code
            name = fresh("f")
            lines.extend(["try:", "    import ujson as json", "except ImportError:"])
            lines.extend([f"    def {name}(data):", "        return data"])
            definitions.append(Definition(f"def {name}(", "<module>", None, None, None, ""))
        gap("")
    if not any(line.strip() for line in lines):
        lines.append("import os")
    return GeneratedFile(tuple(lines), tuple(definitions))


def chunks_of(source: str, config: ChunkerConfig = UNLIMITED) -> list[Chunk]:
    result = chunk_source("pkg/mod.py", source.encode(), config)
    assert result.skipped is None
    assert result.fallback is None, source
    return result.chunks


def without_lines(chunks: list[Chunk]) -> list[tuple[str, str, int, str, str]]:
    return [(c.qualname, c.kind, c.part, c.text, c.content_hash) for c in chunks]


def nonblank(text: str) -> int:
    return sum(1 for line in text.split("\n") if line.strip())


# --- properties -------------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(python_files())
def test_every_definition_lands_in_exactly_one_chunk(generated: GeneratedFile) -> None:
    chunks = chunks_of(generated.source())
    for definition in generated.definitions:
        holders = [c for c in chunks if definition.header in c.text]
        assert len(holders) == 1, definition
        assert holders[0].qualname == definition.owner, definition
        if definition.qualname is not None:
            own = [c for c in chunks if c.qualname == definition.qualname]
            assert [c.kind for c in own] == [definition.kind], definition
    expected = sorted(d.qualname for d in generated.definitions if d.qualname is not None)
    assert sorted(c.qualname for c in chunks if c.qualname != "<module>") == expected


@PROPERTY_SETTINGS
@given(python_files())
def test_spans_and_texts_come_from_the_file(generated: GeneratedFile) -> None:
    source = generated.source()
    lines = source.split("\n")[:-1]
    chunks = chunks_of(source)
    assert sorted(chunks, key=lambda c: c.start_line) == chunks
    for chunk in chunks:
        assert 1 <= chunk.start_line <= chunk.end_line <= len(lines)
        assert chunk.part == 0
        assert chunk.content_hash == content_hash(chunk.text)
        span = lines[chunk.start_line - 1 : chunk.end_line]
        if chunk.kind == "class":
            own = chunk.text.split("\n")
            assert own[0] == span[0]
            remaining = iter(span)
            assert all(line in remaining for line in own), "class text is not a subsequence"
        else:
            assert chunk.text == "\n".join(span)
    # No line is lost or held twice: the chunks' non-blank lines add up to the file's.
    assert sum(nonblank(c.text) for c in chunks) == nonblank(source)


@PROPERTY_SETTINGS
@given(python_files())
def test_chunks_are_stable_across_runs_and_line_endings(generated: GeneratedFile) -> None:
    source = generated.source()
    chunks = chunks_of(source)
    assert chunks_of(source) == chunks
    assert chunks_of(source.replace("\n", "\r\n")) == chunks
    assert chunks_of(source.replace("\n", "\r")) == chunks
    with_bom = b"\xef\xbb\xbf" + source.encode()
    assert chunk_source("pkg/mod.py", with_bom, UNLIMITED).chunks == chunks


@PROPERTY_SETTINGS
@given(python_files(), st.data())
def test_editing_one_definition_leaves_other_chunks_identical(
    generated: GeneratedFile, data: st.DataObject
) -> None:
    editable = [d for d in generated.definitions if d.edit_at is not None]
    if not editable:
        return
    target = data.draw(st.sampled_from(editable))
    before = chunks_of(generated.source())
    after = chunks_of(generated.edited(target))
    assert [c for c in without_lines(after) if c[0] != target.qualname] == [
        c for c in without_lines(before) if c[0] != target.qualname
    ]
    [old] = [c for c in before if c.qualname == target.qualname]
    [new] = [c for c in after if c.qualname == target.qualname]
    assert new.content_hash != old.content_hash
    assert (new.start_line, new.end_line) == (old.start_line, old.end_line + 1)


@PROPERTY_SETTINGS
@given(python_files())
def test_code_moved_down_the_file_keeps_its_chunks(generated: GeneratedFile) -> None:
    source = generated.source()
    prefix = "import sys\n\n\ndef added_on_top():\n    return sys.argv\n\n\n"
    before = chunks_of(source)
    after = chunks_of(prefix + source)
    assert after[0].text == "import sys"
    assert after[1].qualname == "added_on_top"
    assert without_lines(after[2:]) == without_lines(before)
    shift = prefix.count("\n")
    assert [c.start_line for c in after[2:]] == [c.start_line + shift for c in before]


@PROPERTY_SETTINGS
@given(python_files(), st.integers(min_value=24, max_value=200))
def test_over_budget_chunks_split_into_numbered_pieces(
    generated: GeneratedFile, max_tokens: int
) -> None:
    # Generated lines are under 96 bytes (24 tokens), so splitting never cuts inside a line.
    source = generated.source()
    whole = chunks_of(source)
    pieces = chunks_of(source, ChunkerConfig(max_tokens=max_tokens))
    assert all(estimate_tokens(c.text) <= max_tokens for c in pieces)
    assert sorted(pieces, key=lambda c: (c.start_line, c.part)) == pieces

    groups: dict[tuple[str, str], list[list[Chunk]]] = defaultdict(list)
    for chunk in pieces:
        if chunk.part <= 1:
            groups[chunk.qualname, chunk.kind].append([chunk])
        else:
            groups[chunk.qualname, chunk.kind][-1].append(chunk)
    originals: dict[tuple[str, str], list[Chunk]] = defaultdict(list)
    for chunk in whole:
        originals[chunk.qualname, chunk.kind].append(chunk)
    assert originals.keys() == groups.keys()
    for key, chunks in originals.items():
        for original, group in zip(chunks, groups[key], strict=True):
            if estimate_tokens(original.text) <= max_tokens:
                assert group == [original]
                continue
            assert [c.part for c in group] == list(range(1, len(group) + 1))
            assert len(group) >= 2
            assert "\n".join(c.text for c in group) == original.text
            assert group[0].start_line == original.start_line
            assert group[-1].end_line <= original.end_line
            for a, b in itertools.pairwise(group):
                assert a.end_line < b.start_line
                if original.kind != "class":
                    assert b.start_line == a.end_line + 1
            if original.kind != "class":
                assert group[-1].end_line == original.end_line
    snapshot = chunk_files([("pkg/mod.py", source.encode())], ChunkerConfig(max_tokens=max_tokens))
    assert snapshot.counts["chunks_split"] == sum(
        1 for c in whole if estimate_tokens(c.text) > max_tokens
    )


PYTHONISH = st.text(
    alphabet=st.sampled_from(list("defclassync ():\n\t\r@#'\"\\x=1é")), max_size=300
)


@PROPERTY_SETTINGS
@given(st.one_of(st.binary(max_size=400), PYTHONISH.map(str.encode)))
def test_any_bytes_are_chunked_or_skipped_without_raising(data: bytes) -> None:
    result = chunk_source("any.py", data, ChunkerConfig(max_tokens=8, window_lines=3))
    assert (result.skipped is None) == bool(result.chunks)
    if result.skipped is not None:
        return
    text = data.removeprefix(b"\xef\xbb\xbf").decode().replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    for chunk in result.chunks:
        assert 1 <= chunk.start_line <= chunk.end_line <= len(lines)
        assert estimate_tokens(chunk.text) <= 8
        if chunk.kind != "class" and chunk.start_line < chunk.end_line:
            assert chunk.text == "\n".join(lines[chunk.start_line - 1 : chunk.end_line])


# --- examples ---------------------------------------------------------------------------------


def by_qualname(source: str, config: ChunkerConfig = UNLIMITED) -> dict[str, Chunk]:
    chunks = chunks_of(source, config)
    assert all(c.part == 0 for c in chunks)
    return {c.qualname: c for c in chunks if c.qualname != "<module>"}


def test_decorated_method_keeps_its_decorators() -> None:
    source = (
        "class Cache:\n"
        "    size = 3\n"
        "\n"
        "    @staticmethod\n"
        "    @register(1)\n"
        "    async def lookup(key):\n"
        "        return key\n"
    )
    chunks = by_qualname(source)
    method = chunks["Cache.lookup"]
    assert method.kind == "method"
    assert (method.start_line, method.end_line) == (4, 7)
    assert method.text.startswith("    @staticmethod\n    @register(1)\n    async def lookup")
    klass = chunks["Cache"]
    assert (klass.kind, klass.start_line, klass.end_line) == ("class", 1, 7)
    assert klass.text == "class Cache:\n    size = 3\n"


def test_nested_classes_get_dotted_qualnames_and_class_text_drops_them() -> None:
    source = (
        "@dataclass\n"
        "class Outer:\n"
        '    """Outer doc."""\n'
        "    class Inner:\n"
        "        def m(self):\n"
        "            return 1\n"
        "    # between\n"
        "    def n(self):\n"
        "        pass\n"
    )
    chunks = by_qualname(source)
    assert {q: c.kind for q, c in chunks.items()} == {
        "Outer": "class",
        "Outer.Inner": "class",
        "Outer.Inner.m": "method",
        "Outer.n": "method",
    }
    assert chunks["Outer"].text == '@dataclass\nclass Outer:\n    """Outer doc."""\n    # between'
    assert chunks["Outer.Inner"].text == "    class Inner:"
    assert (chunks["Outer.Inner"].start_line, chunks["Outer.Inner"].end_line) == (4, 6)


def test_nested_function_and_class_stay_inside_their_function() -> None:
    source = (
        "def outer(a):\n"
        "    def inner(b):\n"
        "        return b\n"
        "    class Local:\n"
        "        def m(self):\n"
        "            return inner(a)\n"
        "    return Local\n"
    )
    chunks = chunks_of(source)
    assert [(c.qualname, c.kind) for c in chunks] == [("outer", "function")]
    assert chunks[0].text == source.rstrip("\n")


def test_comments_follow_the_code_they_sit_among() -> None:
    source = (
        "import os\n"
        "# describes helper, but stays with the module code above it\n"
        "def helper():\n"
        "    pass\n"
        "\n"
        "# --- section ---\n"
        "\n"
        "class Thing:\n"
        "    # stays in the class chunk\n"
        "    def go(self):\n"
        "        # stays in the method\n"
        "        pass\n"
    )
    chunks = chunks_of(source)
    assert [(c.qualname, c.start_line, c.end_line) for c in chunks] == [
        ("<module>", 1, 2),
        ("helper", 3, 4),
        ("<module>", 6, 6),
        ("Thing", 8, 12),
        ("Thing.go", 10, 12),
    ]
    assert chunks[0].text.endswith("# describes helper, but stays with the module code above it")
    assert chunks[3].text == "class Thing:\n    # stays in the class chunk"
    assert "# stays in the method" in chunks[4].text


def test_guarded_definitions_are_module_code() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from os import PathLike\n"
        "try:\n"
        "    import ujson as json\n"
        "except ImportError:\n"
        "    def loads(s):\n"
        "        return s\n"
        "\n"
        "VERSION = 1\n"
    )
    chunks = chunks_of(source)
    assert [(c.qualname, c.kind, c.start_line, c.end_line) for c in chunks] == [
        ("<module>", "module", 1, 10)
    ]


def test_over_budget_function_splits_into_contiguous_parts() -> None:
    body = "".join(f"    total = total + {i}  # step {i}\n" for i in range(30))
    source = f"x = 1\n\n\ndef long_sum(total):\n{body}    return total\n"
    chunks = chunks_of(source, ChunkerConfig(max_tokens=40))
    parts = [c for c in chunks if c.qualname == "long_sum"]
    assert [c.part for c in parts] == list(range(1, len(parts) + 1))
    assert len(parts) >= 5
    assert all(c.kind == "function" and estimate_tokens(c.text) <= 40 for c in parts)
    assert parts[0].start_line == 4
    assert parts[-1].end_line == 4 + 30 + 1
    assert all(b.start_line == a.end_line + 1 for a, b in itertools.pairwise(parts))
    assert "\n".join(c.text for c in parts) == "\n".join(source.split("\n")[3:-1])
    assert [c.part for c in chunks if c.qualname == "<module>"] == [0]


def test_a_line_over_budget_is_cut_by_characters() -> None:
    line = "MESSAGE = '" + "é" * 50 + "€" * 20 + "'"
    chunks = chunks_of(f"import os\n{line}\n", ChunkerConfig(max_tokens=4))
    assert chunks[0].text == "import os"
    cuts = chunks[1:]
    assert all(c.start_line == c.end_line == 2 for c in cuts)
    assert all(len(c.text.encode()) <= 16 for c in cuts)
    assert "".join(c.text for c in cuts) == line
    assert [c.part for c in cuts] == list(range(2, len(cuts) + 2))


def test_split_class_parts_stay_in_source_order_around_its_methods() -> None:
    source = (
        "class Settings:\n"
        '    """Every knob of the service, with defaults."""\n'
        "    host: str = 'localhost'\n"
        "    def url(self):\n"
        "        return self.host\n"
        "    port: int = 8080  # where the service listens for requests\n"
        "    retries: int = 3\n"
    )
    whole = chunks_of(source)[0]
    chunks = chunks_of(source, ChunkerConfig(max_tokens=20))
    # A part spans its own first to last line, so it may enclose a method's lines.
    assert [(c.qualname, c.part, c.start_line, c.end_line) for c in chunks] == [
        ("Settings", 1, 1, 2),
        ("Settings", 2, 3, 3),
        ("Settings.url", 0, 4, 5),
        ("Settings", 3, 6, 6),
        ("Settings", 4, 7, 7),
    ]
    assert "\n".join(c.text for c in chunks if c.qualname == "Settings") == whole.text


@pytest.mark.parametrize(
    ("data", "config", "reason"),
    [
        (b"MAGIC\x00\x01\x02def f(): pass\n", ChunkerConfig(), "binary"),
        (b"x = '\xff\xfe'\n", ChunkerConfig(), "undecodable"),
        (b"x = 1\n" * 10, ChunkerConfig(max_file_bytes=59), "too_large"),
        (b"", ChunkerConfig(), "empty"),
        (b" \r\n\t\n\x0c\n", ChunkerConfig(), "empty"),
        (b"\xef\xbb\xbf", ChunkerConfig(), "empty"),
        (b"\xef\xbb\xbf\xef\xbb\xbf\n", ChunkerConfig(), "empty"),
    ],
)
def test_unreadable_files_are_skipped_with_a_reason(
    data: bytes, config: ChunkerConfig, reason: str
) -> None:
    result = chunk_source("x.py", data, config)
    assert (result.chunks, result.skipped, result.fallback) == ([], reason, None)


def test_nul_past_the_sniffed_prefix_is_not_binary() -> None:
    data = b"x = 1\n" * 2000 + b"\x00"
    assert chunk_source("x.py", data).skipped is None
    assert chunk_source("x.py", b"x = 1\n" * 10, ChunkerConfig(max_file_bytes=60)).skipped is None


def test_syntax_error_falls_back_to_line_windows() -> None:
    lines = [f"value_{i} = {i}" for i in range(130)]
    lines[70] = "def broken(:"
    lines[125:] = [""] * 5
    result = chunk_source("bad.py", ("\n".join(lines) + "\n").encode(), ChunkerConfig())
    assert result.fallback == "syntax_error"
    assert result.skipped is None
    assert [(c.kind, c.qualname, c.start_line, c.end_line) for c in result.chunks] == [
        ("window", "<window>", 1, 60),
        ("window", "<window>", 61, 120),
        ("window", "<window>", 121, 130),
    ]
    assert result.chunks[1].text == "\n".join(lines[60:120])
    assert result.chunks[2].text == "\n".join(lines[120:130])


def test_whitespace_only_windows_are_dropped() -> None:
    data = b"def broken(:\n" + b"\n" * 10 + b"x = 1\n"
    result = chunk_source("bad.py", data, ChunkerConfig(window_lines=5))
    assert result.fallback == "syntax_error"
    assert [(c.start_line, c.end_line) for c in result.chunks] == [(1, 5), (11, 12)]
    assert result.chunks[1].text == "\nx = 1"


def test_chunk_files_counts_what_happened_to_each_file() -> None:
    files = [
        ("a.py", b"def f():\n    return 1\n"),
        ("b.py", b"\x00\x01"),
        ("c.py", b"\xff"),
        ("d.py", b"   \n"),
        ("e.py", b"x = 1\n" * 100),
        ("f.py", b"def broken(:\n"),
        ("g.py", ("def long():\n" + "    x = 1\n" * 50).encode()),
    ]
    snapshot = chunk_files(files, ChunkerConfig(max_tokens=64, max_file_bytes=550))
    assert set(COUNT_KEYS) <= set(snapshot.counts)
    assert {k: snapshot.counts[k] for k in COUNT_KEYS} == {
        "files_chunked": 3,
        "skipped_binary": 1,
        "skipped_undecodable": 1,
        "skipped_too_large": 1,
        "skipped_empty": 1,
        "fallback_syntax_error": 1,
        "chunks_split": 1,
    }
    assert snapshot.bytes_read == sum(len(data) for _, data in files)
    assert [c.path for c in snapshot.chunks][:2] == ["a.py", "f.py"]
    assert {c.path for c in snapshot.chunks} == {"a.py", "f.py", "g.py"}


def test_estimate_tokens_rounds_utf8_bytes_up() -> None:
    assert [estimate_tokens(t) for t in ["", "a", "abcd", "abcde", "é" * 2, "€"]] == [
        0,
        1,
        1,
        2,
        1,
        1,
    ]


@pytest.mark.parametrize(
    "make", [lambda: ChunkerConfig(max_tokens=0), lambda: ChunkerConfig(window_lines=0)]
)
def test_bad_config_is_a_user_error(make: Callable[[], ChunkerConfig]) -> None:
    with pytest.raises(UserError):
        make()


def test_throughput_is_reported_not_asserted() -> None:
    """Prints MB/s on ~2 MB of ordinary code; a slow shared machine never fails the build."""
    module = (
        '"""A module."""\nimport os\n\n\n'
        + "".join(
            f"def function_{i}(a, b=1):\n"
            f'    """Add things."""\n'
            f"    total = a + b + {i}\n"
            "    for item in range(total):\n"
            "        total += item\n"
            "    return total\n\n\n"
            f"class Widget{i}:\n"
            "    size = 3\n\n"
            "    def grow(self, n):\n"
            "        return self.size * n\n\n\n"
            for i in range(150)
        )
    ).encode()
    files = [(f"pkg/m{i}.py", module) for i in range(80)]
    start = time.perf_counter()
    snapshot = chunk_files(files)
    seconds = time.perf_counter() - start
    print(f"chunker: {snapshot.bytes_read / 1e6 / seconds:.1f} MB/s")
    assert snapshot.counts["files_chunked"] == len(files)
    assert len(snapshot.chunks) == len(files) * (1 + 150 * 3)
