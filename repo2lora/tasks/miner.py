"""Mines assertion-completion tasks from the test files of one commit of a git repository: each
task is a structured prompt prefix and the exact source text of the asserted expression.

What counts as a target, and where, is `assertion_sites`'s rule (its module docstring).

The prompt prefix is structured: the file's imports, the module-level helpers, constants and
fixtures the test uses (found by name, transitively), the enclosing class headers with their
class attributes, set-up methods and fixtures, then the test function's text up to the target's
first character. Helpers and set-up come from anywhere in the file (they are definitions an IDE
shows), but nothing of the test function at or after the target, and no other test function, is
ever in the prefix. The prefix is cut from the front to a token budget, so the end next to the
target always stays.
"""

from __future__ import annotations

import ast
import collections
import hashlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import git

from repo2lora.tasks.assertion_sites import (
    AssertionForm,
    Site,
    Source,
    TargetKind,
    dotted_name,
    sites,
    target_kind,
    test_functions,
)
from repo_encoder.exclusion import ExclusionConfig, is_test_path
from repo_encoder.snapshot import SYMLINK_MODE, open_repository, resolve_commit
from repo_encoder.tokens import estimate_tokens

TokenCounter = Callable[[str], int]

_SETUP_METHODS = frozenset(
    {
        "setUp",
        "setUpClass",
        "asyncSetUp",
        "setUpTestData",
        "setup_method",
        "setup_class",
        "setup",
    }
)
_UTF8_BOM = "\ufeff"


@dataclass(frozen=True)
class MinerConfig:
    """Which files are test files (the leakage rule's globs, `ExclusionConfig.test_globs`, so
    the miner and the encoder agree on what test code is), the prompt's token budget (None: no
    cut), the largest file read, and whether `assert x` without a comparison becomes a task."""

    exclusion: ExclusionConfig = field(default_factory=ExclusionConfig)
    max_prompt_tokens: int | None = 1024
    max_file_bytes: int = 1_000_000
    bare_asserts: bool = False


@dataclass(frozen=True)
class AssertionTask:
    """One assertion-completion task. `prefix` is the prompt, `target` the exact source text the
    model should produce. The test function that holds the target (`path`, `test_qualname`,
    `test_start_line`..`test_end_line`, decorators included; qualnames as the chunker writes
    them, `Class.test_x`) is what the leakage rule hides from the encoder. Lines are 1-based,
    columns 0-based characters. `assertion_key` is the same for the same assertion in the same
    test function wherever it moves, so commits can be compared by it."""

    task_id: str
    repo: str
    commit: str
    path: str
    test_qualname: str
    test_start_line: int
    test_end_line: int
    line: int
    col: int
    end_line: int
    end_col: int
    target: str
    target_kind: TargetKind
    form: AssertionForm
    prefix: str
    prefix_truncated: bool
    assertion_key: str


@dataclass
class MiningResult:
    """The tasks of a mining run in deterministic order, and counts of what was read, skipped
    (and why) and dropped as a duplicate."""

    tasks: list[AssertionTask]
    counts: collections.Counter[str] = field(default_factory=collections.Counter)


def mine(
    repo: git.Repo | str | os.PathLike[str],
    commit: git.Commit | str = "HEAD",
    config: MinerConfig = MinerConfig(),
    *,
    count_tokens: TokenCounter = estimate_tokens,
    repo_name: str | None = None,
) -> MiningResult:
    """Every assertion task in the test files of `commit`, with counts of skipped files."""
    repository = _open(repo)
    resolved = _resolve(repository, commit)
    name = repo_name or _repo_name(repository)
    counts: collections.Counter[str] = collections.Counter()
    tasks: list[AssertionTask] = []
    for path, blob in _test_blobs(resolved, config, counts).items():
        tasks.extend(_mine_blob(path, blob, name, resolved.hexsha, config, count_tokens, counts))
    return MiningResult(_deduplicate(tasks, counts), counts)


