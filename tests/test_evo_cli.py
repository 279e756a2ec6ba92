"""`repo2lora update` / `log` as real subprocesses: killed mid-run and resumed, racing another
writer, and facing a damaged state.db."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from repo2lora.hypernet.checkpoint import build_hypernet, default_hypernet_config, save_hypernet
from repo2lora.models import describe_base_model
from repo2lora.update import state_log, update_repository
from tests.cli import ENV, run_cli, run_json
from tests.gitrepo import GitRepo


def _many_commits(root: Path, n: int) -> GitRepo:
    repo = GitRepo(root)
    for i in range(n):
        body = "".join(
            f"def f{i}_{j}(x, y=2):\n    total = 0\n    for k in range(x):\n"
            f"        total += k * y + {i * j}\n    return total\n\n\n"
            for j in range(12)
        )
        repo.commit({f"pkg/m{i}.py": body}, f"commit {i}")
    return repo


def _states(db: Path) -> dict[str, np.ndarray]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("select commit_sha, data from states where kind = 'evo'").fetchall()
    return {sha: np.frombuffer(data, dtype=np.float32) for sha, data in rows}


def test_sigkill_mid_update_resumes_to_the_same_state(tmp_path: Path) -> None:
    repo = _many_commits(tmp_path / "killed", 30)
    first = repo.git("rev-list", "--max-parents=0", "HEAD")
    twin = tmp_path / "twin"
    subprocess.run(["git", "clone", "-q", str(repo.root), str(twin)], check=True)
    # the slower random-default model (256 wide) makes each step take long enough to kill
    cmd = [sys.executable, "-m", "repo2lora", "update", str(repo.root), "--evo", "--from", first]
    cmd.append("-q")
    db = repo.root / ".repo2lora" / "state.db"
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline:
        if db.exists():
            try:
                if len(_states(db)) >= 3:
                    break
            except sqlite3.Error:
                pass
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    partial = _states(db)
    assert 3 <= len(partial) < 30, "the kill must land mid-run"
    with sqlite3.connect(db) as conn:
        assert conn.execute("pragma integrity_check").fetchone()[0] == "ok"

    resumed = run_json("update", str(repo.root), "--evo")
    assert resumed["resumed_from"] is not None
    assert len(resumed["steps"]) == 30 - len(partial)
    whole = run_json("update", str(twin), "--evo", "--from", first)
    assert len(whole["steps"]) == 30
    a, b = _states(db), _states(twin / ".repo2lora" / "state.db")
    assert set(a) == set(b)
    for sha in a:
        np.testing.assert_allclose(a[sha], b[sha], atol=1e-6, rtol=0)


def test_second_writer_waits_instead_of_failing(sample_repo: GitRepo) -> None:
    root = sample_repo.root
    assert run_cli("update", str(root), "--model", "tiny-random").returncode == 0
    sample_repo.commit({"pkg/extra.py": "def extra():\n    return 5\n"}, "extra")
    # another process (here: this test) holds the write lock for 2 seconds
    holder = sqlite3.connect(
        root / ".repo2lora" / "state.db", isolation_level=None, check_same_thread=False
    )
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("insert or replace into meta values ('held', 'yes')")
    release = threading.Timer(2.0, lambda: holder.execute("COMMIT"))
    release.start()
    t = time.time()
    proc = run_cli("update", str(root), "--model", "tiny-random", "--json")
    release.join()
    holder.close()
    assert proc.returncode == 0, proc.stderr
    assert "locked" not in proc.stderr
    assert len(json.loads(proc.stdout)["steps"]) == 1
    assert time.time() - t >= 1.5  # it really waited for the other writer


def test_damaged_state_db_is_named_and_rebuilt(sample_repo: GitRepo) -> None:
    root = sample_repo.root
    assert run_cli("update", str(root), "--model", "tiny-random").returncode == 0
    db = root / ".repo2lora" / "state.db"
    data = db.read_bytes()
    db.write_bytes(b"this is not sqlite" + data[18:100])  # overwritten header, truncated
    for wal in ("state.db-wal", "state.db-shm"):
        (root / ".repo2lora" / wal).unlink(missing_ok=True)
    proc = run_cli("update", str(root), "--model", "tiny-random")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert str(db) in proc.stderr and "repo2lora update --rebuild" in proc.stderr
    proc = run_cli("update", str(root), "--model", "tiny-random", "--rebuild")
    assert proc.returncode == 0, proc.stderr
    assert list((root / ".repo2lora").glob("state.db.damaged-*"))
    log = run_json("log", str(root))
    assert len(log) == 1 and log[0]["source"] == "snapshot"


def test_log_lists_steps(sample_repo: GitRepo) -> None:
    root = sample_repo.root
    first = sample_repo.git("rev-list", "--max-parents=0", "HEAD")
    assert run_cli("update", str(root), "--model", "tiny-random", "--from", first).returncode == 0
    proc = run_cli("log", str(root))
    assert proc.returncode == 0
    head = sample_repo.git("rev-parse", "HEAD")[:12]
    assert head in proc.stdout and "snapshot" in proc.stdout and "diff" in proc.stdout


def test_truncated_state_db_is_damage_with_the_rebuild_command(sample_repo: GitRepo) -> None:
    """A valid header over cut-off pages ("database disk image is malformed") is damage, not
    a full or read-only disk."""
    root = sample_repo.root
    update_repository(root, model="tiny-random")
    db = root / ".repo2lora" / "state.db"
    with sqlite3.connect(db) as conn:
        conn.execute("pragma wal_checkpoint(TRUNCATE)")
    data = db.read_bytes()
    assert data.startswith(b"SQLite format 3\x00") and len(data) > 3 * 4096
    db.write_bytes(data[: len(data) // 2])
    for wal in ("state.db-wal", "state.db-shm"):
        (root / ".repo2lora" / wal).unlink(missing_ok=True)
    proc = run_cli("update", str(root), "--model", "tiny-random")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"{db} is damaged" in proc.stderr and "repo2lora update --rebuild" in proc.stderr
    assert "free space" not in proc.stderr
    proc = run_cli("update", str(root), "--model", "tiny-random", "--rebuild")
    assert proc.returncode == 0, proc.stderr
    assert list((root / ".repo2lora").glob("state.db.damaged-*"))


def test_update_walks_on_from_the_snapshot_of_an_old_commit(tmp_path: Path) -> None:
    """`snapshot --rev OLD` with the evolving network stores its h_0 at OLD; `update` walks
    from there to HEAD, and ends where a walk from OLD made by `update` alone ends."""
    repo = _many_commits(tmp_path / "repo", 5)
    twin = tmp_path / "twin"
    subprocess.run(["git", "clone", "-q", str(repo.root), str(twin)], check=True)
    first = repo.git("rev-list", "--max-parents=0", "HEAD")
    run_json("snapshot", str(repo.root), "--rev", first, "--model", "tiny-random")
    walked = run_json("update", str(repo.root), "--model", "tiny-random")
    assert walked["resumed_from"] == first
    assert [s["source"] for s in walked["steps"]] == ["diff"] * 4
    log = state_log(repo.root)
    assert len(log) == 5 and log[-1].commit == first and log[-1].source == "snapshot"

    alone = update_repository(twin, model="tiny-random", start=first)
    assert len(alone.steps) == 5
    a, b = _states(repo.root / ".repo2lora" / "state.db"), _states(twin / ".repo2lora" / "state.db")
    assert set(a) == set(b)
    for sha in a:
        np.testing.assert_allclose(a[sha], b[sha], atol=1e-6, rtol=0)


def test_log_shows_the_current_hypernetworks_states(sample_repo: GitRepo, tmp_path: Path) -> None:
    root = sample_repo.root
    first = sample_repo.git("rev-list", "--max-parents=0", "HEAD")
    update_repository(root, model="tiny-random", start=first)
    info = describe_base_model("tiny-random")
    save_hypernet(build_hypernet(default_hypernet_config(info), info), info, tmp_path / "hn")
    newest = update_repository(root, model="tiny-random", hypernet=str(tmp_path / "hn"))
    current = run_json("log", str(root))
    assert [e["hypernet"] for e in current] == [newest.hypernet_key]
    everything = state_log(root, all_hypernets=True)
    hypernets = [e.hypernet for e in everything]
    assert len(hypernets) == 3 and len(set(hypernets)) == 2
    assert hypernets.count(newest.hypernet_key) == 1
    proc = run_cli("log", str(root), "--all")
    assert proc.returncode == 0 and set(hypernets) <= set(proc.stdout.split())
