"""The per-repository SQLite store (`<repo>/.repo2lora/state.db`): schema in one place, WAL
mode, a schema version checked on open, and small verbs whose writes are each one transaction.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sqlite_utils

from evo_state.state_dir import (
    DB_NAME,
    ensure_state_dir,
    translate_sqlite_error,
    write_error,
)
from repo_encoder.chunk import Chunk
from repo_encoder.errors import UserError

# 2: chunks list their definitions; `names` holds each step's NameIndex (a version-1 database is
# migrated on open: the column and the table are added, old rows keep no definitions)
SCHEMA_VERSION = 2
# Both the CLI and the language server write; a writer waits this long for the other's short
# transaction instead of failing with "database is locked".
BUSY_TIMEOUT_MS = 30_000
_IN_CHUNK = 500  # SQLite's variable limit is far higher; this keeps statements small


@dataclass(frozen=True)
class StateRecord:
    """One stored state: the encoded repository at a commit for one (model, hypernet)."""

    commit: str
    hypernet_key: str
    kind: str
    model_key: str
    vector: np.ndarray  # [state_dim] float32
    created_at: float
    stats: dict[str, object]


@dataclass(frozen=True)
class AdapterRecord:
    commit: str
    hypernet_key: str
    kind: str
    path: str
    created_at: float


class Store:
    """Verbs over one state database. Every write method is one transaction."""

    def __init__(self, db: sqlite_utils.Database, where: Path) -> None:
        self.db = db
        self.where = where

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic step: everything inside commits together or not at all.

        `BEGIN IMMEDIATE` takes the write lock up front, so a second writer (the CLI while the
        language server writes) waits out the busy timeout instead of failing at the upgrade
        from a read lock."""
        conn = self.db.conn
        try:
            if conn.in_transaction:
                with self.db.atomic():  # nested: a savepoint inside the outer step
                    yield
                return
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise translate_sqlite_error(self.where, exc) from None
        except OSError as exc:
            raise write_error(self.where, exc) from None

    # -- vectors ---------------------------------------------------------------------------

    def get_vectors(self, model_key: str, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        """Cached chunk vectors for `model_key`, by content hash (missing hashes are absent)."""
        out: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(hashes))
        for i in range(0, len(unique), _IN_CHUNK):
            part = unique[i : i + _IN_CHUNK]
            marks = ",".join("?" * len(part))
            rows = self.db.execute(
                f"select hash, data from vectors where model_key = ? and hash in ({marks})",
                [model_key, *part],
            ).fetchall()
            for h, data in rows:
                out[h] = np.frombuffer(data, dtype=np.float32)
        return out

    def put_vectors(self, model_key: str, vectors: dict[str, np.ndarray]) -> None:
        rows = (
            {
                "model_key": model_key,
                "hash": h,
                "dim": int(v.shape[0]),
                "data": np.ascontiguousarray(v, dtype=np.float32).tobytes(),
            }
            for h, v in vectors.items()
        )
        with self.transaction():
            self.db.table("vectors").insert_all(rows, replace=True, batch_size=500)

    def record_state(
        self,
        *,
        commit: str,
        parents: Sequence[str],
        authored_at: int,
        summary: str,
        chunks: Iterable[Chunk] | None,
        hypernet_key: str,
        kind: str,
        model_key: str,
        vector: np.ndarray,
        stats: dict[str, object],
        adapter_path: str | None,
        names: bytes | None = None,
    ) -> None:
        """Store one step (commit row, its chunk list, the state, its adapter and the names the
        commit defines, `NameIndex.to_bytes`) atomically."""
        now = time.time()
        with self.transaction():
            self.db.table("commits").insert(
                {
                    "sha": commit,
                    "parents": json.dumps(list(parents)),
                    "authored_at": authored_at,
                    "summary": summary,
                },
                replace=True,
            )
            if chunks is not None and not self.has_chunks(commit):
                self.db.table("chunks").insert_all(
                    (
                        {
                            "commit_sha": commit,
                            "path": c.path,
                            "qualname": c.qualname,
                            "kind": c.kind,
                            "start_line": c.start_line,
                            "end_line": c.end_line,
                            "part": c.part,
                            "hash": c.content_hash,
                            "definitions": json.dumps(c.definitions) if c.definitions else None,
                        }
                        for c in chunks
                    ),
                    batch_size=1000,
                )
            self.db.table("states").insert(
                {
                    "commit_sha": commit,
                    "hypernet_key": hypernet_key,
                    "kind": kind,
                    "model_key": model_key,
                    "dim": int(vector.shape[0]),
                    "data": np.ascontiguousarray(vector, dtype=np.float32).tobytes(),
                    "created_at": now,
                    "stats": json.dumps(stats, sort_keys=True),
                },
                replace=True,
            )
            if adapter_path is not None:
                self.db.table("adapters").insert(
                    {
                        "commit_sha": commit,
                        "hypernet_key": hypernet_key,
                        "kind": kind,
                        "path": adapter_path,
                        "created_at": now,
                    },
                    replace=True,
                )
            if names is not None:
                self.db.table("names").insert({"commit_sha": commit, "data": names}, replace=True)

    def put_pool_sums(self, commit: str, hypernet_key: str, data: bytes) -> None:
        """Store a commit's running pooling sums (`hypernet.pool_sums`) for one network."""
        with self.transaction():
            self.db.table("pool_sums").insert(
                {"commit_sha": commit, "hypernet_key": hypernet_key, "data": data}, replace=True
            )

    def get_pool_sums(self, commit: str, hypernet_key: str) -> bytes | None:
        row = self.db.execute(
            "select data from pool_sums where commit_sha = ? and hypernet_key = ?",
            [commit, hypernet_key],
        ).fetchone()
        return bytes(row[0]) if row else None

    def pool_sums_among(self, commits: Sequence[str], hypernet_key: str) -> set[str]:
        """Which of `commits` have stored pooling sums for `hypernet_key`."""
        found: set[str] = set()
        for i in range(0, len(commits), _IN_CHUNK):
            part = list(commits[i : i + _IN_CHUNK])
            marks = ",".join("?" * len(part))
            rows = self.db.execute(
                f"select commit_sha from pool_sums where hypernet_key = ? "
                f"and commit_sha in ({marks})",
                [hypernet_key, *part],
            ).fetchall()
            found.update(r[0] for r in rows)
        return found

    def get_names(self, commit: str) -> bytes | None:
        """The stored `NameIndex` bytes of `commit`, if a step stored them."""
        row = self.db.execute("select data from names where commit_sha = ?", [commit]).fetchone()
        return bytes(row[0]) if row else None

    def chunk_definitions(self, commit: str) -> list[tuple[str, list[list[str]]]]:
        """(path, definitions) of every stored chunk of `commit` that defines something."""
        rows = self.db.execute(
            "select path, definitions from chunks where commit_sha = ? and definitions is not "
            "null order by path, start_line, part",
            [commit],
        ).fetchall()
        return [(r[0], json.loads(r[1])) for r in rows]

    def states_among(self, commits: Sequence[str], hypernet_key: str, kind: str) -> set[str]:
        """Which of `commits` have a stored state for (hypernet_key, kind)."""
        found: set[str] = set()
        for i in range(0, len(commits), _IN_CHUNK):
            part = list(commits[i : i + _IN_CHUNK])
            marks = ",".join("?" * len(part))
            rows = self.db.execute(
                f"select commit_sha from states where hypernet_key = ? and kind = ? "
                f"and commit_sha in ({marks})",
                [hypernet_key, kind, *part],
            ).fetchall()
            found.update(r[0] for r in rows)
        return found

    def set_adapter(self, commit: str, hypernet_key: str, kind: str, path: str) -> None:
        with self.transaction():
            self.db.table("adapters").insert(
                {
                    "commit_sha": commit,
                    "hypernet_key": hypernet_key,
                    "kind": kind,
                    "path": path,
                    "created_at": time.time(),
                },
                replace=True,
            )

    def newest_hypernet(self, kind: str) -> str | None:
        """The hypernetwork key of the most recently stored state of `kind` (None: none)."""
        newest = self.newest_state_of((kind,))
        return newest[0] if newest else None

    def newest_state_of(self, kinds: tuple[str, ...]) -> tuple[str, str] | None:
        """(hypernetwork key, kind) of the most recently stored state of one of `kinds`."""
        marks = ", ".join("?" for _ in kinds)
        row = self.db.execute(
            f"select hypernet_key, kind from states where kind in ({marks}) "
            "order by created_at desc, rowid desc limit 1",
            list(kinds),
        ).fetchone()
        return (str(row[0]), str(row[1])) if row else None

    def evo_log(
        self, kind: str, limit: int, hypernet_key: str | None = None
    ) -> list[dict[str, Any]]:
        """States of `kind` (of one hypernetwork, or of all when None) with their commit and
        adapter, newest first."""
        rows = self.db.execute(
            "select s.commit_sha, c.authored_at, c.summary, s.stats, a.path, s.hypernet_key "
            "from states s join commits c on c.sha = s.commit_sha "
            "left join adapters a on a.commit_sha = s.commit_sha "
            "and a.hypernet_key = s.hypernet_key and a.kind = s.kind "
            "where s.kind = ? and (? is null or s.hypernet_key = ?) "
            "order by s.created_at desc, s.rowid desc limit ?",
            [kind, hypernet_key, hypernet_key, limit],
        ).fetchall()
        return [
            {
                "commit_sha": r[0],
                "authored_at": r[1],
                "summary": r[2],
                "stats": json.loads(r[3]),
                "adapter": r[4],
                "hypernet_key": r[5],
            }
            for r in rows
        ]

    def has_chunks(self, commit: str) -> bool:
        return (
            self.db.execute(
                "select 1 from chunks where commit_sha = ? limit 1", [commit]
            ).fetchone()
            is not None
        )

    def get_state(self, commit: str, hypernet_key: str, kind: str) -> StateRecord | None:
        row = self.db.execute(
            "select commit_sha, hypernet_key, kind, model_key, data, created_at, stats "
            "from states where commit_sha = ? and hypernet_key = ? and kind = ?",
            [commit, hypernet_key, kind],
        ).fetchone()
        if row is None:
            return None
        return StateRecord(
            commit=row[0],
            hypernet_key=row[1],
            kind=row[2],
            model_key=row[3],
            vector=np.frombuffer(row[4], dtype=np.float32).copy(),
            created_at=row[5],
            stats=json.loads(row[6]),
        )

    def get_adapter(self, commit: str, hypernet_key: str, kind: str) -> AdapterRecord | None:
        row = self.db.execute(
            "select commit_sha, hypernet_key, kind, path, created_at from adapters "
            "where commit_sha = ? and hypernet_key = ? and kind = ?",
            [commit, hypernet_key, kind],
        ).fetchone()
        return AdapterRecord(*row) if row else None

    def latest_adapter(self) -> AdapterRecord | None:
        row = self.db.execute(
            "select commit_sha, hypernet_key, kind, path, created_at from adapters "
            "order by created_at desc limit 1"
        ).fetchone()
        return AdapterRecord(*row) if row else None

    def count(self, table: str) -> int:
        return self.db[table].count


