"""Finds the assertion targets in a test file's syntax tree (the miner turns each into a task).

What counts as a target (found with `ast`, only inside test functions: `test*` functions at
module level or in a class, at any class depth):

* `assert a == b` and every other comparison -> the right-hand side (the last comparator of a
  chain such as `a < b < c`).
* `assert x` without a comparison -> skipped and counted (`skipped_bare_assert`), unless
  `MinerConfig.bare_asserts` is set, then the whole expression: predicting a whole condition is
  a different task from predicting an expected value, and mostly noise.
* `self.assert*(...)` -> the expected value: for one-value methods (`assertTrue(x)`,
  `assertIsNone(x)`) the first argument, for `assertRaises`/`assertWarns` the exception, for all
  others the second positional argument (a third positional argument is a message or a
  tolerance, as in `assertAlmostEqual(a, b, 3)`, not the expected value).
* `pytest.raises(Exc)` / `with pytest.raises(Exc, match=...)` (and `pytest.warns`) -> the
  exception expression.
* `assert_*(...)` helpers (`assert_allclose`, `assert_frame_equal`, ...) -> the second positional
  argument, or the only one; mock call checks (`m.assert_called_once_with`) are not assertions
  about a value and are left out.
* A target that is `pytest.approx(v)` is unwrapped to `v`; the prefix then ends in `approx(`.
"""

from __future__ import annotations

import ast
import collections
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

TargetKind = Literal[
    "literal",
    "identifier",
    "attribute",
    "call",
    "collection",
    "comprehension",
    "subscript",
    "expression",
]
AssertionForm = Literal["compare", "bare", "self_assert", "raises", "approx", "assert_helper"]

_ONE_VALUE_METHODS = frozenset({"assertTrue", "assertFalse", "assertIsNone", "assertIsNotNone"})
_EXCEPTION_METHODS = frozenset(
    {"assertRaises", "assertRaisesRegex", "assertWarns", "assertWarnsRegex"}
)
_RAISES_FUNCTIONS = {"raises": "expected_exception", "warns": "expected_warning"}
_MOCK_CHECK_PREFIXES = (
    "assert_called",
    "assert_not_called",
    "assert_any_call",
    "assert_has_calls",
    "assert_awaited",
    "assert_not_awaited",
    "assert_any_await",
    "assert_has_awaits",
)


def target_kind(node: ast.expr) -> TargetKind:
    """The shape of a target expression, for the report's kind distribution."""
    if isinstance(node, ast.Constant):
        return "literal"
    if (
        isinstance(node, ast.UnaryOp)
        and isinstance(node.op, ast.USub | ast.UAdd)
        and isinstance(node.operand, ast.Constant)
    ):
        return "literal"
    if isinstance(node, ast.Name):
        return "identifier"
    if isinstance(node, ast.Attribute):
        return "attribute"
    if isinstance(node, ast.Call):
        return "call"
    if isinstance(node, ast.List | ast.Tuple | ast.Set | ast.Dict):
        return "collection"
    if isinstance(node, ast.ListComp | ast.SetComp | ast.DictComp | ast.GeneratorExp):
        return "comprehension"
    if isinstance(node, ast.Subscript):
        return "subscript"
    return "expression"


@dataclass(frozen=True)
class Site:
    """Where a target sits: its test function, the Assert or Call node that makes the
    assertion (what commits are matched by), the target node and the assertion's form."""

    classes: tuple[ast.ClassDef, ...]
    test: ast.FunctionDef | ast.AsyncFunctionDef
    anchor: ast.AST
    target: ast.expr
    form: AssertionForm


class Source:
    """A file's text with conversions from `ast` positions (1-based line, UTF-8 byte column)
    to character offsets."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.lines = text.split("\n")
        self.starts = [0]
        for line in self.lines[:-1]:
            self.starts.append(self.starts[-1] + len(line) + 1)

    def offset(self, lineno: int, byte_col: int) -> int:
        line = self.lines[lineno - 1]
        return self.starts[lineno - 1] + len(line.encode("utf-8")[:byte_col].decode("utf-8"))

    def char_col(self, lineno: int, byte_col: int) -> int:
        return self.offset(lineno, byte_col) - self.starts[lineno - 1]

    def line_range(self, first: int, last: int) -> str:
        """Lines `first`..`last` (1-based, inclusive), without the final newline."""
        return "\n".join(self.lines[first - 1 : last])


def test_functions(
    body: list[ast.stmt], classes: tuple[ast.ClassDef, ...]
) -> Iterator[tuple[tuple[ast.ClassDef, ...], ast.FunctionDef | ast.AsyncFunctionDef]]:
    for stmt in body:
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
            if stmt.name.startswith("test"):
                yield classes, stmt
        elif isinstance(stmt, ast.ClassDef):
            yield from test_functions(stmt.body, (*classes, stmt))


def sites(
    classes: tuple[ast.ClassDef, ...],
    test: ast.FunctionDef | ast.AsyncFunctionDef,
    bare_asserts: bool,
    counts: collections.Counter[str],
) -> Iterator[Site]:
    for stmt in test.body:
        for node in ast.walk(stmt):
            found = _target_of(node, bare_asserts, counts)
            if found is None:
                continue
            target, form = found
            if isinstance(target, ast.Starred):
                continue
            if form != "raises":
                target, form = _unwrap_approx(target, form)
            yield Site(classes, test, node, target, form)


def _target_of(
    node: ast.AST, bare_asserts: bool, counts: collections.Counter[str]
) -> tuple[ast.expr, AssertionForm] | None:
    if isinstance(node, ast.Assert):
        if isinstance(node.test, ast.Compare):
            return node.test.comparators[-1], "compare"
        if bare_asserts:
            return node.test, "bare"
        counts["skipped_bare_assert"] += 1
        return None
    if not isinstance(node, ast.Call):
        return None
    name = dotted_name(node.func)
    if name is None:
        return None
    last = name.rsplit(".", 1)[-1]
    args = node.args
    if name.startswith("self.") and name.count(".") == 1 and last.startswith("assert"):
        if last in _EXCEPTION_METHODS:
            exception = _first_or_keyword(node, "expected_exception")
            return None if exception is None else (exception, "raises")
        if not args:
            return None
        if last in _ONE_VALUE_METHODS or len(args) == 1:
            return args[0], "self_assert"
        return args[1], "self_assert"
    if last in _RAISES_FUNCTIONS and name in (last, f"pytest.{last}"):
        exception = _first_or_keyword(node, _RAISES_FUNCTIONS[last])
        return None if exception is None else (exception, "raises")
    if last.startswith("assert_") and not last.startswith(_MOCK_CHECK_PREFIXES) and args:
        return (args[1] if len(args) >= 2 else args[0]), "assert_helper"
    return None


def _first_or_keyword(call: ast.Call, keyword: str) -> ast.expr | None:
    if call.args:
        return call.args[0]
    for kw in call.keywords:
        if kw.arg == keyword:
            return kw.value
    return None


def _unwrap_approx(target: ast.expr, form: AssertionForm) -> tuple[ast.expr, AssertionForm]:
    if (
        isinstance(target, ast.Call)
        and dotted_name(target.func) in ("pytest.approx", "approx")
        and target.args
        and not isinstance(target.args[0], ast.Starred)
    ):
        return target.args[0], "approx"
    return target, form


def dotted_name(node: ast.expr) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))
