"""Chunk-level diffs: which chunks a commit (or the uncommitted work tree) added, removed and
modified, computed from the changed files only, so the cost follows the diff, not the
repository."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from pathlib import Path

import git

from evo_state.history import FileChange, changed_files, read_blob
from repo_encoder.chunk import Chunk
from repo_encoder.chunker import ChunkerConfig, chunk_source
from repo_encoder.exclusion import ExclusionConfig, encoder_sees
from repo_encoder.snapshot import SUBMODULE_MODE, SYMLINK_MODE


@dataclass
class ChunkDiff:
    """Chunks added and removed, and (old, new) pairs of chunks whose content changed.
    A chunk is identified within its file by (qualname, kind, part, occurrence); a renamed
    file's chunks are matched against the old path's."""

    added: list[Chunk] = field(default_factory=list)
    removed: list[Chunk] = field(default_factory=list)
    modified: list[tuple[Chunk, Chunk]] = field(default_factory=list)
    files: int = 0  # encoder-visible files that changed

    @property
    def brought_in(self) -> list[Chunk]:
        """Added chunks and the new side of modified ones."""
        return self.added + [new for _, new in self.modified]

    @property
    def taken_out(self) -> list[Chunk]:
        """Removed chunks and the old side of modified ones."""
        return self.removed + [old for old, _ in self.modified]

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.modified)

    def summary(self) -> dict[str, int]:
        return {
            "added": len(self.added),
            "removed": len(self.removed),
            "modified": len(self.modified),
            "files": self.files,
        }

    def extend(self, other: ChunkDiff) -> None:
        self.added += other.added
        self.removed += other.removed
        self.modified += other.modified
        self.files += other.files


def _keyed(chunks: list[Chunk]) -> dict[tuple[str, str, int, int], Chunk]:
    seen: collections.Counter[tuple[str, str, int]] = collections.Counter()
    out: dict[tuple[str, str, int, int], Chunk] = {}
    for c in chunks:
        k = (c.qualname, c.kind, c.part)
        out[(*k, seen[k])] = c
        seen[k] += 1
    return out


def diff_chunks(old: list[Chunk], new: list[Chunk]) -> ChunkDiff:
    """The chunk diff of one file's old and new chunk lists (order follows the new file)."""
    old_k, new_k = _keyed(old), _keyed(new)
    d = ChunkDiff()
    for k, c in new_k.items():
        prev = old_k.get(k)
        if prev is None:
            d.added.append(c)
        elif prev.content_hash != c.content_hash:
            d.modified.append((prev, c))
    d.removed = [c for k, c in old_k.items() if k not in new_k]
    return d


def _visible(path: str | None, mode: int, exclusion: ExclusionConfig) -> bool:
    return (
        path is not None
        and path.endswith(".py")
        and mode not in (SYMLINK_MODE, SUBMODULE_MODE)
        and encoder_sees(path, exclusion)
    )


def _file_chunks(
    path: str | None, data: bytes | None, mode: int, exclusion: ExclusionConfig, cfg: ChunkerConfig
) -> list[Chunk]:
    if data is None or not _visible(path, mode, exclusion) or len(data) > cfg.max_file_bytes:
        return []
    assert path is not None
    return chunk_source(path, data, cfg).chunks


def diff_file_change(
    change: FileChange,
    old_data: bytes | None,
    new_data: bytes | None,
    exclusion: ExclusionConfig,
    cfg: ChunkerConfig,
) -> ChunkDiff:
    old = _file_chunks(change.old_path, old_data, change.old_mode, exclusion, cfg)
    new = _file_chunks(change.new_path, new_data, change.new_mode, exclusion, cfg)
    d = diff_chunks(old, new)
    d.files = int(bool(old or new))
    return d


def commit_chunk_diff(
    repo: git.Repo,
    parent: str | None,
    commit: str,
    exclusion: ExclusionConfig,
    cfg: ChunkerConfig,
) -> ChunkDiff:
    """The chunk diff of `commit` against `parent` (None: against nothing, i.e. a root commit)."""
    total = ChunkDiff()
    for ch in changed_files(repo, parent, commit):
        if not (
            _visible(ch.old_path, ch.old_mode, exclusion)
            or _visible(ch.new_path, ch.new_mode, exclusion)
        ):
            continue
        old = read_blob(repo, ch.old_blob) if ch.old_blob else None
        new = read_blob(repo, ch.new_blob) if ch.new_blob else None
        total.extend(diff_file_change(ch, old, new, exclusion, cfg))
    return total


def worktree_chunk_diff(
    repo: git.Repo, exclusion: ExclusionConfig, cfg: ChunkerConfig
) -> ChunkDiff:
    """The chunk diff of the uncommitted work tree against HEAD: modified and deleted tracked
    files and untracked files that are not ignored. Symlinks are never followed."""
    root = Path(str(repo.working_tree_dir))
    head = repo.head.commit
    total = ChunkDiff()
    paths = set(repo.git.diff("--name-only", "-z", "HEAD").split("\0"))
    paths |= set(repo.git.ls_files("--others", "--exclude-standard", "-z").split("\0"))
    for rel in sorted(p for p in paths if p):
        if not rel.endswith(".py") or not encoder_sees(rel, exclusion):
            continue
        try:
            blob = head.tree / rel
            old_data: bytes | None = blob.data_stream.read()
            old_mode = blob.mode
        except KeyError:
            old_data, old_mode = None, 0o100644
        f = root / rel
        new_data = None
        new_mode = 0o100644
        if f.is_symlink():
            new_mode = SYMLINK_MODE
        elif f.is_file():
            new_data = f.read_bytes()
        ch = FileChange("M", rel, rel, None, None, old_mode, new_mode)
        total.extend(diff_file_change(ch, old_data, new_data, exclusion, cfg))
    return total
