"""The server's one rule for files: it reads only inside the workspace. A document URI is mapped
to a path whose real location (every symlink resolved) must lie under a workspace folder;
anything else is refused before it is opened."""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote, urlparse

from repo_encoder.errors import UserError

MAX_FILE_BYTES = 1 << 20


class OutsideWorkspace(UserError):
    """A document that is not (or resolves to somewhere not) inside the workspace."""


class UnknownDocument(UserError):
    """A document that is neither open in the editor nor a readable file in the workspace."""


def uri_path(uri: str) -> Path | None:
    """The local path of a `file:` URI (None for other schemes such as `untitled:`)."""
    parsed = urlparse(uri)
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        return None
    return Path(unquote(parsed.path))


def inside_workspace(roots: Sequence[Path], uri: str) -> Path:
    """The real path of `uri`, checked to lie under one of `roots` (already resolved)."""
    path = uri_path(uri)
    if path is None:
        raise OutsideWorkspace(f"{uri} is not a local file; repo2lora reads workspace files only")
    real = Path(os.path.realpath(path))
    if not any(real == root or real.is_relative_to(root) for root in roots):
        where = ", ".join(str(r) for r in roots) or "no workspace folder is open"
        raise OutsideWorkspace(
            f"{path} resolves outside the workspace ({where}); repo2lora does not read it"
        )
    return real


def read_workspace_file(roots: Sequence[Path], uri: str) -> str:
    """The UTF-8 text of a workspace file the editor has not opened."""
    real = inside_workspace(roots, uri)
    try:
        # O_NOFOLLOW: a symlink put in place after the check above is refused, not followed
        fd = os.open(real, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        raise UnknownDocument(
            f"{uri} is not open and not a readable file; open it first (textDocument/didOpen)"
        ) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnknownDocument(f"{uri} is not a regular file")
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise UnknownDocument(f"{uri} is larger than {MAX_FILE_BYTES} bytes; open it first")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UnknownDocument(f"{uri} is not UTF-8 text") from None
