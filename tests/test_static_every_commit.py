"""Static at every commit at the cost of the diff: the pooling sums moved by chunk diffs equal
the from-scratch pooling (attention and meanmax, maxima taken away included), in
`update --static-every-commit` over real commits (stored, resumed, the adapter the snapshot's)
and along the benchmark's walk."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from benchmark.walk import StaticWalk
from evo_state.store import open_store
from repo2lora.hypernet.checkpoint import build_hypernet, default_hypernet_config, save_hypernet
from repo2lora.hypernet.pool_sums import apply_diff, state_of, sums_of
from repo2lora.hypernet.static import StaticHypernet
from repo2lora.models import describe_base_model, load_base_model
from repo2lora.snapshot import STATIC_KIND, encode_snapshot, open_context
from repo2lora.tasks.datasets import encode_repo
from repo2lora.update import UpdateResult, update_repository
from repo_encoder.errors import UserError
from tests.gitrepo import SAMPLE_V1, SAMPLE_V2, GitRepo

INFO = describe_base_model("tiny-random")


def _net(pooling: str) -> StaticHypernet:
    cfg = dataclasses.replace(
        default_hypernet_config(INFO), generator="code2lora-static", pooling=pooling
    )
    return build_hypernet(cfg, INFO).eval()


@pytest.mark.parametrize("pooling", ["attention", "meanmax"])
def test_sums_moved_by_diffs_equal_the_pooling_from_scratch(pooling: str) -> None:
    net = _net(pooling)
    g = torch.Generator().manual_seed(0)
    pool = [torch.randn(64, generator=g) for _ in range(12)]
    sums = sums_of(net.encoder, torch.stack(pool))
    asked = []

    def members() -> torch.Tensor:
        asked.append(len(pool))
        return torch.stack(pool)

    for step in range(30):
        out = [pool.pop(step % len(pool)) for _ in range(step % 3)]
        new = [torch.randn(64, generator=g) for _ in range((step + 1) % 3)]
        pool += new
        z = torch.zeros(0, 64)
        sums = apply_diff(
            net.encoder,
            sums,
            torch.stack(new) if new else z,
            torch.stack(out) if out else z,
            members,
        )
        with torch.no_grad():
            fresh = net.encode(torch.stack(pool))
        torch.testing.assert_close(state_of(net.encoder, sums), fresh, atol=2e-5, rtol=1e-5)
    # meanmax reads the members when a maximum left (never on a step that removes nothing),
    # attention only to undo a cancellation
    assert (len(asked) > 0) == (pooling == "meanmax") and len(asked) <= 20


def _history(root: Path) -> GitRepo:
    repo = GitRepo(root)
    repo.commit(SAMPLE_V1, "v1")
    repo.commit(SAMPLE_V2, "v2: a module added")
    geometry = str(SAMPLE_V1["pkg/geometry.py"]).replace("math.pi * radius", "3.14 * radius")
    repo.commit({"pkg/geometry.py": geometry + "\n\ndef unit():\n    return 1\n"}, "v3: changed")
    (root / "pkg" / "shapes.py").unlink()
    repo.commit(message="v4: a module deleted")
    return repo


@pytest.mark.parametrize("pooling", ["attention", "meanmax"])
def test_update_static_every_commit_equals_a_fresh_snapshot(tmp_path: Path, pooling: str) -> None:
    repo = _history(tmp_path / "repo")
    ckpt = save_hypernet(_net(pooling), INFO, tmp_path / "ckpt")
    base = load_base_model(INFO)

    def update(rev: str) -> UpdateResult:
        return update_repository(
            repo.root, rev, hypernet=str(ckpt), loaded_model=base, static_every_commit=True
        )

    first = update("HEAD~3")
    assert [s.source for s in first.steps] == ["snapshot"]
    res = update("HEAD")
    assert res.resumed_from == first.target
    assert [s.source for s in res.steps] == ["diff", "diff", "diff"]
    assert sum(s.removed for s in res.steps) > 0 and sum(s.modified for s in res.steps) > 0
    ctx = open_context(repo.root, hypernet=str(ckpt), loaded_model=base)
    with open_store(repo.root) as store:
        for sha in repo.git("rev-list", "HEAD").split():
            rec = store.get_state(sha, ctx.hyper.key, STATIC_KIND)
            assert rec is not None
            with torch.no_grad():
                snap = encode_snapshot(ctx, store, ctx.repo.commit(sha))
                fresh = ctx.hyper.net.encode(snap.encoded.vectors)
            torch.testing.assert_close(torch.from_numpy(rec.vector), fresh, atol=2e-5, rtol=1e-5)
    assert Path(res.adapter_path).name.startswith("static-")
    assert update("HEAD").steps == []  # up to date: nothing stepped


def test_the_benchmark_walk_gives_every_commit_its_fresh_static_state(tmp_path: Path) -> None:
    repo = _history(tmp_path / "repo")
    base = load_base_model(INFO)
    root = repo.git("rev-list", "--max-parents=0", "HEAD")
    data = encode_repo(repo.root, base, evolving_from=root)
    enc = data.encoding
    net = _net("meanmax")
    ctx = open_context(repo.root, loaded_model=base, with_hypernet=False)
    with open_store(repo.root) as store:

        def vectors(step: int) -> torch.Tensor:
            commit = ctx.repo.commit(enc.commits[step])
            return encode_snapshot(ctx, store, commit).encoded.vectors

        walk = StaticWalk(net, lambda: enc.vectors, lambda t: enc.diffs[t - 1], vectors)
        for step in range(len(enc.commits)):
            with torch.no_grad():
                fresh = net.encode(vectors(step))
            torch.testing.assert_close(walk.state(step), fresh, atol=2e-5, rtol=1e-5)
        with pytest.raises(ValueError, match="cannot go back"):
            walk.state(0)


def test_the_cli_follows_history_with_static_states(tmp_path: Path) -> None:
    from tests.cli import run_cli, run_json

    repo = _history(tmp_path / "repo")
    out = run_json("update", str(repo.root), "--static-every-commit", "--model", "tiny-random")
    assert [s["source"] for s in out["steps"]] == ["snapshot"]
    assert out["followed"] == "static"
    assert Path(out["adapter_path"]).name.startswith("static-")
    proc = run_cli(
        "update", str(repo.root), "--static-every-commit", "--evo", "--model", "tiny-random"
    )
    assert proc.returncode == 2 and "not allowed with argument" in proc.stderr
    log = run_json("log", str(repo.root))
    assert [e["kind"] for e in log] == ["static"] and log[0]["source"] == "snapshot"


def test_a_static_checkpoint_follows_history_by_its_static_state(tmp_path: Path) -> None:
    """No flag: a code2lora-static checkpoint follows by its static state at every commit, and
    `--from` starts that walk where it says."""
    repo = _history(tmp_path / "repo")
    ckpt = save_hypernet(_net("meanmax"), INFO, tmp_path / "ckpt")
    base = load_base_model(INFO)
    res = update_repository(
        repo.root, "HEAD", hypernet=str(ckpt), loaded_model=base, start="HEAD~2"
    )
    assert res.followed == "static" and res.resumed_from is None
    assert [s.source for s in res.steps] == ["snapshot", "diff", "diff"]
    with pytest.raises(UserError, match="not an ancestor"):
        update_repository(repo.root, "HEAD~2", hypernet=str(ckpt), loaded_model=base, start="HEAD")
    with pytest.raises(UserError, match="code2lora-static"):  # no GRU step to follow with
        update_repository(
            repo.root, hypernet=str(ckpt), loaded_model=base, static_every_commit=False
        )


@pytest.mark.parametrize("pooling", ["attention", "meanmax"])
def test_the_work_tree_adapter_is_the_one_its_commit_will_have(
    tmp_path: Path, pooling: str
) -> None:
    """Uncommitted edits move a copy of HEAD's sums by the work tree's diff (a function taken
    out, so meanmax loses maxima): the transient adapter equals the adapter of the same edits
    once committed, and nothing of the work tree is stored."""
    repo = _history(tmp_path / "repo")
    ckpt = save_hypernet(_net(pooling), INFO, tmp_path / "ckpt")
    base = load_base_model(INFO)

    def update(worktree: bool) -> UpdateResult:
        return update_repository(
            repo.root, hypernet=str(ckpt), loaded_model=base, worktree=worktree
        )

    update(False)
    geometry = repo.root / "pkg" / "geometry.py"
    text = geometry.read_text()
    geometry.write_text(text.split("\n\ndef unit")[0] + "\n\nLIMIT = 3\n")
    (repo.root / "pkg" / "extra.py").write_text("def extra(x):\n    return x * 2\n")
    wt = update(True)
    assert wt.worktree is not None and wt.worktree.files == 2 and wt.steps == []
    assert Path(wt.adapter_path).name.startswith("worktree-")
    assert wt.weights is not None
    with open_store(repo.root) as store:
        assert store.get_pool_sums(repo.git("rev-parse", "HEAD"), wt.hypernet_key) is not None
    repo.commit(message="the edits, committed")
    done = update(False)
    assert [s.source for s in done.steps] == ["diff"] and done.weights is not None
    torch.testing.assert_close(wt.weights.flat(), done.weights.flat(), atol=2e-5, rtol=1e-5)
