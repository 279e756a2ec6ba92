"""Assertion-task mining over real git repositories made in a temp dir."""

from __future__ import annotations

from pathlib import Path

from repo2lora.tasks.miner import (
    AssertionTask,
    MinerConfig,
    mine,
    mine_added,
    target_kind_distribution,
)
from tests.gitrepo import GitRepo

FORMS_TEST = '''\
import unittest

import numpy as np
import pytest
from numpy.testing import assert_allclose

from pkg import thing

LIMIT = 7
UNUSED_TABLE = {"never": "shown"}


def build(size):
    return thing.make(size, LIMIT)


def unused_helper():
    return "unused helper body"


@pytest.fixture
def widget():
    return build(2)


def test_compare(widget):
    size = widget.size()
    assert size == 42
    assert widget.name != "wid"
    assert size in (1, 2, 3)
    assert widget is thing.DEFAULT
    assert size < thing.bound(3)
    assert 1 < size <= LIMIT


def test_bare():
    assert thing.ok()


def test_raises():
    with pytest.raises(thing.BadError, match="bad"):
        thing.make(-1)
    with pytest.raises((KeyError, ValueError)):
        thing.make(None)


def test_approx():
    assert thing.ratio(1, 3) == pytest.approx(0.333, rel=1e-2)


def test_helpers():
    assert_allclose(thing.vec(), [1.0, 2.0])
    np.testing.assert_equal(thing.vec(), np.array([1, 2]), "message")
    mock = thing.mock()
    mock.assert_called_once_with(5)


def helper_that_asserts(x):
    assert x == "not a task"


class TestThing(unittest.TestCase):
    """A unittest case."""

    kind = "x"

    def setUp(self):
        self.thing = thing.Thing(5)

    def other(self):
        return "other method body"

    def test_equal(self):
        self.assertEqual(self.thing.value, 5)
        self.assertTrue(self.thing.ok())
        self.assertAlmostEqual(self.thing.f(), 1.25, 2)
        with self.assertRaises(thing.BadError):
            self.thing.fail()
        self.assertIn("k", {"k": [1,
                                  2]})
'''

MULTILINE_TARGET = '{"k": [1,\n' + " " * 34 + "2]}"
EXPECTED_FORMS = [
    ("test_compare", "42", "literal", "compare"),
    ("test_compare", '"wid"', "literal", "compare"),
    ("test_compare", "(1, 2, 3)", "collection", "compare"),
    ("test_compare", "thing.DEFAULT", "attribute", "compare"),
    ("test_compare", "thing.bound(3)", "call", "compare"),
    ("test_compare", "LIMIT", "identifier", "compare"),
    ("test_raises", "thing.BadError", "attribute", "raises"),
    ("test_raises", "(KeyError, ValueError)", "collection", "raises"),
    ("test_approx", "0.333", "literal", "approx"),
    ("test_helpers", "[1.0, 2.0]", "collection", "assert_helper"),
    ("test_helpers", "np.array([1, 2])", "call", "assert_helper"),
    ("TestThing.test_equal", "5", "literal", "self_assert"),
    ("TestThing.test_equal", "self.thing.ok()", "call", "self_assert"),
    ("TestThing.test_equal", "1.25", "literal", "self_assert"),
    ("TestThing.test_equal", "thing.BadError", "attribute", "raises"),
    ("TestThing.test_equal", MULTILINE_TARGET, "collection", "self_assert"),
]


def _repo_with(tmp_path: Path, files: dict[str, str | bytes]) -> GitRepo:
    repo = GitRepo(tmp_path / "repo")
    repo.commit({"pkg/thing.py": "def make(size, limit):\n    assert size == 3\n", **files})
    return repo


def _by_target(tasks: list[AssertionTask]) -> dict[str, AssertionTask]:
    return {t.target: t for t in tasks}


def test_every_target_form_is_mined_with_its_exact_source(tmp_path: Path) -> None:
    repo = _repo_with(tmp_path, {"tests/test_forms.py": FORMS_TEST})
    result = mine(repo.root)
    got = [(t.test_qualname, t.target, t.target_kind, t.form) for t in result.tasks]
    assert got == EXPECTED_FORMS
    # `assert thing.ok()` has no comparison: skipped and counted, not mined
    assert result.counts["skipped_bare_assert"] == 1
    # only test files are mined: the assert in pkg/thing.py is not a task
    assert {t.path for t in result.tasks} == {"tests/test_forms.py"}
    lines = FORMS_TEST.split("\n")
    for task in result.tasks:
        assert task.repo == "repo"
        assert task.commit == repo.git("rev-parse", "HEAD")
        assert lines[task.line - 1][task.col :].startswith(task.target.split("\n")[0])


def test_bare_asserts_are_whole_expression_targets_when_asked(tmp_path: Path) -> None:
    repo = _repo_with(tmp_path, {"tests/test_forms.py": FORMS_TEST})
    tasks = mine(repo.root, config=MinerConfig(bare_asserts=True)).tasks
    bare = [t for t in tasks if t.form == "bare"]
    assert [(t.test_qualname, t.target, t.target_kind) for t in bare] == [
        ("test_bare", "thing.ok()", "call")
    ]


