"""The benchmark harness over real git repositories: bad input becomes one clear skip line and
the run goes on, splits are deterministic, a finished run resumes from its cache, and a cache
made with other settings is refused. Runs the untrained methods only (no training: fast)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import git
import pytest
import torch

from benchmark.config import bench_config
from benchmark.leakage import WITH_TESTS, WithTestsHistory, leak_free, visible_diff
from benchmark.prepare import split_repos
from benchmark.run import run_bench
from benchmark.walk import StateWalk
from evo_state.diff import ChunkDiff
from evo_state.store import open_store
from repo2lora.hypernet.checkpoint import build_hypernet
from repo2lora.hypernet.evo import EvoHypernet
from repo2lora.hypernet.static import HypernetConfig
from repo2lora.models.loading import describe_base_model, load_base_model
from repo2lora.snapshot import encode_snapshot
from repo2lora.tasks.datasets import repo_context
from repo2lora.tasks.miner import mine
from repo2lora.tasks.synthetic import generate_suite
from repo_encoder.errors import UserError
from repo_encoder.snapshot import resolve_commit
from tests.gitrepo import GitRepo

SOURCE = "def area(w: int, h: int) -> int:\n    return w * h\n"
TESTS = "from shapes import area\n\n\ndef test_area():\n    assert area(2, 3) == 6\n"


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bench-inputs")
    good = generate_suite(root / "suite", n_repos=2, n_commits=4, seed=5)
    out = {f"good{i}": r.path for i, r in enumerate(good)}
    plain = root / "plain-dir"
    plain.mkdir()
    (plain / "x.py").write_text(SOURCE)
    out["not-git"] = plain
    out["no-commits"] = GitRepo(root / "no-commits").root
    docs = GitRepo(root / "docs-only")
    docs.commit({"README.md": "# docs\n"})
    out["no-python"] = docs.root
    lib = GitRepo(root / "no-tests")
    lib.commit({"shapes.py": SOURCE})
    lib.commit({"shapes.py": SOURCE + "\nSIDES = 4\n"})
    out["no-tests"] = lib.root
    broken = GitRepo(root / "broken-tests")
    broken.commit({"shapes.py": SOURCE, "tests/test_shapes.py": "def test_area(:\n    assert\n"})
    broken.commit({"shapes.py": "def area(w, h:\n"})  # source does not parse either
    out["broken"] = broken.root
    single = GitRepo(root / "one-commit")
    single.commit({"shapes.py": SOURCE, "tests/test_shapes.py": TESTS})
    out["one-commit"] = single.root
    return out


def _run(paths: list[Path], out: Path, **overrides: Any) -> dict[str, Any]:
    cfg = bench_config(
        tuple(str(p) for p in paths),
        model="tiny-random",
        methods=("constant", "base"),
        max_commits=2,
        **overrides,
    )
    return run_bench(cfg, out)


def test_bad_input_is_skipped_with_a_reason_and_the_run_goes_on(
    repos: dict[str, Path], tmp_path: Path
) -> None:
    lines: list[str] = []
    cfg = bench_config(
        tuple(str(p) for p in repos.values()),
        model="tiny-random",
        methods=("constant", "base"),
        max_commits=2,
    )
    report = run_bench(cfg, tmp_path / "out", log=lines.append)
    reasons = {(s["repo"], s["track"]): s["reason"] for s in report["skipped"]}
    assert "not inside a git repository" in reasons[("plain-dir", "all")]
    assert "no commits" in reasons[("no-commits", "all")]
    assert reasons[("docs-only", "all")] == "no Python files at HEAD"
    assert reasons[("no-tests", "all")].startswith("no test files")
    assert "do not parse" in reasons[("broken-tests", "all")]
    assert reasons[("one-commit", "evo")] == "one commit: no history to walk"
    assert ("one-commit", "static") not in reasons
    # every skip is said once, as it happens, and again in the Markdown report
    md = (tmp_path / "out" / "bench.md").read_text()
    for (repo, track), reason in reasons.items():
        assert f"skipped {repo} ({track}): {reason}" in lines
        assert f"skipped `{repo}` ({track}): {reason}" in md
    assert any("history of 4 commits: the walk covers the last 2" in line for line in lines)

    used = {r["repo"]: r for r in report["repos"]}
    assert set(used) == {p.name for k, p in repos.items() if k.startswith("good")} | {"one-commit"}
    tracks = {(rec["repo"], rec["track"]) for rec in report["records"]}
    assert any(t == "evo" for _, t in tracks) and any(t == "static" for _, t in tracks)
    evo = [rec for rec in report["records"] if rec["track"] == "evo"]
    assert all(1 <= rec["step"] <= 2 for rec in evo)
    assert all(rec["after_rename"] is not None for rec in evo)  # the manifests were found
    assert {"base", "constant"} == set(evo[0]["methods"])


def test_resume_reuses_finished_repositories_and_refuses_other_settings(
    repos: dict[str, Path], tmp_path: Path
) -> None:
    paths = [repos["good0"], repos["good1"]]
    out = tmp_path / "out"
    first = _run(paths, out)
    caches = sorted((out / "results").rglob("*.json"))
    assert len(caches) == 4  # two repositories x two tracks
    stamps = [p.stat().st_mtime_ns for p in caches]
    second = _run(paths, out)
    assert [p.stat().st_mtime_ns for p in sorted((out / "results").rglob("*.json"))] == stamps
    assert second["records"] == first["records"]
    with pytest.raises(UserError, match="other settings"):
        _run(paths, out, seed=1)


def test_cross_repo_split_is_seeded_and_never_empty() -> None:
    labels = [f"repo{i}" for i in range(8)]
    split = split_repos(labels, 0.25, seed=0)
    assert split == split_repos(list(reversed(labels)), 0.25, seed=0)
    assert sum(v == "test" for v in split.values()) == 2
    assert split != split_repos(labels, 0.25, seed=1)
    assert set(split_repos(["a", "b"], 0.01, 0).values()) == {"train", "test"}
    assert split_repos(["only"], 0.5, 0) == {"only": "train"}


def test_named_test_repositories_are_the_cross_repo_split(
    repos: dict[str, Path], tmp_path: Path
) -> None:
    held_out = repos["one-commit"]
    report = _run([repos["good0"], repos["good1"]], tmp_path / "out", test_repos=(str(held_out),))
    splits = {(rec["repo"], rec["split"]) for rec in report["records"] if rec["track"] == "static"}
    assert {s for r, s in splits if r == "one-commit"} == {"cross-repo"}
    assert all(s == "in-repo" for r, s in splits if r != "one-commit")
    assert {r["repo"] for r in report["repos"]} >= {"one-commit", repos["good0"].name}


def test_with_tests_leaves_out_exactly_the_evaluated_test_functions(
    repos: dict[str, Path],
) -> None:
    base = load_base_model(describe_base_model("tiny-random"))
    ctx = repo_context(repos["good0"], base, WITH_TESTS)
    with open_store(ctx.root) as store:
        snap = encode_snapshot(ctx, store, resolve_commit(ctx.repo, "HEAD"))
    tasks = mine(ctx.repo, "HEAD").tasks
    evaluated, others = tasks[:3], tasks[3:]
    before = {(c.path, c.qualname) for c in snap.chunks}
    assert {(t.path, t.test_qualname) for t in tasks} <= before  # test code is visible
    chunks, vectors = leak_free(snap.chunks, snap.encoded.vectors, evaluated)
    after = {(c.path, c.qualname) for c in chunks}
    assert not after & {(t.path, t.test_qualname) for t in evaluated}
    kept = {(t.path, t.test_qualname) for t in others} - {
        (t.path, t.test_qualname) for t in evaluated
    }
    assert kept and kept <= after  # the other tests stay visible
    assert vectors.shape[0] == len(chunks) < len(snap.chunks)
    rows = {tuple(v.tolist()) for v in vectors}
    assert rows <= {tuple(v.tolist()) for v in snap.encoded.vectors}


def test_with_tests_on_the_walk_hides_evaluated_tests_and_the_evaluated_commits_test_changes(
    tmp_path: Path,
) -> None:
    repo = GitRepo(tmp_path / "walk")
    first = repo.commit({"shapes.py": SOURCE, "tests/test_shapes.py": TESTS})
    more_source = SOURCE + "\n\ndef perimeter(w: int, h: int) -> int:\n    return 2 * (w + h)\n"
    more_tests = TESTS + (
        "\n\ndef test_perimeter():\n    assert perimeter(2, 3) == 10\n"
        "\n\ndef test_sides():\n    assert SIDES == 4\n"
    )
    second = repo.commit({"shapes.py": more_source, "tests/test_shapes.py": more_tests})
    tasks = mine(git.Repo(repo.root), second).tasks
    evaluated = [t for t in tasks if t.test_qualname == "test_perimeter"]
    held = {("tests/test_shapes.py", "test_perimeter")}
    assert evaluated and {(t.path, t.test_qualname) for t in evaluated} == held

    def seen(chunks: list[Any]) -> set[tuple[str, str]]:
        return {(c.path, c.qualname) for c in chunks}

    def changed(d: ChunkDiff) -> set[tuple[str, str]]:
        return seen(d.added + d.removed + [n for _, n in d.modified])

    with open_store(repo.root) as store:
        history = WithTestsHistory(repo.root, [first, second], evaluated, store, _tiny())
        diff = history.diff(1)
        assert held <= changed(diff)  # with-tests: the test changes are in the raw diff
        carried = visible_diff(diff, held, tests=True)
        assert ("tests/test_shapes.py", "test_sides") in changed(carried)  # other tests stay
        assert not changed(carried) & held
        shown = visible_diff(diff, held, tests=False)  # the evaluated commit's own step
        assert changed(shown) == {("shapes.py", "perimeter")}

        # what retrieval sees at commit 1: the older test, not the commit's new ones
        chunks, vectors = history.snapshot(1)
        assert ("tests/test_shapes.py", "test_area") in seen(chunks)
        assert ("shapes.py", "perimeter") in seen(chunks)
        assert not seen(chunks) & (held | {("tests/test_shapes.py", "test_sides")})
        assert vectors.shape[0] == len(chunks)
        assert ("tests/test_shapes.py", "test_area") in seen(history.snapshot(0)[0])


def test_a_state_walk_carries_one_input_and_evaluates_with_another() -> None:
    base = _tiny()
    net = build_hypernet(HypernetConfig(input_dim=64, generator="code2lora-evo"), base.info)
    assert isinstance(net, EvoHypernet)
    g = torch.Generator().manual_seed(0)
    start = torch.randn(5, 64, generator=g)
    carried = {t: (torch.randn(2, 64, generator=g), torch.zeros(0, 64), (2, 0, 0)) for t in (1, 2)}
    shown = {t: (torch.randn(1, 64, generator=g), torch.zeros(0, 64), (1, 0, 0)) for t in (1, 2)}
    with torch.no_grad():
        walk = StateWalk(net, lambda: start, carried.__getitem__, shown.__getitem__)
        h0 = net.encode(start)
        h1 = net.step(h0, *carried[1])
        assert torch.equal(walk.start(), h0)
        assert torch.equal(walk.state(2), net.step(h1, *shown[2]))
        assert not torch.equal(walk.state(2), net.step(h1, *carried[2]))
        plain = StateWalk(net, lambda: start, carried.__getitem__)
        assert torch.equal(plain.state(2), net.step(h1, *carried[2]))


def _tiny() -> Any:
    return load_base_model(describe_base_model("tiny-random"))
