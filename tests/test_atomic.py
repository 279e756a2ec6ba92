"""Atomic writes: a finished write replaces what was there; a write that fails part way leaves
the previous directory or file exactly as it was, and no temporary sibling behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from repo2lora.atomic import atomic_directory, write_text_atomic


def test_a_directory_write_replaces_the_old_one_whole(tmp_path: Path) -> None:
    target = tmp_path / "adapter"
    with atomic_directory(target) as d:
        (d / "a.txt").write_text("one")
        (d / "old-only.txt").write_text("x")
    with atomic_directory(target) as d:
        assert not (target / "b.txt").exists()  # nothing shows before the block ends
        (d / "a.txt").write_text("two")
        (d / "b.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["a.txt", "b.txt"]
    assert (target / "a.txt").read_text() == "two"
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]


def test_a_failed_directory_write_leaves_the_previous_one(tmp_path: Path) -> None:
    target = tmp_path / "adapter"
    with atomic_directory(target) as d:
        (d / "a.txt").write_text("kept")
    with pytest.raises(OSError, match="disk full"), atomic_directory(target) as d:
        (d / "a.txt").write_text("half")
        raise OSError("disk full")
    assert (target / "a.txt").read_text() == "kept"
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]


def test_a_failed_first_write_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt), atomic_directory(tmp_path / "new" / "dir") as d:
        (d / "a.txt").write_text("half")
        raise KeyboardInterrupt
    assert list((tmp_path / "new").iterdir()) == []


def test_a_text_file_is_replaced_whole(tmp_path: Path) -> None:
    path = tmp_path / "out" / "bench.json"
    write_text_atomic(path, "{}\n")
    write_text_atomic(path, '{"a": 1}\n')
    assert path.read_text() == '{"a": 1}\n'
    assert [p.name for p in path.parent.iterdir()] == ["bench.json"]
