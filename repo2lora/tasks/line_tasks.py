"""Cross-file line-completion tasks (CrossCodeEval-style): hold one source file out of a
snapshot and predict its lines that use names defined in the other files.

The names are the ones code2lora-names reads (`repo_encoder.names.NameIndex` over the chunker's
definitions): classes, exceptions, functions, module constants, and modules named by file
paths, defined in some other file of the snapshot and not in the held-out file itself. Methods
are left out (their names, `get`, `run`, `close`, mostly say nothing about a repository), and
so are names of builtins and standard-library modules (`json` the module beats `pkg/json.py`).
A line qualifies when it reads one of those names (parsed with `ast`, so strings, comments and
keyword-argument names do not count, nor a name the file binds itself: `spec = SpecTree()`
makes `spec` the file's own, whatever module is named so). The target is the line from its
first non-blank character, the prompt the file before it (cut from the front to the token
budget). Files are taken in a seeded order, a few lines from each: a deterministic sample."""

from __future__ import annotations

import ast
import builtins
import hashlib
import keyword
import sys
from collections.abc import Iterable
from dataclasses import dataclass

from repo2lora.tasks.miner import cut_front
from repo_encoder.chunk import Chunk, DefinitionKind
from repo_encoder.names import NameIndex
from repo_encoder.tokens import estimate_tokens

CROSS_FILE_KINDS = frozenset({"class", "exception", "function", "constant", "module"})
_COMMON = frozenset(dir(builtins)) | frozenset(sys.stdlib_module_names) | frozenset(keyword.kwlist)


@dataclass(frozen=True)
class LineTaskConfig:
    """How many tasks a repository gives and how long their prompts are."""

    max_files: int = 16  # held-out files per repository
    lines_per_file: int = 4
    max_prompt_tokens: int = 1024
    min_target_chars: int = 4
    max_target_chars: int = 200
    seed: int = 0


@dataclass(frozen=True)
class LineTask:
    """One cross-file line completion: `target` (a line of `path` from its first non-blank
    character) follows `prefix`; the encoder sees the snapshot without `path`. `names` are
    the other files' names the line uses."""

    task_id: str
    repo: str
    commit: str
    path: str  # the held-out file
    line: int  # 1-based
    prefix: str
    target: str
    names: tuple[str, ...]


def cross_file_names(index: NameIndex, held_out: Iterable[Chunk]) -> dict[str, DefinitionKind]:
    """The names (and their kinds) the rest of the snapshot defines for the held-out file's
    chunks: `index` is the whole snapshot's; the file's own definitions do not count."""
    held = list(held_out)
    rest = index.copy()
    rest.remove(held)
    own = {name for c in held for name, _ in c.definitions}
    return {
        n.name: n.kind
        for n in rest.names()
        if n.kind in CROSS_FILE_KINDS and n.name not in own and n.name not in _COMMON
    }


def name_uses_by_line(source: str) -> dict[int, list[tuple[int, str, bool]]] | None:
    """Per line (1-based), the names the file reads there, as (column, name, is_attribute), in
    column order: loaded names, attributes (`util.eprint` -> `eprint`) and imported modules and
    names, less every name the file binds otherwise (assignments, parameters, loop and `with`
    targets, its own functions and classes: `spec = SpecTree()` makes `spec` the file's own).
    None when the file does not parse."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    bound: set[str] = set()
    uses: list[tuple[int, int, str, bool]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            if isinstance(node.ctx, ast.Load):
                uses.append((node.lineno, node.col_offset, node.id, False))
            else:
                bound.add(node.id)
        elif isinstance(node, ast.Attribute) and node.end_lineno is not None:
            end_col = node.end_col_offset or 0
            uses.append((node.end_lineno, end_col - len(node.attr), node.attr, True))
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            if isinstance(node, ast.ImportFrom) and node.module:
                uses += [(node.lineno, node.col_offset, m, False) for m in node.module.split(".")]
            for a in node.names:
                uses += [(a.lineno, a.col_offset, part, False) for part in a.name.split(".")]
    out: dict[int, list[tuple[int, str, bool]]] = {}
    for line, col, name, attr in sorted(uses):
        if name not in bound:
            out.setdefault(line, []).append((col, name, attr))
    return out


def _rank(seed: int, *parts: object) -> str:
    return hashlib.sha256(":".join(map(str, (seed, *parts))).encode()).hexdigest()


def mine_file_lines(
    repo: str,
    commit: str,
    path: str,
    source: str,
    names: dict[str, DefinitionKind],
    cfg: LineTaskConfig = LineTaskConfig(),
) -> list[LineTask]:
    """A file's line tasks that use `names` (at most `cfg.lines_per_file`, seeded, in line
    order)."""
    uses = name_uses_by_line(source)
    if uses is None:
        return []
    lines = source.splitlines(keepends=True)
    offsets = [0]
    for ln in lines:
        offsets.append(offsets[-1] + len(ln))
    candidates = []
    for lineno, words in sorted(uses.items()):
        # an attribute named like a module (`self.config`) is no use of that module
        found = (w for _, w, attr in words if w in names and not (attr and names[w] == "module"))
        used = tuple(dict.fromkeys(found))
        if not used or lineno > len(lines):
            continue
        text = lines[lineno - 1]
        target = text.strip()
        if not cfg.min_target_chars <= len(target) <= cfg.max_target_chars:
            continue
        start = offsets[lineno - 1] + (len(text) - len(text.lstrip()))
        candidates.append((lineno, start, target, used))
    picked = sorted(candidates, key=lambda c: _rank(cfg.seed, repo, path, c[0]))
    picked = sorted(picked[: cfg.lines_per_file])
    return [
        LineTask(
            task_id=_rank(cfg.seed, "line", repo, commit, path, lineno)[:16],
            repo=repo,
            commit=commit,
            path=path,
            line=lineno,
            prefix=cut_front(source[:start], cfg.max_prompt_tokens, estimate_tokens),
            target=target,
            names=used,
        )
        for lineno, start, target, used in picked
    ]


def mine_line_tasks(
    repo: str,
    commit: str,
    files: list[tuple[str, bytes]],
    chunks: list[Chunk],
    cfg: LineTaskConfig = LineTaskConfig(),
) -> list[LineTask]:
    """Line tasks of a snapshot: `files` are its encoder-visible files (path, bytes) and
    `chunks` their chunks. Files are tried in a seeded order until `cfg.max_files` gave tasks."""
    index = NameIndex.of(chunks)
    by_path: dict[str, list[Chunk]] = {}
    for c in chunks:
        by_path.setdefault(c.path, []).append(c)
    out: list[LineTask] = []
    taken = 0
    for path, data in sorted(files, key=lambda f: _rank(cfg.seed, repo, f[0])):
        if taken >= cfg.max_files:
            break
        try:
            source = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        names = cross_file_names(index, by_path.get(path, []))
        tasks = mine_file_lines(repo, commit, path, source, names, cfg) if names else []
        if tasks:
            out += tasks
            taken += 1
    return sorted(out, key=lambda t: (t.path, t.line))
