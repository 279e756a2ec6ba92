"""Repository preparation: the suite's repositories (a generated synthetic suite, or local
paths), each read once for the configured tracks (the HEAD snapshot and its tasks; the walk's
start snapshot, per-commit chunk diffs and the tasks each commit adds), bad input turned into a
one-line `Skip`, and the seeded cross-repo split."""

from __future__ import annotations

import functools
import hashlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from benchmark import methods as m
from benchmark.config import SYNTHETIC_SUITES, BenchConfig
from benchmark.leakage import WITH_TESTS
from evo_state.store import open_store
from repo2lora.models.loading import LoadedModel
from repo2lora.snapshot import encode_snapshot
from repo2lora.tasks.datasets import RepoData, encode_repo, repo_context
from repo2lora.tasks.miner import AssertionTask, MinerConfig, mine
from repo2lora.tasks.synthetic import SyntheticRepo, generate_suite, load_repo
from repo_encoder.chunk import Chunk
from repo_encoder.errors import UserError
from repo_encoder.names import NameIndex, renamed_definitions
from repo_encoder.snapshot import resolve_commit


@dataclass(frozen=True)
class Skip:
    """A repository (or one track of it) left out, and why, in one sentence."""

    repo: str
    track: str  # "all", "static" or "evo"
    reason: str


@dataclass
class RepoSource:
    label: str
    path: Path
    manifest: SyntheticRepo | None = None


@dataclass
class StaticView:
    """HEAD: the chunks the encoder sees, their vectors, and the mined tasks."""

    commit: str
    chunks: list[Chunk]
    vectors: torch.Tensor  # [n, d]
    tasks: list[AssertionTask]
    # the `with-tests` snapshot (source and test code), before the evaluated tests are removed
    with_tests: tuple[list[Chunk], torch.Tensor] | None = None

    @functools.cached_property
    def names(self) -> NameIndex:
        """The names the snapshot defines (what code2lora-names reads)."""
        return NameIndex.of(self.chunks)


@dataclass
class EvoView:
    """The walk: encoder input (snapshot at the start + one chunk diff per commit), the
    tasks each commit adds (by step, 1-based), the start commit's tasks (step 0), and the
    names each step renamed to (known only for synthetic repositories)."""

    data: RepoData
    start_tasks: list[AssertionTask]
    commits_total: int
    renames: dict[int, set[str]] | None


@dataclass
class PreparedRepo:
    source: RepoSource
    static: StaticView | None = None
    evo: EvoView | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.source.label


def resolve_sources(cfg: BenchConfig, out: Path) -> list[RepoSource]:
    """The repositories of the suite: generated (once) into `out`, or the given paths."""
    if len(cfg.suite) == 1 and cfg.suite[0] in SYNTHETIC_SUITES:
        suite_dir = out / f"suite-{cfg.suite[0]}"
        done = suite_dir / "done"
        if not done.exists():
            if suite_dir.exists():  # an interrupted generation: it is ours, start it again
                shutil.rmtree(suite_dir)
            generate_suite(suite_dir, cfg.n_repos, cfg.n_commits, cfg.seed)
            done.write_text("ok\n")
        repos = [load_repo(p) for p in sorted(suite_dir.glob("*.manifest.json"))]
        return [RepoSource(r.name, r.path, r) for r in repos]
    sources: list[RepoSource] = []
    seen: set[str] = set()
    for spec in cfg.suite + tuple(t for t in cfg.test_repos if t not in cfg.suite):
        path = Path(spec).expanduser().resolve()
        label = path.name or "repo"
        while label in seen:
            label = f"{label}-{hashlib.sha256(str(path).encode()).hexdigest()[:6]}"
        seen.add(label)
        manifest_path = path.parent / f"{path.name}.manifest.json"
        manifest = load_repo(manifest_path) if manifest_path.is_file() else None
        sources.append(RepoSource(label, path, manifest))
    return sources


def detected_renames(names: list[NameIndex]) -> dict[int, set[str]]:
    """Per walk step (after the first), the names its commit renamed to
    (`renamed_definitions`), where it renamed any."""
    out: dict[int, set[str]] = {}
    for step in range(1, len(names)):
        if found := renamed_definitions(names[step - 1], names[step]):
            out[step] = found
    return out


def _renames_by_step(manifest: SyntheticRepo | None, walk: list[str]) -> dict[int, set[str]] | None:
    if manifest is None:
        return None
    by_sha = {c.sha: c for c in manifest.commits}
    out: dict[int, set[str]] = {}
    for step, sha in enumerate(walk):
        commit = by_sha.get(sha)
        names = {
            ch.new_name.rsplit(".", 1)[-1]
            for ch in (commit.changes if commit else ())
            if ch.kind == "rename" and ch.new_name
        }
        if names and step > 0:
            out[step] = names
    return out


