"""Walks git history: first-parent ancestor chains, and the files a commit changed relative to
its parent (with git's rename detection), read from git objects."""

from __future__ import annotations

from dataclasses import dataclass

import git

EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"


@dataclass(frozen=True)
class FileChange:
    """One changed path. `old_*` is None for an added file, `new_*` for a deleted one; a
    rename has both paths."""

    status: str  # A, M, D, R, C, T
    old_path: str | None
    new_path: str | None
    old_blob: str | None
    new_blob: str | None
    old_mode: int
    new_mode: int


def ancestors(repo: git.Repo, commit: str, limit: int, first_parent: bool = True) -> list[str]:
    """`commit` and up to `limit` of its ancestors, nearest first (first-parent chain by
    default, else every ancestor in git's topological order)."""
    args = ["--topo-order", f"--max-count={limit + 1}", commit]
    if first_parent:
        args.insert(0, "--first-parent")
    out = repo.git.rev_list(*args)
    return out.split() if out else []


def changed_files(repo: git.Repo, parent: str | None, commit: str) -> list[FileChange]:
    """Files that differ between `parent` (None: the empty tree) and `commit`, renames
    detected by git (`-M`)."""
    out = repo.git.diff_tree(
        "-r", "-M", "-z", "--no-commit-id", "--raw", parent or EMPTY_TREE, commit
    )
    fields = out.split("\0")
    changes = []
    i = 0
    while i < len(fields) - 1:
        meta = fields[i]
        if not meta.startswith(":"):
            i += 1
            continue
        old_mode, new_mode, old_sha, new_sha, status = meta[1:].split(" ")
        kind = status[0]
        if kind in "RC":
            old_path, new_path = fields[i + 1], fields[i + 2]
            i += 3
        else:
            old_path = new_path = fields[i + 1]
            i += 2
        null = "0" * 40
        changes.append(
            FileChange(
                status=kind,
                old_path=None if kind == "A" else old_path,
                new_path=None if kind == "D" else new_path,
                old_blob=None if old_sha == null else old_sha,
                new_blob=None if new_sha == null else new_sha,
                old_mode=int(old_mode, 8),
                new_mode=int(new_mode, 8),
            )
        )
    return changes


def read_blob(repo: git.Repo, sha: str) -> bytes:
    return bytes(repo.odb.stream(bytes.fromhex(sha)).read())
