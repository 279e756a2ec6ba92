from __future__ import annotations

from pathlib import Path

import pytest

from tests.gitrepo import SAMPLE_V1, SAMPLE_V2, GitRepo


@pytest.fixture
def sample_repo(tmp_path: Path) -> GitRepo:
    """A two-commit Python repository: v1 (package + tests), v2 adds a module."""
    repo = GitRepo(tmp_path / "sample")
    repo.commit(SAMPLE_V1, "v1")
    repo.commit(SAMPLE_V2, "v2")
    return repo