def mine_added(
    repo: git.Repo | str | os.PathLike[str],
    commit: git.Commit | str = "HEAD",
    config: MinerConfig = MinerConfig(),
    *,
    count_tokens: TokenCounter = estimate_tokens,
    repo_name: str | None = None,
) -> MiningResult:
    """The assertion tasks present in `commit` but not in its first parent (all of them for a
    root commit). Assertions are matched by their AST and enclosing test qualname, counted as a
    multiset, so an unchanged assertion that moved, was re-indented or went to another file is
    not added, and a second copy of an existing one is. Only test files whose blob changed are
    read (unchanged files cancel out), so the counts are of those files."""
    repository = _open(repo)
    resolved = _resolve(repository, commit)
    name = repo_name or _repo_name(repository)
    counts: collections.Counter[str] = collections.Counter()
    new_blobs = _test_blobs(resolved, config, counts)
    old_blobs: dict[str, git.Blob] = {}
    if resolved.parents:
        old_blobs = _test_blobs(resolved.parents[0], config, collections.Counter())

    # Files with the same blob on both sides hold the same assertions: they cancel out.
    old_keys: collections.Counter[str] = collections.Counter()
    for path, blob in old_blobs.items():
        if path in new_blobs and new_blobs[path].binsha == blob.binsha:
            continue
        parent_counts: collections.Counter[str] = collections.Counter()
        for task in _mine_blob(path, blob, name, "", config, _no_tokens, parent_counts):
            old_keys[task.assertion_key] += 1
        counts["parent_files_unparsable"] += parent_counts["skipped_syntax_error"]

    added: list[AssertionTask] = []
    for path, blob in new_blobs.items():
        if path in old_blobs and old_blobs[path].binsha == blob.binsha:
            continue
        for task in _mine_blob(path, blob, name, resolved.hexsha, config, count_tokens, counts):
            if old_keys[task.assertion_key] > 0:
                old_keys[task.assertion_key] -= 1
            else:
                added.append(task)
    return MiningResult(_deduplicate(added, counts), counts)


def mine_source(
    path: str,
    source: str,
    *,
    repo: str = "",
    commit: str = "",
    config: MinerConfig = MinerConfig(),
    count_tokens: TokenCounter = estimate_tokens,
) -> list[AssertionTask]:
    """The assertion tasks of one test file's text, in source order, not de-duplicated.
    Raises SyntaxError (ValueError for NUL bytes) when the text does not parse."""
    return _mine_text(path, source, repo, commit, config, count_tokens, collections.Counter())


def target_kind_distribution(tasks: Iterable[AssertionTask]) -> dict[str, int]:
    """How many tasks have each target kind, most frequent first (ties by name)."""
    counts = collections.Counter(task.target_kind for task in tasks)
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


# --- reading git objects ---------------------------------------------------------------------


def _open(repo: git.Repo | str | os.PathLike[str]) -> git.Repo:
    return repo if isinstance(repo, git.Repo) else open_repository(repo)


def _resolve(repo: git.Repo, commit: git.Commit | str) -> git.Commit:
    return commit if isinstance(commit, git.Commit) else resolve_commit(repo, commit)


def _repo_name(repo: git.Repo) -> str:
    return os.path.basename(os.path.normpath(repo.working_tree_dir or repo.git_dir))


def _test_blobs(
    commit: git.Commit, config: MinerConfig, counts: collections.Counter[str]
) -> dict[str, git.Blob]:
    """The test `.py` files of `commit` by path, in path order; symlinks (never followed) and
    files over the size limit are counted, not returned."""
    blobs: dict[str, git.Blob] = {}
    for item in commit.tree.traverse():
        if not isinstance(item, git.Blob):
            continue  # trees, and submodules (never entered)
        path = str(item.path)
        if not path.endswith(".py") or not is_test_path(path, config.exclusion):
            continue
        if item.mode == SYMLINK_MODE:
            counts["skipped_symlink"] += 1
        elif item.size > config.max_file_bytes:
            counts["skipped_too_large"] += 1
        else:
            blobs[path] = item
    return dict(sorted(blobs.items()))


def _mine_blob(
    path: str,
    blob: git.Blob,
    repo: str,
    commit: str,
    config: MinerConfig,
    count_tokens: TokenCounter,
    counts: collections.Counter[str],
) -> list[AssertionTask]:
    counts["test_files"] += 1
    data: bytes = blob.data_stream.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        counts["skipped_undecodable"] += 1
        return []
    try:
        tasks = _mine_text(path, text, repo, commit, config, count_tokens, counts)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        # ValueError: NUL bytes; RecursionError/MemoryError: absurdly deep nesting.
        counts["skipped_syntax_error"] += 1
        return []
    counts["files_parsed"] += 1
    return tasks


