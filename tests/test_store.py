"""The SQLite store: WAL, schema version check, vector cache, one transaction per step."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from evo_state.store import SCHEMA_VERSION, open_store
from repo_encoder.chunk import Chunk, content_hash
from repo_encoder.errors import UserError


def _chunk(i: int) -> Chunk:
    text = f"def f{i}():\n    return {i}\n"
    return Chunk("m.py", f"f{i}", "function", 3 * i, 3 * i + 1, text, content_hash(text))


def _record(store, commit: str, fail_after_state: bool = False) -> None:
    store.record_state(
        commit=commit,
        parents=[],
        authored_at=0,
        summary="s",
        chunks=[_chunk(1), _chunk(2)],
        hypernet_key="hk",
        kind="static",
        model_key="mk",
        vector=np.arange(4, dtype=np.float32),
        stats={"files": 1},
        adapter_path="/x",
    )


def test_wal_and_gitignore(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        assert store.db.execute("pragma journal_mode").fetchone()[0] == "wal"
    assert (tmp_path / ".repo2lora" / ".gitignore").read_text().strip().endswith("*")


def test_vectors_roundtrip_by_model_key(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        v = {"a": np.ones(3, np.float32), "b": np.arange(3, dtype=np.float32)}
        store.put_vectors("m1", v)
        got = store.get_vectors("m1", ["a", "b", "c"])
        assert set(got) == {"a", "b"}
        np.testing.assert_array_equal(got["b"], v["b"])
        assert store.get_vectors("m2", ["a"]) == {}


def test_state_step_is_atomic(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        _record(store, "c1")
        before = {t: store.count(t) for t in ("commits", "chunks", "states", "adapters")}
        # a failure inside the step (here: a constraint broken by the last insert) rolls back
        # every row of that step, not just the last one
        store.db.execute(
            "create trigger boom before insert on adapters "
            "when new.commit_sha = 'c2' begin select raise(abort, 'boom'); end"
        )
        with pytest.raises(sqlite3.IntegrityError):
            _record(store, "c2")
        after = {t: store.count(t) for t in ("commits", "chunks", "states", "adapters")}
        assert after == before
        assert store.get_state("c2", "hk", "static") is None
        st = store.get_state("c1", "hk", "static")
        assert st is not None and st.vector.tolist() == [0, 1, 2, 3]


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        store.db.execute(
            "update meta set value = ? where key = 'schema_version'", [str(SCHEMA_VERSION + 1)]
        )
        store.db.conn.commit()
    with pytest.raises(UserError, match="newer repo2lora"):
        open_store(tmp_path)


def test_state_dir_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / ".repo2lora").write_text("not a dir")
    with pytest.raises(UserError, match="not a directory"):
        open_store(tmp_path)