def prepare_repo(
    source: RepoSource, base: LoadedModel, cfg: BenchConfig
) -> tuple[PreparedRepo | None, list[Skip]]:
    """Read one repository for the configured tracks; bad input becomes a `Skip` line."""
    label = source.label
    try:
        ctx = repo_context(source.path, base)
        head = resolve_commit(ctx.repo, "HEAD")
    except UserError as exc:
        return None, [Skip(label, "all", str(exc))]
    prep = PreparedRepo(source)
    with open_store(ctx.root) as store:
        snap = encode_snapshot(ctx, store, head)
    mined = mine(ctx.repo, head, MinerConfig(), repo_name=label)
    test_files = mined.counts["test_files"]
    if not snap.files and not test_files:
        return None, [Skip(label, "all", "no Python files at HEAD")]
    if not mined.tasks:
        unparsable = mined.counts["skipped_syntax_error"]
        why = (
            "no test files (tests/**, test_*.py, *_test.py)"
            if not test_files
            else f"no assertion tasks in its {test_files} test files"
            + (f" ({unparsable} do not parse)" if unparsable else "")
        )
        return None, [Skip(label, "all", why)]
    if mined.counts["skipped_syntax_error"]:
        prep.notes.append(f"{mined.counts['skipped_syntax_error']} test files do not parse")
    if snap.skipped.get("fallback_syntax_error"):
        prep.notes.append(
            f"{snap.skipped['fallback_syntax_error']} source files do not parse "
            "(chunked by line windows)"
        )
    prep.static = StaticView(head.hexsha, snap.chunks, snap.encoded.vectors, mined.tasks)
    if cfg.with_tests and "static" in cfg.tracks and {m.RAG, m.STATIC} & set(cfg.methods):
        ctx_wt = repo_context(source.path, base, WITH_TESTS)
        with open_store(ctx_wt.root) as store:  # the chunk-vector cache is shared
            wt = encode_snapshot(ctx_wt, store, head)
        prep.static.with_tests = (wt.chunks, wt.encoded.vectors)

    skips: list[Skip] = []
    if "evo" in cfg.tracks:
        total = int(ctx.repo.git.rev_list("--first-parent", "--count", head.hexsha))
        if total < 2:
            skips.append(Skip(label, "evo", "one commit: no history to walk"))
            return prep, skips
        walk = min(total - 1, cfg.max_commits)
        if walk < total - 1:
            prep.notes.append(f"history of {total} commits: the walk covers the last {walk}")
        start = ctx.repo.commit(f"{head.hexsha}~{walk}")
        data = encode_repo(source.path, base, evolving_from=start.hexsha, name=label)
        if not data.evo_tasks:
            skips.append(Skip(label, "evo", f"its last {walk} commits add no assertions"))
            return prep, skips
        start_tasks = mine(ctx.repo, start, MinerConfig(), repo_name=label).tasks
        renames = _renames_by_step(source.manifest, data.encoding.commits)
        if renames is None:  # a real history: the renames its definitions show
            renames = detected_renames(data.encoding.names)
        prep.evo = EvoView(data, start_tasks, total, renames)
    return prep, skips


def split_repos(labels: list[str], share: float, seed: int) -> dict[str, str]:
    """Cross-repo split: a seeded ranking of the repositories, the first `share` of them held
    out (at least one, and at least one left for training, when there are two or more)."""
    ranked = sorted(labels, key=lambda s: hashlib.sha256(f"{seed}:{s}".encode()).hexdigest())
    n_test = round(len(labels) * share)
    n_test = min(max(n_test, 1), len(labels) - 1) if len(labels) >= 2 else 0
    return {s: ("test" if i < n_test else "train") for i, s in enumerate(ranked)}


def assign_splits(prepared: list[PreparedRepo], cfg: BenchConfig) -> dict[str, str]:
    """ "train" or "test" (held out entirely: cross-repo) for every prepared repository: the
    given `test_repos`, or a seeded share of the suite."""
    if cfg.test_repos:
        held_out = {str(Path(t).expanduser().resolve()) for t in cfg.test_repos}
        return {
            p.label: "test" if str(p.source.path.resolve()) in held_out else "train"
            for p in prepared
        }
    return split_repos([p.label for p in prepared], cfg.test_repo_share, cfg.seed)