def _no_tokens(text: str) -> int:
    return 0


def _deduplicate(
    tasks: list[AssertionTask], counts: collections.Counter[str]
) -> list[AssertionTask]:
    """Tasks in (path, position) order, each (prefix, target) pair once."""
    seen: set[tuple[str, str]] = set()
    unique: list[AssertionTask] = []
    for task in sorted(tasks, key=lambda t: (t.path, t.line, t.col, t.end_line, t.end_col)):
        if (task.prefix, task.target) in seen:
            counts["duplicates_dropped"] += 1
            continue
        seen.add((task.prefix, task.target))
        unique.append(task)
    counts["tasks"] = len(unique)
    return unique


# --- one file --------------------------------------------------------------------------------


def _mine_text(
    path: str,
    source: str,
    repo: str,
    commit: str,
    config: MinerConfig,
    count_tokens: TokenCounter,
    counts: collections.Counter[str],
) -> list[AssertionTask]:
    text = source.removeprefix(_UTF8_BOM).replace("\r\n", "\n").replace("\r", "\n")
    module = ast.parse(text, filename=path)
    src = Source(text)
    context = _ModuleContext(module, src)
    tasks: list[AssertionTask] = []
    for classes, test in test_functions(module.body, ()):
        for site in sites(classes, test, config.bare_asserts, counts):
            tasks.append(_task(site, src, context, path, repo, commit, config, count_tokens))
    tasks.sort(key=lambda t: (t.line, t.col, t.end_line, t.end_col))
    return tasks


# --- the prompt prefix -----------------------------------------------------------------------


class _ModuleContext:
    """The parts of a module a prompt may show: its imports, and the module-level helpers,
    fixtures and constants by the names they define (test functions and classes holding tests
    are never helpers)."""

    def __init__(self, module: ast.Module, src: Source) -> None:
        self.src = src
        self.imports = [_stmt_text(stmt, src) for stmt in module.body if _is_import_block(stmt)]
        self.definitions: dict[str, ast.stmt] = {}
        for stmt in module.body:
            for name in _defined_names(stmt):
                self.definitions.setdefault(name, stmt)

    def helpers_for(self, roots: Iterable[ast.AST], exclude: set[int]) -> list[str]:
        """The texts of the module-level definitions `roots` use, directly or through other
        helpers, in source order."""
        chosen: dict[int, ast.stmt] = {}
        pending = [name for root in roots for name in _used_names(root)]
        while pending:
            stmt = self.definitions.get(pending.pop())
            if stmt is None or id(stmt) in chosen or id(stmt) in exclude:
                continue
            chosen[id(stmt)] = stmt
            pending.extend(_used_names(stmt))
        ordered = sorted(chosen.values(), key=lambda s: s.lineno)
        return [_stmt_text(stmt, self.src) for stmt in ordered]


def _is_import_block(stmt: ast.stmt) -> bool:
    if isinstance(stmt, ast.Import | ast.ImportFrom):
        return True
    # `try: import x / except ImportError: ...` and `if TYPE_CHECKING: import y`
    if isinstance(stmt, ast.Try | ast.If):
        return any(isinstance(s, ast.Import | ast.ImportFrom) for s in stmt.body)
    return False


def _defined_names(stmt: ast.stmt) -> list[str]:
    if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
        return [] if stmt.name.startswith("test") else [stmt.name]
    if isinstance(stmt, ast.ClassDef):
        holds_tests = any(True for _ in test_functions(stmt.body, ()))
        return [] if holds_tests else [stmt.name]
    if isinstance(stmt, ast.Assign):
        return [n.id for t in stmt.targets for n in ast.walk(t) if isinstance(n, ast.Name)]
    if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
        return [stmt.target.id]
    return []


def _used_names(node: ast.AST) -> list[str]:
    """Names `node` reads, plus the parameters of a function (pytest fixtures by name)."""
    names: list[str] = []
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load):
            names.append(sub.id)
        elif isinstance(sub, ast.arg):
            names.append(sub.arg)
    return names


def _first_line(stmt: ast.stmt) -> int:
    decorators = getattr(stmt, "decorator_list", [])
    return min([stmt.lineno, *(d.lineno for d in decorators)])


def _stmt_text(stmt: ast.stmt, src: Source) -> str:
    """The whole lines of `stmt` (decorators included), with their indentation."""
    return src.line_range(_first_line(stmt), stmt.end_lineno or stmt.lineno)


