"""Bad input: each gets a one-line error, a non-zero exit, no traceback, and no partial state."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from repo2lora.hypernet.checkpoint import build_hypernet, default_hypernet_config, save_hypernet
from repo2lora.models import describe_base_model
from tests.cli import ENV, run_cli
from tests.gitrepo import SAMPLE_V2, GitRepo


def _assert_user_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("repo2lora: error:")]
    assert len(lines) == 1, proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_not_a_git_repository(tmp_path: Path) -> None:
    _assert_user_error(
        run_cli("snapshot", str(tmp_path), "--model", "tiny-random"), "not inside a git repository"
    )
    assert not (tmp_path / ".repo2lora").exists()


def test_missing_path(tmp_path: Path) -> None:
    _assert_user_error(run_cli("snapshot", str(tmp_path / "nope")), "does not exist")


def test_repository_with_no_commits(tmp_path: Path) -> None:
    GitRepo(tmp_path / "empty")
    _assert_user_error(
        run_cli("snapshot", str(tmp_path / "empty"), "--model", "tiny-random"), "no commits"
    )
    assert not (tmp_path / "empty" / ".repo2lora").exists()


def test_bare_repository(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", "--bare", str(tmp_path / "b.git")], check=True)
    _assert_user_error(run_cli("snapshot", str(tmp_path / "b.git")), "bare repository")


def test_unknown_revision(sample_repo: GitRepo) -> None:
    _assert_user_error(
        run_cli(
            "snapshot", str(sample_repo.root), "--rev", "no-such-branch", "--model", "tiny-random"
        ),
        "unknown revision",
    )


def test_missing_model_directory(sample_repo: GitRepo) -> None:
    _assert_user_error(
        run_cli("snapshot", str(sample_repo.root), "--model", "./no/such/model"),
        "model directory not found",
    )
    assert not (sample_repo.root / ".repo2lora").exists()


def test_hypernet_for_another_base_model(sample_repo: GitRepo, tmp_path: Path) -> None:
    info = describe_base_model("tiny-random")
    save_hypernet(build_hypernet(default_hypernet_config(info), info), info, tmp_path / "hn")
    # the default (random-default preset) has another architecture than tiny-random
    proc = run_cli("snapshot", str(sample_repo.root), "--hypernet", str(tmp_path / "hn"))
    _assert_user_error(proc, "trained for base model", "--model")
    assert not (sample_repo.root / ".repo2lora").exists()


def test_bad_complete_location(sample_repo: GitRepo) -> None:
    _assert_user_error(
        run_cli("complete", "pkg/geometry.py", "--model", "tiny-random"), "FILE:LINE:COL"
    )


# -- a read-only and a full state directory -------------------------------------------------
# Made real with a user+mount namespace (no root needed): a read-only bind mount of the
# repository, and a size-limited tmpfs holding a copy of the existing state.


def _in_namespace(script: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("unshare") is None:
        pytest.fail("util-linux `unshare` is needed for this test")
    return subprocess.run(
        ["unshare", "-rm", "sh", "-ec", script],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _state_check(state: Path, copy: Path) -> str:
    # copies the state off the full disk as it is, then prints its commits and integrity
    code = textwrap.dedent(f"""
        import sqlite3, os
        db = sqlite3.connect("{copy}/state.db")
        print("STATES", sorted(r[0] for r in db.execute("select commit_sha from states")))
        print("INTEGRITY", db.execute("pragma integrity_check").fetchone()[0])
        print("ADAPTERS", sorted(os.listdir("{copy}/adapters")))
    """)
    return f"cp -a {state} {copy}; {sys.executable} -c '{code}'"


def test_read_only_repository(sample_repo: GitRepo) -> None:
    root = sample_repo.root
    cli = f"{sys.executable} -m repo2lora snapshot {root} --model tiny-random"
    proc = _in_namespace(
        f"mount --bind {root} {root}; mount -o remount,ro,bind {root} {root}; {cli} || echo EXIT=$?"
    )
    assert "EXIT=1" in proc.stdout
    _assert_user_error(
        subprocess.CompletedProcess([], 1, proc.stdout, proc.stderr),
        "cannot write repo2lora state",
        "Read-only",
    )


def test_full_state_directory_keeps_previous_state(sample_repo: GitRepo) -> None:
    root = sample_repo.root
    assert run_cli("snapshot", str(root), "--model", "tiny-random").returncode == 0
    head = sample_repo.git("rev-parse", "HEAD")
    new = sample_repo.commit(
        {
            "pkg/more.py": SAMPLE_V2["pkg/shapes.py"].replace("Polygon", "Shape")
            + "\n\ndef extra(a, b):\n    return [a, b] * 100\n"
        },
        "more",
    )
    state = root / ".repo2lora"
    used_kib = sum(f.stat().st_size for f in state.rglob("*") if f.is_file()) // 1024
    cli = f"{sys.executable} -m repo2lora snapshot {root} --model tiny-random"
    proc = _in_namespace(
        f"cp -a {state} {root}/../saved; mount -t tmpfs -o size={used_kib + 24}k tmpfs {state}; "
        f"cp -a {root}/../saved/. {state}/; {cli} || echo EXIT=$?; "
        f"{_state_check(state, root.parent / 'after')}"
    )
    assert "EXIT=1" in proc.stdout, proc.stdout + proc.stderr
    _assert_user_error(
        subprocess.CompletedProcess([], 1, proc.stdout, proc.stderr),
        "cannot write repo2lora state",
        "no space left",
    )
    assert f"STATES ['{head}']" in proc.stdout  # the previous state, and nothing of the new one
    assert "INTEGRITY ok" in proc.stdout
    assert new[:12] not in proc.stdout.split("ADAPTERS", 1)[1]
    with sqlite3.connect(state / "state.db") as db:  # the real directory was never touched
        assert [r[0] for r in db.execute("select commit_sha from states")] == [head]


def test_train_init_from_needs_a_code2lora_generator(tmp_path: Path) -> None:
    proc = run_cli(
        "train", "--model", "tiny-random", "--out", str(tmp_path / "run"), "--synthetic", "1",
        "--generator", "dnd", "--init-from", str(tmp_path / "static"),
    )  # fmt: skip
    _assert_user_error(proc, "--init-from", "--generator code2lora-static")
    assert not (tmp_path / "run").exists()


def test_train_init_from_needs_a_static_checkpoint(tmp_path: Path) -> None:
    proc = run_cli(
        "train", "--model", "tiny-random", "--out", str(tmp_path / "run"), "--synthetic", "1",
        "--generator", "code2lora-evo", "--init-from", str(tmp_path / "missing"),
    )  # fmt: skip
    _assert_user_error(proc, "no hypernetwork checkpoint", "code2lora-static")
    assert not (tmp_path / "run").exists()
