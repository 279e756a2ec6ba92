"""The synthetic evolving-repository suite: real git repositories, deterministic by seed, whose
tests pass at every commit and whose renames a miner and an evolving state can follow."""

from __future__ import annotations

import ast
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from repo2lora.tasks.miner import mine, mine_added
from repo2lora.tasks.synthetic import SyntheticRepo, generate_suite, load_repo
from repo_encoder.errors import UserError


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> list[SyntheticRepo]:
    """Three repositories of six commits: every one has a rename (one per three commits)."""
    return generate_suite(tmp_path_factory.mktemp("suite"), n_repos=3, n_commits=6, seed=11)


def _git(repo: SyntheticRepo, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=repo.path, capture_output=True, text=True, check=True)
    return out.stdout


def _python_files(repo: SyntheticRepo, sha: str) -> dict[str, str]:
    paths = _git(repo, "ls-tree", "-r", "--name-only", sha).split()
    return {p: _git(repo, "show", f"{sha}:{p}") for p in paths if p.endswith(".py")}


def _constants(repo: SyntheticRepo, sha: str) -> dict[str, int | float | str]:
    """Module-level NAME = literal assignments of the package's source files at `sha`."""
    found: dict[str, int | float | str] = {}
    for path, text in _python_files(repo, sha).items():
        if not path.startswith(f"{repo.package}/"):
            continue
        for stmt in ast.parse(text).body:
            if isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name):
                name = stmt.targets[0].id
                value = stmt.value
                if name.isupper() and isinstance(value, ast.Constant):
                    assert isinstance(value.value, int | float | str)
                    found[name] = value.value
    return found


