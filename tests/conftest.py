from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from repo2lora.tasks.synthetic import generate_suite
from tests.gitrepo import SAMPLE_V1, SAMPLE_V2, GitRepo


@pytest.fixture
def sample_repo(tmp_path: Path) -> GitRepo:
    """A two-commit Python repository: v1 (package + tests), v2 adds a module."""
    repo = GitRepo(tmp_path / "sample")
    repo.commit(SAMPLE_V1, "v1")
    repo.commit(SAMPLE_V2, "v2")
    return repo


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Four synthetic repositories of five commits (seed 3): what the generators train on."""
    root = tmp_path_factory.mktemp("suite")
    return [r.path for r in generate_suite(root, 4, 5, seed=3)]


@pytest.fixture(scope="session", autouse=True)
def one_thread() -> Iterator[None]:
    """The tiny model's ops are too small to gain from threads, and on shared CI cores a
    second thread mostly waits (spinning, on a busy machine): one is several times faster, so
    every test in this process runs with one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