def _create_schema(db: sqlite_utils.Database) -> None:
    db.table("meta").create({"key": str, "value": str}, pk="key", if_not_exists=True)
    db.table("commits").create(
        {"sha": str, "parents": str, "authored_at": int, "summary": str},
        pk="sha",
        if_not_exists=True,
    )
    db.table("chunks").create(
        {
            "commit_sha": str,
            "path": str,
            "qualname": str,
            "kind": str,
            "start_line": int,
            "end_line": int,
            "part": int,
            "hash": str,
            "definitions": str,  # JSON [[name, kind], ...]; null when it defines nothing
        },
        pk=("commit_sha", "path", "start_line", "part"),
        if_not_exists=True,
    )
    if "definitions" not in db.table("chunks").columns_dict:  # a version-1 table
        db.table("chunks").add_column("definitions", str)
    db.table("vectors").create(
        {"model_key": str, "hash": str, "dim": int, "data": bytes},
        pk=("model_key", "hash"),
        if_not_exists=True,
    )
    db.table("states").create(
        {
            "commit_sha": str,
            "hypernet_key": str,
            "kind": str,
            "model_key": str,
            "dim": int,
            "data": bytes,
            "created_at": float,
            "stats": str,
        },
        pk=("commit_sha", "hypernet_key", "kind"),
        if_not_exists=True,
    )
    db.table("adapters").create(
        {"commit_sha": str, "hypernet_key": str, "kind": str, "path": str, "created_at": float},
        pk=("commit_sha", "hypernet_key", "kind"),
        if_not_exists=True,
    )
    db.table("names").create(
        {"commit_sha": str, "data": bytes}, pk="commit_sha", if_not_exists=True
    )
    _create_pool_sums(db)
    db.table("meta").insert({"key": "schema_version", "value": str(SCHEMA_VERSION)}, replace=True)