def test_prefix_is_structured_and_stops_right_before_the_target(tmp_path: Path) -> None:
    repo = _repo_with(tmp_path, {"tests/test_forms.py": FORMS_TEST})
    tasks = _by_target(mine(repo.root, config=MinerConfig(max_prompt_tokens=None)).tasks)

    compare = tasks["thing.bound(3)"]
    expected_end = (
        "def test_compare(widget):\n    size = widget.size()\n    assert size == 42\n"
        '    assert widget.name != "wid"\n    assert size in (1, 2, 3)\n'
        "    assert widget is thing.DEFAULT\n    assert size < "
    )
    assert compare.prefix.endswith(expected_end)
    assert compare.prefix.startswith("import unittest\nimport numpy as np\nimport pytest\n")
    assert "def build(size):" in compare.prefix  # used through the fixture
    assert "@pytest.fixture\ndef widget():" in compare.prefix  # requested as a parameter
    assert "LIMIT = 7" in compare.prefix  # used by build, transitively
    for absent in ("UNUSED_TABLE", "unused helper body", "def test_raises"):
        assert absent not in compare.prefix
    assert not compare.prefix_truncated

    raises = [t for t in tasks.values() if t.form == "raises"]
    assert {t.prefix.split("\n")[-1] for t in raises} == {
        "    with pytest.raises(",
        "        with self.assertRaises(",
    }
    unit = [t for t in tasks.values() if t.test_qualname == "TestThing.test_equal"]
    for task in unit:
        assert "class TestThing(unittest.TestCase):" in task.prefix
        assert "    def setUp(self):\n        self.thing = thing.Thing(5)" in task.prefix
        assert '    kind = "x"' in task.prefix
        assert "other method body" not in task.prefix
    assert tasks["1.25"].prefix.endswith("self.assertAlmostEqual(self.thing.f(), ")
    assert tasks["0.333"].prefix.endswith("assert thing.ratio(1, 3) == pytest.approx(")

    # The target and everything after it never leak into the prompt.
    for task in mine(repo.root).tasks:
        assert task.prefix.endswith(FORMS_TEST.split("\n")[task.line - 1][: task.col])
        assert task.target not in task.prefix.split("\n")[-1]
    assert "42" not in compare.prefix.split("def test_compare")[0]
    assert "thing.bound(3)" not in compare.prefix
    assert "1 < size <= LIMIT" not in compare.prefix


def test_token_budget_cuts_from_the_front_and_keeps_the_end(tmp_path: Path) -> None:
    repo = _repo_with(tmp_path, {"tests/test_forms.py": FORMS_TEST})

    def words(text: str) -> int:
        return len(text.split())

    full = _by_target(mine(repo.root, config=MinerConfig(max_prompt_tokens=None)).tasks)
    budget = MinerConfig(max_prompt_tokens=12)
    cut = _by_target(mine(repo.root, config=budget, count_tokens=words).tasks)
    task, whole = cut["thing.bound(3)"], full["thing.bound(3)"]
    assert task.prefix_truncated
    assert words(task.prefix) <= 12
    assert whole.prefix.endswith(task.prefix)
    assert task.prefix.endswith("    assert size < ")
    assert task.prefix.startswith("    ")  # whole lines were dropped, not parts of lines
    dropped_line = whole.prefix[: -len(task.prefix)].split("\n")[-2]
    assert words(dropped_line + "\n" + task.prefix) > 12  # it kept as many lines as fit

    # A last line over the budget on its own is cut by characters, still ending at the target.
    tiny = _by_target(mine(repo.root, config=MinerConfig(max_prompt_tokens=3)).tasks)
    # (the default estimate, `repo_encoder.tokens`: UTF-8 bytes / 4 rounded up, 12 bytes: 3)
    assert tiny["thing.bound(3)"].prefix == "    assert size < "[-12:]


def test_mining_is_deterministic_with_stable_unique_ids(tmp_path: Path) -> None:
    first = GitRepo(tmp_path / "a" / "proj")
    second = GitRepo(tmp_path / "b" / "proj")
    files: dict[str, str | bytes] = {
        "tests/test_forms.py": FORMS_TEST,
        "test_top.py": "def test_top():\n    assert 2 * 2 == 4\n",
    }
    first.commit(files)
    second.commit(files)
    one, two = mine(first.root).tasks, mine(second.root).tasks
    assert one == two
    assert len({t.task_id for t in one}) == len(one)
    assert [t.path for t in one] == sorted(t.path for t in one)


def test_same_prefix_and_target_is_kept_once(tmp_path: Path) -> None:
    # A vendored copy of a test file gives the same prompts and targets at another path.
    repo = _repo_with(
        tmp_path,
        {"tests/test_forms.py": FORMS_TEST, "tests/vendored/test_forms.py": FORMS_TEST},
    )
    result = mine(repo.root)
    assert len(result.tasks) == len(EXPECTED_FORMS)
    assert result.counts["duplicates_dropped"] == len(EXPECTED_FORMS)
    assert {t.path for t in result.tasks} == {"tests/test_forms.py"}


