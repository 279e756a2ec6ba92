"""Turns git repositories into training and evaluation data: mined assertion tasks split
in-repo by test function, and each repository's encoder input (snapshot chunk vectors, and for
the evolving track the per-commit chunk diffs), read with the same steps as the CLI."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from evo_state.diff import commit_chunk_diff
from evo_state.store import open_store
from repo2lora.models.loading import LoadedModel
from repo2lora.snapshot import RepoContext, SnapshotConfig, encode_snapshot, open_context
from repo2lora.tasks.miner import AssertionTask, MinerConfig, mine, mine_added
from repo2lora.training.data import RepoEncoding
from repo_encoder.names import NameIndex
from repo_encoder.snapshot import resolve_commit


@dataclass
class RepoData:
    """One repository's encoder input and its tasks (static: mined at the snapshot commit;
    evolving: the assertions each commit adds, by commit index; one or the other)."""

    name: str
    encoding: RepoEncoding
    static_tasks: list[AssertionTask] = field(default_factory=list)
    evo_tasks: list[tuple[int, AssertionTask]] = field(default_factory=list)


def in_repo_split(task: AssertionTask, test_share: float = 0.5, seed: int = 0) -> str:
    """ "train" or "test" for a task, decided by its test function (never split a function)."""
    key = f"{seed}:{task.repo}:{task.path}:{task.test_qualname}".encode()
    u = int(hashlib.sha256(key).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if u < test_share else "train"


def repo_context(
    path: str | Path, model: LoadedModel, config: SnapshotConfig | None = None
) -> RepoContext:
    """The context training and the benchmark read and encode a repository with: the loaded
    base model and no hypernetwork (each method brings its own)."""
    return open_context(path, config=config, loaded_model=model, with_hypernet=False)


def encode_repo(
    path: str | Path,
    model: LoadedModel,
    *,
    rev: str = "HEAD",
    evolving_from: str | None = None,
    config: SnapshotConfig | None = None,
    miner: MinerConfig | None = None,
    name: str | None = None,
) -> RepoData:
    """Encode one repository. Static: the snapshot of `rev`. Evolving (`evolving_from` set):
    the snapshot of that commit, then every first-parent commit up to `rev` as a chunk diff,
    with the assertions each commit adds as its tasks."""
    cfg = config or SnapshotConfig()
    mcfg = miner or MinerConfig(exclusion=cfg.exclusion)
    ctx = repo_context(path, model, cfg)
    repo = ctx.repo
    label = name or Path(ctx.root).name
    target = resolve_commit(repo, rev)
    start = resolve_commit(repo, evolving_from) if evolving_from else target
    with open_store(ctx.root) as store:
        snap = encode_snapshot(ctx, store, start)
        names = NameIndex.of(snap.chunks)
        texts = [c.text for c in snap.chunks]
        enc = RepoEncoding(
            label, snap.encoded.vectors, commits=[start.hexsha], names=[names], texts=texts
        )
        data = RepoData(label, enc)
        if not evolving_from:  # an evolving read's tasks are the walk's
            data.static_tasks = mine(repo, target, mcfg, repo_name=label).tasks
        if evolving_from:
            out = repo.git.rev_list(
                "--first-parent", "--reverse", f"{start.hexsha}..{target.hexsha}"
            )
            prev = start.hexsha
            for i, sha in enumerate(out.split() if out else [], start=1):
                diff = commit_chunk_diff(repo, prev, sha, cfg.exclusion, cfg.chunker)
                enc.diffs.append(ctx.encode_diff(store, diff))
                enc.commits.append(sha)
                names = names.copy()
                names.apply(diff.brought_in, diff.taken_out)
                enc.names.append(names)
                data.evo_tasks += [
                    (i, t) for t in mine_added(repo, sha, mcfg, repo_name=label).tasks
                ]
                prev = sha
    return data
