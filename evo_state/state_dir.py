"""The state directory `<repo>/.repo2lora/` (created with a `.gitignore` that ignores it all)
and what goes wrong writing it: a full or read-only disk and a damaged `state.db` each become an
error that says what to do, and a damaged database is moved aside for a rebuild."""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from repo_encoder.errors import UserError

STATE_DIR_NAME = ".repo2lora"
DB_NAME = "state.db"


class StateWriteError(UserError):
    """The state directory cannot be written (read-only, full, or not a directory)."""


class CorruptStateError(UserError):
    """state.db is not a readable SQLite database (truncated, overwritten, damaged)."""


def write_error(where: Path, exc: BaseException) -> StateWriteError:
    reason = getattr(exc, "strerror", None) or str(exc)
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        reason = "no space left"
    else:
        # SQLite reports a full disk as a generic I/O error; say what it really is
        try:
            if shutil.disk_usage(where).free < (1 << 20):
                reason = "no space left"
        except OSError:
            pass
    return StateWriteError(
        f"cannot write repo2lora state in {where} ({reason}); free space or fix its "
        "permissions and run again (the previous state is unchanged)"
    )


def translate_sqlite_error(where: Path, exc: sqlite3.Error) -> UserError:
    msg = str(exc).lower()
    # damage first: a truncated file says "database disk image is malformed", which is not a
    # full or read-only disk
    if "not a database" in msg or "malformed" in msg or "corrupt" in msg:
        return CorruptStateError(
            f"{where / DB_NAME} is damaged ({exc}); rebuild it with "
            f"`repo2lora update --rebuild {where.parent}` (the damaged file is kept aside)"
        )
    if any(s in msg for s in ("readonly", "read-only", "unable to open", "disk", "full", "i/o")):
        return write_error(where, exc)
    raise exc


@contextmanager
def state_writes(where: Path) -> Iterator[None]:
    """Turn a failed write under the state directory (full, read-only) into a StateWriteError."""
    try:
        yield
    except OSError as exc:
        raise write_error(where, exc) from None


def state_dir_for(work_tree: str | os.PathLike[str]) -> Path:
    return Path(work_tree) / STATE_DIR_NAME


def ensure_state_dir(work_tree: str | os.PathLike[str]) -> Path:
    """Create `<work tree>/.repo2lora/` with a `.gitignore` that ignores everything in it."""
    d = state_dir_for(work_tree)
    try:
        if d.exists() and not d.is_dir():
            raise StateWriteError(f"{d} exists and is not a directory; move it aside and run again")
        d.mkdir(exist_ok=True)
        gi = d / ".gitignore"
        if not gi.exists():
            gi.write_text("# repo2lora state: never committed\n*\n")
    except OSError as exc:
        raise write_error(d, exc) from None
    return d


def move_aside_damaged(work_tree: str | os.PathLike[str]) -> Path | None:
    """Rename a damaged state.db (and its WAL files) to `state.db.damaged-<time>`; the next
    `open_store` starts a fresh database. Returns the new name, or None if there was none."""
    d = state_dir_for(work_tree)
    db = d / DB_NAME
    if not db.exists():
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = d / f"{DB_NAME}.damaged-{stamp}"
    with state_writes(d):
        for suffix in ("", "-wal", "-shm"):
            src = d / f"{DB_NAME}{suffix}"
            if src.exists():
                os.replace(src, d / f"{target.name}{suffix}")
    return target