def _function_names(repo: SyntheticRepo) -> set[str]:
    names: set[str] = set()
    for path, text in _python_files(repo, "HEAD").items():
        if path.startswith(f"{repo.package}/"):
            tree = ast.parse(text)
            names |= {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    return names


def test_same_seed_gives_identical_repositories_and_shas(tmp_path: Path) -> None:
    first = generate_suite(tmp_path / "one", n_repos=2, n_commits=4, seed=5)
    second = generate_suite(tmp_path / "two", n_repos=2, n_commits=4, seed=5)
    assert [c.sha for r in first for c in r.commits] == [c.sha for r in second for c in r.commits]
    for a, b in zip(first, second, strict=True):
        assert a.manifest_path.read_bytes() == b.manifest_path.read_bytes()
        assert _python_files(a, "HEAD") == _python_files(b, "HEAD")
    # Nothing beside the repositories but their manifests; no manifest inside a repository.
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == sorted(
        [r.name for r in first] + [r.manifest_path.name for r in first]
    )
    assert not any("manifest" in p for r in first for p in _git(r, "ls-files").split())

    other = generate_suite(tmp_path / "three", n_repos=2, n_commits=4, seed=6)
    assert {r.package for r in other}.isdisjoint({r.package for r in first})
    assert set(_constants(other[0], "HEAD")) != set(_constants(first[0], "HEAD"))
    assert other[0].commits[-1].sha != first[0].commits[-1].sha


def test_identifiers_and_values_are_specific_to_each_repository(suite: list[SyntheticRepo]) -> None:
    packages = [r.package for r in suite]
    assert len(set(packages)) == len(packages)
    assert all(len(_constants(r, "HEAD")) >= 5 for r in suite)
    functions = [_function_names(r) for r in suite]
    for i, names in enumerate(functions):
        assert len(names) >= 4
        for other in functions[i + 1 :]:
            assert names.isdisjoint(other)
    for repo in suite:
        for path, text in _python_files(repo, "HEAD").items():
            ast.parse(text, filename=path)  # valid Python at HEAD
        source = _python_files(repo, "HEAD")
        assert any('"""' in text for text in source.values())  # docstrings
        assert any("class " in text for path, text in source.items() if "tests/" not in path)


def test_renames_are_in_the_manifest_and_followed_by_code_and_tests(
    suite: list[SyntheticRepo],
) -> None:
    for repo in suite:
        renames = repo.changes("rename")
        assert renames, f"{repo.name} has no rename"
        assert load_repo(repo.manifest_path) == repo
        for commit, change in renames:
            assert change.old_name and change.new_name
            old = change.old_name.split(".")[-1]
            new = change.new_name.split(".")[-1]
            before = _python_files(repo, f"{commit.sha}~1")
            after = _python_files(repo, commit.sha)
            test_after = "\n".join(t for p, t in after.items() if p.startswith("tests/"))
            source_after = "\n".join(t for p, t in after.items() if not p.startswith("tests/"))
            assert any(f"{old}" in text for text in before.values())
            # a later commit of the same change may reuse nothing: the old name is gone
            assert all(old not in text for text in after.values()), (repo.name, change)
            assert new in source_after and new in test_after
            assert change.describe() in commit.message


def test_constant_changes_update_source_and_expected_values(suite: list[SyntheticRepo]) -> None:
    changes = [(r, c, ch) for r in suite for c, ch in r.changes("change_constant")]
    assert changes
    for repo, commit, change in changes:
        assert change.new_name is not None
        before = _constants(repo, f"{commit.sha}~1")
        after = _constants(repo, commit.sha)
        assert before[change.new_name] == change.old_value
        assert after[change.new_name] == change.new_value != change.old_value
        tests = [t for p, t in _python_files(repo, commit.sha).items() if p.startswith("tests/")]
        literal = ast.unparse(ast.Constant(change.new_value))
        assert any(f"{change.new_name} == {literal}".replace("'", '"') in t for t in tests), change


def _run_generated_tests(
    repo: SyntheticRepo, sha: str, workdir: Path
) -> subprocess.CompletedProcess[str]:
    archive = subprocess.run(
        ["git", "archive", "--format=tar", sha], cwd=repo.path, capture_output=True, check=True
    )
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(workdir, filter="data")
    # Only what the generated project needs: the plugins installed here would slow it down.
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    env.pop("PYTEST_ADDOPTS", None)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_generated_tests_pass_under_pytest(suite: list[SyntheticRepo], tmp_path: Path) -> None:
    repo = suite[0]
    commit, _ = repo.changes("rename")[0]
    for sha in (repo.commits[0].sha, commit.sha):
        result = _run_generated_tests(repo, sha, tmp_path / sha)
        assert result.returncode == 0, result.stdout + result.stderr
        assert " passed" in result.stdout and "failed" not in result.stdout


def test_mined_targets_include_repository_specific_constants(suite: list[SyntheticRepo]) -> None:
    for repo in suite:
        tasks = mine(repo.path).tasks
        targets = {t.target for t in tasks}
        for name, value in _constants(repo, "HEAD").items():
            literal = ast.unparse(ast.Constant(value)).replace("'", '"')
            assert literal in targets, (repo.name, name, literal)
            held = [t for t in tasks if t.test_qualname == f"test_{name.lower()}_value"]
            assert [t.target for t in held] == [literal]
            assert held[0].prefix.endswith(f"{name} == ")
        kinds = {t.target_kind for t in tasks}
        assert {"literal", "identifier"} <= kinds or {"literal", "attribute"} <= kinds


def test_added_tasks_after_a_rename_name_the_new_api(suite: list[SyntheticRepo]) -> None:
    followed = 0
    for repo in suite:
        for commit, change in repo.changes("rename"):
            assert change.old_name is not None and change.new_name is not None
            new = change.new_name.split(".")[-1]
            added = mine_added(repo.path, commit.sha).tasks
            assert added, (repo.name, change)
            if change.symbol in ("function", "class"):
                assert any(new in t.target for t in added), (repo.name, change)
                followed += 1
            assert all(change.old_name.split(".")[-1] not in t.prefix for t in added)
    assert followed >= 1


def test_generating_into_a_non_empty_directory_is_refused(tmp_path: Path) -> None:
    generate_suite(tmp_path, n_repos=1, n_commits=1, seed=1)
    with pytest.raises(UserError, match="not empty"):
        generate_suite(tmp_path, n_repos=1, n_commits=1, seed=1)
    with pytest.raises(UserError, match="at least 1"):
        generate_suite(tmp_path / "x", n_repos=0, n_commits=3, seed=1)