def _class_context(cls: ast.ClassDef, src: Source) -> str:
    """A class's header lines, class attributes and docstring, set-up methods and fixtures."""
    first_body_line = cls.body[0].lineno if cls.body else cls.lineno + 1
    header_end = max(cls.lineno, first_body_line - 1)
    text = src.line_range(_first_line(cls), header_end)
    for stmt in cls.body:
        if stmt.lineno <= header_end or not _is_class_context(stmt):
            continue
        is_def = isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef)
        text += ("\n\n" if is_def else "\n") + _stmt_text(stmt, src)
    return text


def _is_class_context(stmt: ast.stmt) -> bool:
    if isinstance(stmt, ast.Assign | ast.AnnAssign):
        return True
    if isinstance(stmt, ast.Expr):  # a docstring
        return isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)
    if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
        return stmt.name in _SETUP_METHODS or _is_fixture(stmt)
    return False


def _is_fixture(func: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    for decorator in func.decorator_list:
        call = decorator.func if isinstance(decorator, ast.Call) else decorator
        name = dotted_name(call)
        if name is not None and name.rsplit(".", 1)[-1] == "fixture":
            return True
    return False


def _task(
    site: Site,
    src: Source,
    context: _ModuleContext,
    path: str,
    repo: str,
    commit: str,
    config: MinerConfig,
    count_tokens: TokenCounter,
) -> AssertionTask:
    target = site.target
    end_lineno = target.end_lineno or target.lineno
    end_col_offset = target.end_col_offset or target.col_offset
    start = src.offset(target.lineno, target.col_offset)
    end = src.offset(end_lineno, end_col_offset)
    test_first = _first_line(site.test)

    class_members = [m for cls in site.classes for m in cls.body if _is_class_context(m)]
    exclude = {id(cls) for cls in site.classes}
    sections = [s for s in ("\n".join(context.imports),) if s]
    sections += context.helpers_for([site.test, *class_members], exclude)
    body = src.text[src.starts[test_first - 1] : start]
    if site.classes:
        class_parts = [_class_context(cls, src) for cls in site.classes]
        sections.append("\n\n".join([*class_parts, body]))
    else:
        sections.append(body)
    full_prefix = "\n\n\n".join(sections)
    prefix = cut_front(full_prefix, config.max_prompt_tokens, count_tokens)

    qualname = ".".join([*(cls.name for cls in site.classes), site.test.name])
    line, col = target.lineno, src.char_col(target.lineno, target.col_offset)
    task_id = _digest(f"{repo}\0{path}\0{qualname}\0{line}:{col}")
    return AssertionTask(
        task_id=task_id,
        repo=repo,
        commit=commit,
        path=path,
        test_qualname=qualname,
        test_start_line=test_first,
        test_end_line=site.test.end_lineno or site.test.lineno,
        line=line,
        col=col,
        end_line=end_lineno,
        end_col=src.char_col(end_lineno, end_col_offset),
        target=src.text[start:end],
        target_kind=target_kind(target),
        form=site.form,
        prefix=prefix,
        prefix_truncated=prefix != full_prefix,
        assertion_key=_digest(f"{qualname}\0{ast.dump(site.anchor)}\0{ast.dump(target)}"),
    )


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def cut_front(text: str, budget: int | None, count_tokens: TokenCounter) -> str:
    """The longest suffix of `text` within `budget` tokens: whole lines are dropped from the
    front first, and only when the last line alone is over budget is it cut by characters.
    Assumes a longer suffix never has fewer tokens (binary search)."""
    if budget is None or count_tokens(text) <= budget:
        return text
    if count_tokens("") > budget:
        return ""
    line_starts = [0] + [i + 1 for i, ch in enumerate(text) if ch == "\n"]
    if count_tokens(text[line_starts[-1] :]) <= budget:
        candidates = line_starts
    else:
        candidates = list(range(line_starts[-1], len(text) + 1))
    lo, hi = 0, len(candidates) - 1  # the answer is in candidates[lo..hi]; hi always fits
    while lo < hi:
        mid = (lo + hi) // 2
        if count_tokens(text[candidates[mid] :]) <= budget:
            hi = mid
        else:
            lo = mid + 1
    return text[candidates[lo] :]
