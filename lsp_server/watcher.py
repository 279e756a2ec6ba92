"""Watches a repository with watchdog and says when its adapter may be stale: HEAD, a ref or
packed-refs changed (a commit, a branch switch, a pull), or a Python file was saved."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

ChangeKind = Literal["git", "source"]
_EVENT_TYPES = {"created", "modified", "deleted", "moved", "closed"}
_SKIPPED_DIRS = {"__pycache__", "node_modules", "site-packages"}


def classify_change(root: Path, git_dirs: Sequence[Path], path: str) -> ChangeKind | None:
    """What a changed path means for the adapter: "git" for HEAD, refs and packed-refs of one
    of `git_dirs`, "source" for a Python file of the work tree, None for anything else (git's
    objects, logs, index and lock files; the `.repo2lora` state; hidden and cache folders)."""
    p = Path(path)
    for git_dir in git_dirs:
        if p.is_relative_to(git_dir):
            rel = p.relative_to(git_dir).parts
            if not rel or rel[-1].endswith(".lock"):
                return None
            if rel in (("HEAD",), ("packed-refs",)) or rel[0] == "refs":
                return "git"
            return None
    if not p.is_relative_to(root) or p.suffix != ".py":
        return None
    parts = p.relative_to(root).parts
    if any(part.startswith(".") or part in _SKIPPED_DIRS for part in parts[:-1]):
        return None
    return "source"


class _Handler(FileSystemEventHandler):
    def __init__(
        self, root: Path, git_dirs: Sequence[Path], on_change: Callable[[ChangeKind, str], None]
    ) -> None:
        self.root = root
        self.git_dirs = git_dirs
        self.on_change = on_change

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in _EVENT_TYPES or event.is_directory:
            return
        for raw in (event.src_path, event.dest_path):
            if not raw:
                continue
            path = os.fsdecode(raw)
            kind = classify_change(self.root, self.git_dirs, path)
            if kind is not None:
                self.on_change(kind, path)
                return


class RepositoryWatcher:
    """A watchdog observer over the work tree (recursive) and the git directories that are not
    inside it (linked work trees keep HEAD and refs elsewhere)."""

    def __init__(
        self,
        root: Path,
        git_dirs: Sequence[Path],
        on_change: Callable[[ChangeKind, str], None],
    ) -> None:
        self.root = root
        self.git_dirs = list(dict.fromkeys(git_dirs))
        self._observer = Observer()
        self._observer.daemon = True
        handler = _Handler(root, self.git_dirs, on_change)
        self._observer.schedule(handler, str(root), recursive=True)
        for git_dir in self.git_dirs:
            if not git_dir.is_relative_to(root):
                self._observer.schedule(handler, str(git_dir), recursive=True)

    def start(self) -> None:
        self._observer.start()

    def stop(self) -> None:
        self._observer.stop()
        if self._observer.is_alive():
            self._observer.join(timeout=2)
