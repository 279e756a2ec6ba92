"""Reads the Python files of one commit straight from git objects, so a snapshot of commit X
is exactly X (never the working tree), and .gitignore'd files are absent by construction."""

from __future__ import annotations

import collections
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import git
from gitdb.exc import BadName, BadObject

from repo_encoder.errors import UserError
from repo_encoder.exclusion import ExclusionConfig, encoder_sees

SYMLINK_MODE = 0o120000
SUBMODULE_MODE = 0o160000


@dataclass
class Snapshot:
    """The encoder-visible Python files of one commit and why the others were left out."""

    commit_sha: str
    files: list[tuple[str, bytes]]
    counts: collections.Counter[str] = field(default_factory=collections.Counter)


def open_repository(path: str | os.PathLike[str]) -> git.Repo:
    """Open the git repository containing `path` (a work tree, searched upwards).

    Raises UserError for a missing path, a directory outside any repository, a bare
    repository (its state needs a work tree) and a repository with no commits."""
    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"{p} does not exist; pass the path of a git repository")
    try:
        repo = git.Repo(p, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise UserError(
            f"{p.resolve()} is not inside a git repository; run `git init` and commit, "
            "or pass the path of a repository"
        ) from None
    if repo.bare or repo.working_tree_dir is None:
        raise UserError(
            f"{p.resolve()} is a bare repository; repo2lora keeps its state in a work tree, "
            "so clone it first (git clone BARE_PATH WORKDIR)"
        )
    if not repo.head.is_valid():
        raise UserError(
            f"the repository at {repo.working_tree_dir} has no commits yet; commit something first"
        )
    return repo


def resolve_commit(repo: git.Repo, rev: str) -> git.Commit:
    """The commit that `rev` names (a sha, branch, tag or expression such as HEAD~2)."""
    try:
        obj = repo.rev_parse(rev)
    except (BadName, BadObject, ValueError, IndexError, git.GitCommandError):
        raise UserError(
            f"unknown revision {rev!r}; pass a commit, branch or tag (see `git log`)"
        ) from None
    if isinstance(obj, git.TagObject):
        obj = obj.object
    if not isinstance(obj, git.Commit):
        raise UserError(f"revision {rev!r} names a {obj.type}, not a commit")
    return obj


def read_snapshot(
    repo: git.Repo,
    commit: git.Commit,
    exclusion: ExclusionConfig,
    max_file_bytes: int = 1_000_000,
) -> Snapshot:
    """The `.py` files of `commit` that the encoder may see under `exclusion`, in path order.

    Symlinks are never followed (a link could lead outside the repository) and submodules are
    not entered; both are counted. Files over `max_file_bytes` are counted, not read."""
    snap = Snapshot(commit_sha=commit.hexsha, files=[])
    counts = snap.counts
    for obj in commit.tree.traverse():
        item = cast(git.Blob, obj)  # trees are skipped below; submodules are told by mode
        if item.type == "tree":
            continue
        mode = item.mode
        path = str(item.path)
        if mode == SUBMODULE_MODE or item.type == "submodule":
            counts["skipped_submodule"] += 1
            continue
        if not path.endswith(".py"):
            counts["skipped_not_python"] += 1
            continue
        if mode == SYMLINK_MODE:
            counts["skipped_symlink"] += 1
            continue
        if not encoder_sees(path, exclusion):
            counts["skipped_test_file"] += 1
            continue
        if item.size > max_file_bytes:
            counts["skipped_too_large"] += 1
            continue
        snap.files.append((path, item.data_stream.read()))
    snap.files.sort(key=lambda f: f[0])
    counts["files_read"] = len(snap.files)
    return snap
