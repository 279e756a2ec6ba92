"""The revision of the repo2lora source a benchmark ran on: its commit, whether tracked files
had local edits and which (so a report whose only edit is the README still names a clean code
commit)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import git

_MAX_LISTED = 20


def source_revision(root: Path | None = None) -> dict[str, Any]:
    """{"sha", "dirty", "edited": the tracked paths changed against HEAD (at most 20)} of the
    checkout at `root` (default: this source's); all None outside a git checkout."""
    where = root if root is not None else Path(__file__).resolve().parent.parent
    try:
        repo = git.Repo(where, search_parent_directories=False)
        edited = [p for p in repo.git.diff("HEAD", "--name-only").splitlines() if p]
        return {
            "sha": repo.head.commit.hexsha,
            "dirty": bool(edited),
            "edited": edited[:_MAX_LISTED],
        }
    except (git.InvalidGitRepositoryError, git.NoSuchPathError, git.GitCommandError, ValueError):
        return {"sha": None, "dirty": None, "edited": None}
