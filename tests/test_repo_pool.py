"""The hypernetwork pool screen on real git repositories made in a temp dir: what it counts,
what it rejects and why, the seeded split, and the refusal of reserved repositories."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from benchmark.repo_pool import (
    COLUMNS,
    PoolCriteria,
    PoolError,
    build_pool,
    default_reserved_path,
    load_reserved,
    main,
    manifest_repositories,
    read_pool_tsv,
    reserved_reason,
    split_of,
)
from tests.gitrepo import GitRepo

RESERVED_TSV = (
    "# Reserved for evaluation\n"
    "distribution\timport_names\tgithub\n"
    "tabulate\ttabulate\tastanin/python-tabulate\n"
    "toolz\ttoolz,tlz\tpytoolz/toolz\n"
)
CRITERIA = PoolCriteria(min_commits=5, min_py_lines=10, min_assert_lines=3)

LIB = "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n"
TESTS = (
    "import unittest\n\nfrom pkg.lib import add, sub\n\n\n"
    "def test_add():\n    assert add(1, 2) == 3\n    assert add(0, 0) == 0\n\n\n"
    "class T(unittest.TestCase):\n    def test_sub(self):\n        self.assertEqual(sub(3, 1), 2)\n"
    "\n\ndef test_helpers(m):\n    npt.assert_allclose(add(0.5, 0.5), 1.0)\n"
    "    m.assert_called_once_with(1)\n    with pytest.raises(TypeError):\n        add(1)\n"
)


def _mirror(tmp: Path, owner_name: str, files: dict[str, str | bytes], commits: int) -> Path:
    """A bare clone at `tmp/owner+name/repo`, the layout `fetch` gives, of a work tree built
    with `commits` first-parent commits (the first holds `files`)."""
    work = GitRepo(tmp / "work" / owner_name.replace("/", "-"))
    work.commit(files, "initial")
    for i in range(1, commits):
        work.commit({f"pkg/step{i}.py": f"STEP = {i}\n"}, f"step {i}")
    bare = tmp / owner_name.replace("/", "+") / "repo"
    subprocess.run(
        ["git", "clone", "-q", "--bare", str(work.root), str(bare)], check=True, capture_output=True
    )
    return bare


@pytest.fixture
def reserved_file(tmp_path: Path) -> Path:
    path = tmp_path / "shared" / "eval-reserved.tsv"
    path.parent.mkdir()
    path.write_text(RESERVED_TSV)
    return path


def test_usable_repository_facts_match_git(tmp_path: Path, reserved_file: Path) -> None:
    files: dict[str, str | bytes] = {
        "pkg/__init__.py": "",
        "pkg/lib.py": LIB,
        "tests/test_lib.py": TESTS,
        "LICENSE": "MIT\n",
        "web/app.js": "x=1;\n" * 10,  # a little JavaScript does not make it "not Python"
    }
    git_dir = _mirror(tmp_path, "alice/adder", files, commits=6)
    result = build_pool(
        [("alice/adder", git_dir)], load_reserved(reserved_file), {}, CRITERIA, heldout_fraction=0
    )
    assert [r.owner_name for r in result.train] == ["alice/adder"]
    facts = result.train[0]
    head = subprocess.run(
        ["git", "--git-dir", str(git_dir), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert facts.head == head
    assert facts.commits == 6
    assert facts.url == "https://github.com/alice/adder"
    assert facts.py_files == 3 + 5  # __init__, lib, test, and one module per later commit
    assert facts.py_lines == LIB.count("\n") + TESTS.count("\n") + 5
    assert facts.test_files == 1
    # two `assert`, `self.assertEqual`, `npt.assert_allclose`, `pytest.raises`; not the mock check
    assert facts.assert_lines == 5
    assert facts.license == "LICENSE"
    assert 0.5 < facts.py_share < 1.0


def test_rejections_say_why(tmp_path: Path, reserved_file: Path) -> None:
    good = {"pkg/lib.py": LIB, "tests/test_lib.py": TESTS}
    specs = [
        ("bob/untested", _mirror(tmp_path, "bob/untested", {"pkg/lib.py": LIB * 3}, 6)),
        ("bob/young", _mirror(tmp_path, "bob/young", dict(good), 2)),
        (
            "bob/webapp",
            _mirror(tmp_path, "bob/webapp", {**good, "web/app.js": "var x = 1;\n" * 400}, 6),
        ),
    ]
    result = build_pool(specs, load_reserved(reserved_file), {}, CRITERIA)
    assert not result.train and not result.heldout
    why = {facts.owner_name: " ".join(reasons) for facts, reasons in result.rejected}
    assert why["bob/untested"].startswith("too few tests (0 files")
    assert why["bob/young"] == "short history (2 first-parent commits)"
    assert why["bob/webapp"].startswith("not mostly Python")


def test_missing_blob_is_counted_not_fatal(tmp_path: Path, reserved_file: Path) -> None:
    """`fetch` snapshots lack files of 4 MiB and more: the screen counts them and goes on."""
    work = GitRepo(tmp_path / "w")
    work.commit({"pkg/lib.py": LIB, "tests/test_lib.py": TESTS, "pkg/big.py": "BIG = 1\n"})
    for i in range(5):
        work.commit({f"pkg/m{i}.py": "X = 1\n"})
    sha = work.git("rev-parse", "HEAD:pkg/big.py")
    (work.root / ".git" / "objects" / sha[:2] / sha[2:]).unlink()
    result = build_pool(
        [("carol/gappy", work.root / ".git")], load_reserved(reserved_file), {}, CRITERIA
    )
    [facts] = result.train + result.heldout
    assert facts.missing_files == 1
    assert facts.py_files == 2 + 5  # the missing blob is not a readable .py file


def test_reserved_repositories_are_refused_before_anything_is_read(
    tmp_path: Path, reserved_file: Path
) -> None:
    reserved = load_reserved(reserved_file)
    assert reserved_reason("ASTANIN/Python-Tabulate", reserved)  # case-insensitive GitHub name
    assert reserved_reason("someone/tabulate", reserved)  # a fork, by distribution name
    assert reserved_reason("someone/python-tlz", reserved)  # by import name
    assert reserved_reason("someone/toolbox", reserved) is None
    fork = _mirror(tmp_path, "someone/tabulate", {"tabulate.py": LIB}, 1)
    with pytest.raises(PoolError, match="someone/tabulate is reserved for evaluation"):
        build_pool([("someone/tabulate", fork)], reserved, {}, CRITERIA)


def test_cli_refuses_a_reserved_repository_and_writes_nothing(
    tmp_path: Path, reserved_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = _mirror(tmp_path, "dave/good", {"pkg/lib.py": LIB, "tests/test_lib.py": TESTS}, 6)
    fork = _mirror(tmp_path, "dave/python-tabulate", {"tabulate.py": LIB}, 6)
    out = tmp_path / "pool"
    code = main([str(good), str(fork), "--reserved", str(reserved_file), "--out-dir", str(out)])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("repo2lora: error: dave/python-tabulate is reserved for evaluation")
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_cli_writes_split_tables_and_keeps_manifest_repositories_out(
    tmp_path: Path, reserved_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = {"pkg/lib.py": LIB, "tests/test_lib.py": TESTS}
    names = [f"erin/repo{i}" for i in range(6)] + ["pytest-dev/pluggy"]
    specs = [str(_mirror(tmp_path, n, dict(good), 5)) for n in names]
    manifest = tmp_path / "hypernet-manifest.json"
    manifest.write_text(
        json.dumps(
            {
                "train": [{"name": "s", "commit": "0" * 40, "source": "synthetic suite"}],
                "benchmark_held_out": [
                    {
                        "name": "pluggy",
                        "commit": "1" * 40,
                        "source": "https://github.com/pytest-dev/pluggy",
                    }
                ],
            }
        )
    )
    assert manifest_repositories(manifest) == {"pytest-dev/pluggy": "benchmark_held_out"}
    out = tmp_path / "pool"
    args = [*specs, "--reserved", str(reserved_file), "--manifest", str(manifest)]
    args += ["--out-dir", str(out), "--min-commits", "5", "--min-py-lines", "10"]
    args += ["--min-assert-lines", "3", "--heldout-fraction", "0.5", "--seed", "7"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["in_manifest"] == 1 and report["rejected"] == 0
    assert report["train"] + report["heldout"] == 6
    train = read_pool_tsv(out / "train.tsv")
    heldout = read_pool_tsv(out / "heldout.tsv")
    assert list(train[0]) == list(COLUMNS)
    expected_heldout = {n for n in names[:6] if split_of(n, 7, 0.5) == "heldout"}
    assert {r["owner_name"] for r in heldout} == expected_heldout
    assert {r["owner_name"] for r in train} == set(names[:6]) - expected_heldout
    assert all(Path(r["git_dir"]).is_dir() and r["commits"] == "5" for r in train + heldout)
    # every repository has the same test file (over 200 bytes): a copy the report must flag
    assert len(TESTS) >= 200 > len(LIB)
    assert report["heldout_py_files_identical_to_train"] == {n: 1 for n in expected_heldout}
    rejected = read_pool_tsv(out / "rejected.tsv")
    assert [(r["owner_name"], r["why"]) for r in rejected] == [
        ("pytest-dev/pluggy", "in a hypernetwork manifest (benchmark_held_out)")
    ]


def test_split_is_seeded_and_stable() -> None:
    names = [f"o/r{i}" for i in range(200)]
    first = [split_of(n, 0, 0.2) for n in names]
    assert first == [split_of(n, 0, 0.2) for n in names]
    assert first == [split_of(n.upper(), 0, 0.2) for n in names]
    assert 20 <= first.count("heldout") <= 60
    assert first != [split_of(n, 1, 0.2) for n in names]


def test_default_reserved_path_finds_the_shared_folder_above_a_worktree(
    tmp_path: Path, reserved_file: Path
) -> None:
    checkout = tmp_path / "wt" / "pool"
    checkout.mkdir(parents=True)
    assert default_reserved_path(checkout) == reserved_file