def _create_pool_sums(db: sqlite_utils.Database) -> None:
    # an additive table (older readers never look at it), so it needs no schema version: it is
    # created wherever it is missing
    db.table("pool_sums").create(
        {"commit_sha": str, "hypernet_key": str, "data": bytes},
        pk=("commit_sha", "hypernet_key"),
        if_not_exists=True,
    )


def open_store(work_tree: str | os.PathLike[str]) -> Store:
    """Open (creating if needed) the store of the repository whose work tree is `work_tree`.

    Raises StateWriteError when the state directory cannot be written and UserError when the
    database was written by a newer schema."""
    where = ensure_state_dir(work_tree)
    path = where / DB_NAME
    conn: sqlite3.Connection | None = None
    try:
        conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
        conn.execute(f"pragma busy_timeout = {BUSY_TIMEOUT_MS}")
        db = sqlite_utils.Database(conn, execute_plugins=False)
        if db.execute("pragma journal_mode").fetchone()[0] != "wal":
            db.execute("pragma journal_mode = wal")
        db.execute("pragma synchronous = normal")
        db.execute("pragma foreign_keys = on")
        if db.execute("pragma quick_check").fetchone()[0] != "ok":
            raise sqlite3.DatabaseError("database disk image is malformed (quick_check)")
        version = None
        if "meta" in db.table_names():
            row = db.execute("select value from meta where key = 'schema_version'").fetchone()
            version = int(row[0]) if row else None
        if version is not None and version > SCHEMA_VERSION:
            db.close()
            raise UserError(
                f"{path} was written by a newer repo2lora (schema {version} > {SCHEMA_VERSION}); "
                "upgrade repo2lora, or move .repo2lora aside to start over"
            )
        if version != SCHEMA_VERSION:
            with db.atomic():
                _create_schema(db)
        elif "pool_sums" not in db.table_names():
            with db.atomic():
                _create_pool_sums(db)
    except sqlite3.Error as exc:
        if conn is not None:
            conn.close()
        raise translate_sqlite_error(where, exc) from None
    except OSError as exc:
        raise write_error(where, exc) from None
    return Store(db, where)
