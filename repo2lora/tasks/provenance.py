"""Where a training repository came from, as a manifest records it: its owner/name and URL
(from a pool list, its `origin` remote, or a `fetch` mirror path `.../owner+name/repo`), the
commit, and the sha256 of every `.py` file's text there (what the benchmark's contamination
check compares test repositories with)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import git

_URL = re.compile(r"^(https?|ssh|git)://|^git@")


@dataclass(frozen=True)
class Provenance:
    """A repository's name (owner/name where known), URL (None where unknown) and commit."""

    name: str
    url: str | None
    commit: str


def network_url(url: str) -> str | None:
    """`url` when it is a network URL (https, ssh, git@host:...), None for a local path."""
    return url if _URL.match(url) else None


def remote_url(repo: git.Repo) -> str | None:
    """The `origin` (else first) remote's URL when it is a network URL, not a local path."""
    remotes = sorted(repo.remotes, key=lambda r: r.name != "origin")
    for remote in remotes:
        for url in remote.urls:
            if network_url(url):
                return url
    return None


def mirror_owner_name(path: Path) -> str | None:
    """owner/name from a `fetch` mirror path (`.../owner+name/repo`), or None."""
    for part in reversed(path.resolve().parts):
        owner, plus, name = part.partition("+")
        if plus and owner and name:
            return f"{owner}/{name}"
    return None


def owner_name_of_url(url: str) -> str | None:
    """ "owner/name" from a GitHub-style URL (https or ssh), or None."""
    parts = [p for p in re.split(r"[/:]", url.strip().rstrip("/").removesuffix(".git")) if p]
    return "/".join(parts[-2:]) if len(parts) >= 3 else None


def python_file_hashes(commit: git.Commit, min_lines: int = 0) -> dict[str, str]:
    """sha256 of each `.py` file's UTF-8 text at `commit` -> its path (the first path with it);
    files that are not UTF-8, or have fewer than `min_lines` non-blank lines, are left out."""
    out: dict[str, str] = {}
    for item in commit.tree.traverse():
        if isinstance(item, git.Blob) and str(item.path).endswith(".py"):
            try:
                text = item.data_stream.read().decode("utf-8")
            except UnicodeDecodeError:
                continue
            if min_lines and sum(1 for ln in text.splitlines() if ln.strip()) < min_lines:
                continue
            out.setdefault(hashlib.sha256(text.encode()).hexdigest(), str(item.path))
    return out


def training_repository(prov: Provenance, commit: git.Commit) -> dict[str, Any]:
    """One `training_repositories` entry of a card or manifest: name, URL, commit and the
    sorted file hashes."""
    entry: dict[str, Any] = {"name": prov.name, "commit": prov.commit}
    if prov.url:
        entry["url"] = prov.url
    entry["file_sha256"] = sorted(python_file_hashes(commit))
    return entry