def test_unparsable_test_files_are_skipped_and_counted(tmp_path: Path) -> None:
    repo = _repo_with(
        tmp_path,
        {
            "tests/test_good.py": "def test_ok():\n    assert 1 + 1 == 2\n",
            "tests/test_syntax.py": "def test_broken(:\n    assert x == 1\n",
            "tests/test_nul.py": "def test_nul():\n    assert x == 1\n\x00\n",
            "tests/test_latin1.py": b"def test_latin():\n    assert x == '\xe9'\n",
            "tests/test_deep.py": "def test_deep():\n    assert x == " + "(" * 5000 + ")" * 5000,
        },
    )
    result = mine(repo.root)
    assert [t.target for t in result.tasks] == ["2"]
    assert result.counts["skipped_syntax_error"] == 3
    assert result.counts["skipped_undecodable"] == 1
    assert result.counts["files_parsed"] == 1


def test_mining_reads_the_commit_not_the_work_tree(tmp_path: Path) -> None:
    repo = _repo_with(tmp_path, {"tests/test_a.py": "def test_a():\n    assert f() == 1\n"})
    first = repo.git("rev-parse", "HEAD")
    repo.commit({"tests/test_a.py": "def test_a():\n    assert f() == 2\n"})
    repo.write({"tests/test_a.py": "def test_a():\n    assert f() == 3\n"})  # uncommitted
    assert [t.target for t in mine(repo.root, first).tasks] == ["1"]
    assert [t.target for t in mine(repo.root).tasks] == ["2"]


def test_added_tasks_are_matched_by_ast_not_by_line_text(tmp_path: Path) -> None:
    repo = GitRepo(tmp_path / "evo")
    root = repo.commit(
        {
            "tests/test_a.py": (
                "from pkg import f, g\n\n\n"
                "def test_a():\n    assert f(1) == 10\n    assert g() == 'x'\n\n\n"
                "def test_b():\n    assert f(2) == 20\n"
            ),
        }
    )
    # Re-indented into a loop, reformatted over lines, moved below new code, test_b moved to
    # another file: all unchanged. New: f(3) in test_a, a second copy of f(2) == 20 in test_b,
    # and a changed expected value for g().
    changed = repo.commit(
        {
            "tests/test_a.py": (
                "from pkg import f, g\n\n\n"
                "def test_a():\n    assert f(3) == 30\n    for _ in range(1):\n"
                "        assert (\n            f(1)\n            == 10\n        )\n"
                "    assert g() == 'y'\n"
            ),
            "tests/test_b.py": (
                "from pkg import f\n\n\n# moved here\n"
                "def test_b():\n    assert f(2) == 20\n    assert f(2) == 20\n"
            ),
        }
    )
    added = mine_added(repo.root, changed).tasks
    assert sorted((t.path, t.test_qualname, t.target) for t in added) == [
        ("tests/test_a.py", "test_a", "'y'"),
        ("tests/test_a.py", "test_a", "30"),
        ("tests/test_b.py", "test_b", "20"),
    ]
    assert [t.line for t in added if t.path == "tests/test_b.py"] == [7]  # the second copy
    # A root commit adds everything it has.
    assert [t.target for t in mine_added(repo.root, root).tasks] == ["10", "'x'", "20"]
    # A commit that touches no test file adds nothing.
    untouched = repo.commit({"pkg/__init__.py": "X = 1\n"})
    assert mine_added(repo.root, untouched).tasks == []


def test_target_kind_distribution_counts_most_frequent_first(tmp_path: Path) -> None:
    repo = _repo_with(tmp_path, {"tests/test_forms.py": FORMS_TEST})
    distribution = target_kind_distribution(mine(repo.root).tasks)
    assert distribution == {
        "literal": 5,
        "collection": 4,
        "attribute": 3,
        "call": 3,
        "identifier": 1,
    }
    assert list(distribution) == ["literal", "collection", "attribute", "call", "identifier"]


def test_prompt_shows_only_the_helpers_its_own_test_and_set_up_use(tmp_path: Path) -> None:
    source = (
        "import unittest\n\n\n"
        "def used_by_set_up():\n    return 1\n\n\n"
        "def used_by_other_test():\n    return 2\n\n\n"
        "class TestA(unittest.TestCase):\n"
        "    def setUp(self):\n        self.a = used_by_set_up()\n\n"
        "    def test_other(self):\n        self.assertEqual(used_by_other_test(), 2)\n\n"
        "    def test_mine(self):\n        self.assertEqual(self.a, 1)\n"
    )
    repo = _repo_with(tmp_path, {"tests/test_a.py": source})
    mine_task = next(t for t in mine(repo.root).tasks if t.test_qualname == "TestA.test_mine")
    assert "def used_by_set_up():" in mine_task.prefix
    assert "used_by_other_test" not in mine_task.prefix
    assert mine_task.prefix.endswith("    def test_mine(self):\n        self.assertEqual(self.a, ")
