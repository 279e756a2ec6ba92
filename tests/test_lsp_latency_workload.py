"""The latency benchmark's workload: the served repository holds this project's own source
packages in one commit, and the cursors fall in them (the benchmark is not run by the tests;
this keeps its set-up from rotting when files move)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from benchmark.lsp_latency.workload import SOURCE_PACKAGES, cursors, make_repository


def test_the_workload_repository_holds_the_project_sources(tmp_path: Path) -> None:
    root = make_repository(tmp_path / "repo")
    for pkg in SOURCE_PACKAGES:
        assert (root / pkg / "__init__.py").is_file()
    log = subprocess.run(
        ["git", "-C", str(root), "log", "--oneline"], capture_output=True, text=True, check=True
    )
    assert len(log.stdout.splitlines()) == 1
    found = cursors(root, 5)
    assert len(found) == 5 and all(path.is_relative_to(root) for path, _ in found)
