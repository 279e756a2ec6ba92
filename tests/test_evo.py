"""The evolving state: chunk-level diffs, one stored GRU step per commit, and every shape of
history (branch switch, reset, rebase, force-push, merge, orphan branch) on real git repos."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evo_state.diff import commit_chunk_diff, diff_chunks
from evo_state.store import open_store
from repo2lora.update import EVO_KIND, UpdateConfig, update_repository
from repo_encoder.chunk import Chunk, content_hash
from repo_encoder.chunker import ChunkerConfig
from repo_encoder.errors import UserError
from repo_encoder.exclusion import ExclusionConfig
from repo_encoder.snapshot import open_repository
from tests.gitrepo import GitRepo


def func(name: str, body: str = "return 1") -> str:
    return f"def {name}(x):\n    {body}\n\n\n"


def update(repo: GitRepo, **kw: object):
    return update_repository(repo.root, model="tiny-random", **kw)  # type: ignore[arg-type]


def state_of(repo: GitRepo, commit: str) -> np.ndarray | None:
    with open_store(repo.root) as store:
        rows = store.db.execute(
            "select data from states where commit_sha = ? and kind = ?", [commit, EVO_KIND]
        ).fetchall()
    return np.frombuffer(rows[0][0], dtype=np.float32) if rows else None


def n_states(repo: GitRepo) -> int:
    with open_store(repo.root) as store:
        return int(store.db.execute("select count(*) from states where kind='evo'").fetchone()[0])


@pytest.fixture
def history(tmp_path: Path) -> GitRepo:
    repo = GitRepo(tmp_path / "h")
    repo.commit({"pkg/a.py": func("alpha") + func("beta")}, "c1")
    repo.commit({"pkg/b.py": func("gamma")}, "c2")
    repo.commit({"pkg/a.py": func("alpha", "return 2") + func("beta")}, "c3")
    return repo


# -- diffs -------------------------------------------------------------------------------------

_names = st.lists(st.sampled_from("abcdefgh"), unique=True, max_size=8)


def _chunks(names: list[str], bodies: dict[str, int]) -> list[Chunk]:
    out = []
    for i, n in enumerate(names):
        text = f"def {n}():\n    return {bodies.get(n, 0)}\n"
        out.append(Chunk("m.py", n, "function", 3 * i + 1, 3 * i + 2, text, content_hash(text)))
    return out


@settings(max_examples=100, deadline=None)
@given(_names, _names, st.dictionaries(st.sampled_from("abcdefgh"), st.integers(0, 2)))
def test_diff_accounts_for_every_chunk(old_n: list[str], new_n: list[str], bodies: dict) -> None:
    old, new = _chunks(old_n, {}), _chunks(new_n, bodies)
    d = diff_chunks(old, new)
    added = {c.qualname for c in d.added}
    removed = {c.qualname for c in d.removed}
    modified = {n.qualname for _, n in d.modified}
    assert added == set(new_n) - set(old_n)
    assert removed == set(old_n) - set(new_n)
    assert modified == {n for n in set(old_n) & set(new_n) if bodies.get(n, 0) != 0}
    back = diff_chunks(new, old)  # the reverse diff swaps the sides
    assert {c.qualname for c in back.added} == removed
    assert {c.qualname for c in back.removed} == added
    assert diff_chunks(new, new).empty


def test_commit_diff_is_chunk_level_and_follows_renames(history: GitRepo) -> None:
    repo = open_repository(history.root)
    ex, cfg = ExclusionConfig(), ChunkerConfig()
    c3 = history.git("rev-parse", "HEAD")
    d = commit_chunk_diff(repo, history.git("rev-parse", "HEAD~1"), c3, ex, cfg)
    assert [(o.qualname, n.qualname) for o, n in d.modified] == [("alpha", "alpha")]
    assert not d.added and not d.removed
    history.git("mv", "pkg/a.py", "pkg/renamed.py")
    c4 = history.commit(message="rename only")
    assert commit_chunk_diff(repo, c3, c4, ex, cfg).empty  # rename detection: nothing changed
    c5 = history.commit({"tests/test_x.py": func("test_x")}, "tests only")
    assert commit_chunk_diff(repo, c4, c5, ex, cfg).empty  # test files are not seen
    first = history.git("rev-list", "--max-parents=0", "HEAD")
    root = commit_chunk_diff(repo, None, first, ex, cfg)
    assert {c.qualname for c in root.added} == {"alpha", "beta"}


# -- the walk over a DAG -----------------------------------------------------------------------


def test_linear_updates_store_one_step_per_commit(history: GitRepo) -> None:
    c1 = history.git("rev-parse", "HEAD~2")
    res = update(history, start=c1)
    assert res.resumed_from is None
    assert [s.source for s in res.steps] == ["snapshot", "diff", "diff"]
    assert [s.modified for s in res.steps] == [0, 0, 1]
    assert n_states(history) == 3
    assert Path(res.adapter_path).is_dir()
    again = update(history)
    assert again.steps == [] and again.resumed_from == res.target
    c4 = history.commit({"pkg/c.py": func("delta")}, "c4")
    later = update(history)
    assert later.resumed_from == res.target and [s.commit for s in later.steps] == [c4]
    assert later.steps[0].added == 1


def test_branch_switch_resumes_from_the_fork_point(history: GitRepo) -> None:
    fork = history.git("rev-parse", "HEAD~1")
    update(history, start=history.git("rev-parse", "HEAD~2"))
    history.git("checkout", "-q", "-b", "feature", fork)
    f1 = history.commit({"pkg/f.py": func("feature_fn")}, "f1")
    res = update(history)
    assert res.resumed_from == fork and [s.commit for s in res.steps] == [f1]


def test_reset_hard_to_an_older_commit_reuses_its_state(history: GitRepo) -> None:
    update(history, start=history.git("rev-parse", "HEAD~2"))
    old = history.git("rev-parse", "HEAD~1")
    history.git("reset", "-q", "--hard", old)
    res = update(history)
    assert res.steps == [] and res.resumed_from == old and res.target == old
    assert Path(res.adapter_path).is_dir()


def test_force_push_and_rebase_replay_only_the_new_commits(history: GitRepo) -> None:
    base = history.git("rev-parse", "HEAD~2")
    update(history, start=base)
    history.git("checkout", "-q", "-b", "topic", base)
    history.commit({"pkg/t.py": func("topic_fn")}, "t1")
    history.commit({"pkg/t.py": func("topic_fn", "return 3")}, "t2")
    history.git("rebase", "-q", "main")  # topic now sits on main's tip, new shas
    res = update(history)
    assert res.resumed_from == history.git("rev-parse", "main")
    assert len(res.steps) == 2
    # force-push: the branch is rewritten from two commits back
    history.git("reset", "-q", "--hard", "HEAD~2")
    new = history.commit({"pkg/u.py": func("other")}, "rewritten")
    res = update(history)
    assert res.resumed_from == history.git("rev-parse", "main") and res.steps[0].commit == new


def test_merge_commit_steps_by_the_first_parent_diff(history: GitRepo) -> None:
    update(history, start=history.git("rev-parse", "HEAD~2"))
    history.git("checkout", "-q", "-b", "side", "HEAD~1")
    history.commit({"pkg/side.py": func("side_a") + func("side_b")}, "side work")
    history.git("checkout", "-q", "main")
    history.git("merge", "-q", "--no-ff", "-m", "merge side", "side")
    res = update(history)
    assert len(res.steps) == 1 and res.steps[0].added == 2  # the merged-in side branch


def test_orphan_branch_and_far_targets_start_fresh(history: GitRepo) -> None:
    update(history, start=history.git("rev-parse", "HEAD~2"))
    history.git("checkout", "-q", "--orphan", "fresh")
    history.git("rm", "-q", "-rf", ".")
    history.commit({"other/x.py": func("unrelated")}, "orphan root")
    res = update(history)
    assert res.resumed_from is None and [s.source for s in res.steps] == ["snapshot"]
    history.git("checkout", "-q", "main")
    for i in range(3):
        history.commit({f"pkg/n{i}.py": func(f"n{i}")}, f"n{i}")
    far = update(history, config=UpdateConfig(max_replay=2))
    assert far.resumed_from is None and [s.source for s in far.steps] == ["snapshot"]


def test_replay_from_scratch_gives_the_same_states(history: GitRepo) -> None:
    c1 = history.git("rev-parse", "HEAD~2")
    update(history, start=c1)
    first = {c: state_of(history, c) for c in history.git("rev-list", "HEAD").split()}
    shutil.rmtree(history.root / ".repo2lora")
    update(history, start=c1)
    for c, v in first.items():
        again = state_of(history, c)
        assert v is not None and again is not None
        np.testing.assert_allclose(again, v, atol=1e-6, rtol=0)


def test_adapter_is_regenerated_from_a_stored_state(history: GitRepo) -> None:
    res = update(history, start=history.git("rev-parse", "HEAD~2"))
    before = (Path(res.adapter_path) / "adapter_model.safetensors").read_bytes()
    shutil.rmtree(res.adapter_path)
    again = update(history)
    assert again.steps == []
    assert (Path(again.adapter_path) / "adapter_model.safetensors").read_bytes() == before


def test_worktree_step_is_transient(history: GitRepo) -> None:
    res = update(history, start=history.git("rev-parse", "HEAD~2"))
    stored = n_states(history)
    history.write({"pkg/b.py": func("gamma", "return 42") + func("draft")})
    wt = update(history, worktree=True)
    assert wt.worktree is not None and (wt.worktree.added, wt.worktree.modified) == (1, 1)
    assert n_states(history) == stored
    head_w = (Path(res.adapter_path) / "adapter_model.safetensors").read_bytes()
    wt_w = (Path(wt.adapter_path) / "adapter_model.safetensors").read_bytes()
    assert "worktree" in wt.adapter_path and wt_w != head_w


def test_from_must_be_an_ancestor(history: GitRepo) -> None:
    history.git("checkout", "-q", "-b", "x", "HEAD~1")
    other = history.commit({"pkg/z.py": func("z")}, "z")
    history.git("checkout", "-q", "main")
    with pytest.raises(UserError, match="not an ancestor"):
        update(history, start=other)
