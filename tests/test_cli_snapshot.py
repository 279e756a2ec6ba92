"""`repo2lora snapshot` and `repo2lora complete` end to end: the real CLI in a subprocess on a
real git repository, its adapter loaded by peft, its SQLite store read back."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import torch
from peft import PeftModel
from safetensors.torch import load_file

from repo2lora.complete import complete_at
from repo2lora.generation import GenerationConfig
from repo2lora.models import describe_base_model, load_base_model
from repo2lora.update import update_repository
from tests.cli import run_cli, run_json
from tests.gitrepo import GitRepo

IDS = torch.tensor([[5, 17, 99, 200, 3, 42, 42, 7, 11, 64]])


def _base():
    return load_base_model(describe_base_model("tiny-random")).model


def test_snapshot_end_to_end(sample_repo: GitRepo) -> None:
    root = sample_repo.root
    v1 = sample_repo.git("rev-parse", "HEAD~1")
    head = sample_repo.git("rev-parse", "HEAD")
    # uncommitted and ignored files are not part of the snapshot of HEAD
    sample_repo.write(
        {
            ".gitignore": "ignored.py\n",
            "ignored.py": "def secret(): pass\n",
            "pkg/uncommitted.py": "def draft(): pass\n",
        }
    )

    first = run_json("snapshot", str(root), "--model", "tiny-random")
    assert first["commit"] == head
    assert first["files"] == 3  # pkg/__init__, geometry, shapes; tests and README left out
    assert first["skipped"]["skipped_test_file"] == 1
    assert first["encoded"] == first["unique_chunks"] > 0 and first["cache_hits"] == 0
    assert first["base_model_untrained"] is True

    adapter = Path(first["adapter_path"])
    assert adapter.is_relative_to(root / ".repo2lora" / "adapters")
    model = PeftModel.from_pretrained(_base(), str(adapter))
    model.eval()
    with torch.no_grad():
        assert not torch.allclose(model(IDS).logits, _base()(IDS).logits)

    again = run_json("snapshot", str(root), "--model", "tiny-random")
    assert again["encoded"] == 0 and again["cache_hits"] == again["unique_chunks"]
    assert again["adapter_path"] == first["adapter_path"]
    new_w = load_file(str(Path(again["adapter_path"]) / "adapter_model.safetensors"))
    old_w = load_file(str(adapter / "adapter_model.safetensors"))
    assert all(torch.equal(new_w[k], old_w[k]) for k in old_w)  # deterministic

    older = run_json("snapshot", str(root), "--rev", "HEAD~1", "--model", "tiny-random")
    assert older["commit"] == v1 and older["files"] == 2
    assert older["encoded"] == 0  # v1's chunks are all in v2 unchanged: served from the cache
    w_old = load_file(str(Path(older["adapter_path"]) / "adapter_model.safetensors"))
    assert any(not torch.equal(w_old[k], new_w[k]) for k in new_w)

    with sqlite3.connect(root / ".repo2lora" / "state.db") as db:
        paths = {r[0] for r in db.execute("select path from chunks where commit_sha = ?", [head])}
        assert paths == {"pkg/__init__.py", "pkg/geometry.py", "pkg/shapes.py"}
        assert db.execute("select count(*) from states").fetchone()[0] == 2
    assert "state.db" not in sample_repo.git("status", "--porcelain")


def test_human_output_and_detached_head(sample_repo: GitRepo) -> None:
    sample_repo.git("checkout", "-q", "--detach", "HEAD~1")
    proc = run_cli("snapshot", "--model", "tiny-random", cwd=sample_repo.root)
    assert proc.returncode == 0, proc.stderr
    assert "adapter" in proc.stdout and "chunks" in proc.stdout
    assert sample_repo.git("rev-parse", "HEAD")[:12] in proc.stdout


def test_complete_prints_a_completion_with_the_head_adapter(sample_repo: GitRepo) -> None:
    out = run_json(
        "complete",
        f"{sample_repo.root}/pkg/geometry.py:7:16",
        "--model",
        "tiny-random",
        "--max-new-tokens",
        "6",
    )
    assert out["commit"] == sample_repo.git("rev-parse", "HEAD")
    assert Path(out["adapter_path"]).is_dir()
    assert isinstance(out["text"], str) and "\n" not in out["text"]
    assert out["prompt_chars"] == len(
        "import math\n\nUNIT = 1.0\n\n\ndef area_of_circle(radius):\n    return math"
    )


def test_symlink_out_of_the_repository_is_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside.py"
    outside.write_text("def leaked_secret_function():\n    return 42\n")
    repo = GitRepo(tmp_path / "r")
    repo.write({"pkg/a.py": "def inside():\n    return 1\n"})
    (repo.root / "pkg" / "link.py").symlink_to(outside)
    repo.commit(message="with a symlink")
    out = run_json("snapshot", str(repo.root), "--model", "tiny-random")
    assert out["files"] == 1 and out["skipped"]["skipped_symlink"] == 1
    with sqlite3.connect(repo.root / ".repo2lora" / "state.db") as db:
        names = {r[0] for r in db.execute("select qualname from chunks")}
    assert "leaked_secret_function" not in names and "inside" in names


def test_help_is_clear() -> None:
    proc = run_cli("snapshot", "--help")
    assert proc.returncode == 0
    for flag in ("--rev", "--model", "--hypernet", "--json"):
        assert flag in proc.stdout


def _stored_rows(root: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(root / ".repo2lora" / "state.db") as db:
        states = db.execute("select commit_sha, kind, created_at from states order by 1, 2")
        adapters = db.execute("select commit_sha, kind, created_at from adapters order by 1, 2")
        return [*states.fetchall(), *adapters.fetchall()]


def test_complete_uses_the_current_adapter_and_stores_nothing_new(sample_repo: GitRepo) -> None:
    root = sample_repo.root
    where = f"{root}/pkg/geometry.py:7:16"
    gen = GenerationConfig(max_new_tokens=4)
    updated = update_repository(root, model="tiny-random")
    rows = _stored_rows(root)
    stamp = Path(updated.adapter_path).stat().st_mtime_ns
    for _ in range(2):
        out = complete_at(where, model="tiny-random", generation=gen)
        assert out.adapter_path == updated.adapter_path  # the evolving state's adapter
        assert out.commit == sample_repo.git("rev-parse", "HEAD")
    assert _stored_rows(root) == rows
    assert Path(updated.adapter_path).stat().st_mtime_ns == stamp

    # a commit since: the state moves one step to HEAD once, and the next call reuses it
    sample_repo.commit({"pkg/extra.py": "def extra():\n    return 5\n"}, "extra")
    moved = complete_at(where, model="tiny-random", generation=gen)
    assert moved.commit == sample_repo.git("rev-parse", "HEAD")
    assert moved.adapter_path != updated.adapter_path
    rows = _stored_rows(root)
    again = complete_at(where, model="tiny-random", generation=gen)
    assert again.adapter_path == moved.adapter_path and again.text == moved.text
    assert _stored_rows(root) == rows


def test_hypernet_help_names_the_shipped_default() -> None:
    for command in ("snapshot", "update", "complete", "serve"):
        proc = run_cli(command, "--help")
        assert proc.returncode == 0
        text = " ".join(proc.stdout.split())
        assert "the trained code2lora-evo hypernetwork shipped with the embedded default model" in (
            text
        ), command
        assert "untrained" not in text.lower(), command


def test_json_into_a_reader_that_leaves_ends_quietly(sample_repo: GitRepo) -> None:
    """`repo2lora snapshot . --json | head -c 10`: the snapshot is stored, and the closed pipe
    ends the command with 141 (as a shell tool) and no traceback."""
    import subprocess
    import sys

    from tests.cli import ENV

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "repo2lora",
            "snapshot",
            str(sample_repo.root),
            "--json",
            "--model",
            "tiny-random",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader leaves before anything is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=240) == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err
    assert (sample_repo.root / ".repo2lora").is_dir()  # the snapshot itself was stored
