"""Following a repository's history: move its stored state along the commits one at a time,
resuming from the nearest ancestor that has one, and write the adapter of the target commit
(or of the uncommitted work tree, transiently). The state is either the evolving one
(h_t = GRU(h_{t-1}, diff_t); a snapshot the same network made is its h_0, so a walk resumes
from it too) or the static state of every commit, its pooling sums moved exactly by each diff;
which one follows is the hypernetwork's (or the embedded default's card's) choice."""

from __future__ import annotations

import collections
import functools
import time
from dataclasses import dataclass, field
from pathlib import Path

import git
import torch

from evo_state.diff import ChunkDiff, commit_chunk_diff, worktree_chunk_diff
from evo_state.history import ancestors
from evo_state.store import StateRecord, Store, open_store
from repo2lora.adapters.weights import LoraWeights
from repo2lora.hypernet.checkpoint import LoadedHypernet, load_history_hypernet
from repo2lora.hypernet.name_memory import NameProbe
from repo2lora.hypernet.pool_sums import PoolSums, apply_diff, state_of, sums_of
from repo2lora.hypernet.static import StaticHypernet
from repo2lora.models.loading import LoadedModel, describe_base_model
from repo2lora.progress import ProgressFn, no_progress
from repo2lora.snapshot import (
    STATIC_KIND,
    CodeTexts,
    RepoContext,
    SnapshotConfig,
    adapter_dir,
    encode_snapshot,
    moved_texts,
    open_context,
    record_step,
    snapshot_state,
    write_adapter,
)
from repo_encoder.errors import UserError
from repo_encoder.names import NameIndex
from repo_encoder.snapshot import resolve_commit

EVO_KIND = "evo"
WORKTREE_KIND = "worktree"


@dataclass(frozen=True)
class UpdateConfig:
    """How history is followed. `max_replay`: a target further than this many commits from
    the nearest stored state starts from a fresh snapshot instead of replaying them."""

    snapshot: SnapshotConfig = field(default_factory=SnapshotConfig)
    first_parent: bool = True
    max_replay: int = 200


@dataclass
class StepReport:
    commit: str
    source: str  # "snapshot" (h_0) or "diff" (a GRU step from `base`)
    base: str | None
    added: int
    removed: int
    modified: int
    files: int
    seconds: float


@dataclass
class UpdateResult:
    repo_root: str
    target: str
    resumed_from: str | None  # the stored state the walk started from (None: a fresh snapshot)
    steps: list[StepReport]
    adapter_path: str
    worktree: StepReport | None
    seconds: float
    base_model_untrained: bool
    hypernet_untrained: bool
    hypernet_key: str
    hypernet: str  # what the hypernetwork is (its description)
    followed: str  # the state that followed history: "evo" (evolving) or "static" (every commit)
    # the adapter at adapter_path, when this run wrote it (None: an unchanged one was reused)
    weights: LoraWeights | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, object]:
        d = {k: v for k, v in self.__dict__.items() if k != "weights"}
        d["steps"] = [s.__dict__ for s in self.steps]
        d["worktree"] = self.worktree.__dict__ if self.worktree else None
        return d


def _evo_net(ctx: RepoContext) -> StaticHypernet:
    net = ctx.hyper.net
    if not net.stateful:
        raise UserError(
            f"{ctx.hyper.description} is a {net.generator_name} generator; following history "
            "needs a code2lora-evo checkpoint (or none, for the default)"
        )
    return net


def follows_static(hyper: LoadedHypernet) -> bool:
    """Whether `update` follows history with `hyper` by its static state at every commit
    rather than by its evolving state: as it was loaded to be followed
    (`load_history_hypernet`), else when it has no GRU step."""
    if hyper.follows_static is not None:
        return hyper.follows_static
    return not hyper.net.stateful


def followed_kind(hyper: LoadedHypernet) -> str:
    """The kind of state (and adapter) `update` stores for `hyper`."""
    return STATIC_KIND if follows_static(hyper) else EVO_KIND


def start_state(store: Store, commit: str, hypernet_key: str) -> StateRecord | None:
    """The state a walk may start from at `commit`: the evolving state there, or else the
    snapshot the same network made of it (its encoder's h_0)."""
    return store.get_state(commit, hypernet_key, EVO_KIND) or store.get_state(
        commit, hypernet_key, STATIC_KIND
    )


def _step(ctx: RepoContext, store: Store, h: torch.Tensor, diff: ChunkDiff) -> torch.Tensor:
    """h_{t-1} -> h_t for one chunk diff (vectors from the cache, new chunks encoded)."""
    with torch.no_grad():
        return _evo_net(ctx).step(h, *ctx.encode_diff(store, diff))


def stored_names(ctx: RepoContext, store: Store, commit: str) -> NameIndex:
    """The names `commit` defines: as its stored step left them, or read afresh (a state
    stored before names were kept)."""
    data = store.get_names(commit)
    found = NameIndex.from_bytes(data) if data is not None else None
    return found if found is not None else ctx.names_at(ctx.repo.commit(commit))


def plan_walk(
    ctx: RepoContext, store: Store, target: str, config: UpdateConfig, start: str | None
) -> tuple[str | None, list[str]]:
    """(commit whose stored state the walk starts from or None for a fresh snapshot, the
    commits to apply in order). History is a DAG: the start is the nearest ancestor of
    `target` with a state, within `max_replay` commits."""
    repo, key = ctx.repo, ctx.hyper.key
    if start is not None:
        if start_state(store, start, key) is None:
            return None, [start, *_path(repo, start, target, config)]
        return start, _path(repo, start, target, config)
    chain = ancestors(repo, target, config.max_replay, config.first_parent)
    stored = store.states_among(chain, key, EVO_KIND) | store.states_among(chain, key, STATIC_KIND)
    for i, sha in enumerate(chain):
        if sha in stored:
            if i == 0:
                return sha, []
            return sha, _path(repo, sha, target, config)
    return None, [target]


def _int(stats: dict[str, object], key: str) -> int:
    value = stats.get(key, 0)
    return int(value) if isinstance(value, int | float) else 0


def _path(repo: git.Repo, base: str, target: str, config: UpdateConfig) -> list[str]:
    """Commits after `base` up to `target`, oldest first."""
    args = ["--reverse", "--topo-order", "--ancestry-path", f"{base}..{target}"]
    if config.first_parent:
        args.insert(0, "--first-parent")
    out = repo.git.rev_list(*args)
    return out.split() if out else []


def _start_of(repo: git.Repo, start: str | None, target: git.Commit, rev: str) -> str | None:
    """`--from`'s commit (None without one), refused unless it is an ancestor of the target."""
    if not start:
        return None
    commit = resolve_commit(repo, start)
    if not repo.is_ancestor(commit, target):
        raise UserError(f"--from {start} is not an ancestor of {rev}")
    return commit.hexsha


def _write_worktree(
    ctx: RepoContext,
    store: Store,
    target: str,
    diff: ChunkDiff,
    state: torch.Tensor,
    names: NameIndex | None,
    t: float,
) -> tuple[StepReport, Path, LoraWeights]:
    """The transient adapter of the uncommitted work tree: `state` is the target's moved by the
    work tree's chunk `diff` (started at `t`), and so are its names (for a generator that reads
    them). Nothing is stored but the adapter, in the work tree's own directory."""
    wt_names = None
    wt_texts: list[str] | None = None
    if ctx.hyper.net.reads_names:
        wt_names = (names or stored_names(ctx, store, target)).copy()
        wt_names.apply(diff.brought_in, diff.taken_out)
    if ctx.hyper.net.reads_uses:  # the target's texts moved by the diff
        wt_texts = moved_texts(ctx.texts_at(ctx.repo.commit(target)), diff)
    out, weights = write_adapter(
        ctx,
        store,
        target,
        state,
        WORKTREE_KIND,
        out=Path(ctx.root) / ".repo2lora" / "adapters" / f"worktree-{ctx.hyper.key}",
        names=wt_names,
        texts=wt_texts,
    )
    s = diff.summary()
    report = StepReport(
        "worktree",
        "diff",
        target,
        s["added"],
        s["removed"],
        s["modified"],
        s["files"],
        round(time.perf_counter() - t, 4),
    )
    return report, out, weights


def update_repository(
    path: str | Path,
    rev: str = "HEAD",
    *,
    model: str | None = None,
    hypernet: str | None = None,
    config: UpdateConfig | None = None,
    start: str | None = None,
    worktree: bool = False,
    progress: ProgressFn = no_progress,
    loaded_model: LoadedModel | None = None,
    loaded_hypernet: LoadedHypernet | None = None,
    target_modules: tuple[str, ...] | None = None,
    generator: str | None = None,
    name_probe: NameProbe | None = None,
    static_every_commit: bool | None = None,
    code_texts: CodeTexts | None = None,
) -> UpdateResult:
    """Bring the repository's stored state up to `rev` and write its adapter.

    Which state: with `static_every_commit` true, the static state of every commit, each at the
    cost of its diff (`_update_static`); false, the evolving state (a GRU step per commit);
    None, the one the hypernetwork is followed by (`follows_static`). With neither `hypernet`
    nor `loaded_hypernet`, the network and its state are `load_history_hypernet`'s choice: for
    the embedded default, what its card says follows history best.

    Each commit is one stored step (one transaction), so a run killed at any point resumes
    from the last completed commit. With `start`, the walk begins at that commit (snapshotted
    if it has no state). With `worktree`, the uncommitted edits are folded in as a transient
    step whose adapter is written but whose state is not stored. A generator that reads the
    repository's names keeps them along the walk the same way: the stored names of the start,
    moved by each commit's chunk diff."""
    cfg = config or UpdateConfig()
    t0 = time.perf_counter()
    chooses = static_every_commit is None and generator is None
    if chooses and hypernet is None and loaded_hypernet is None:
        base = loaded_model.info if loaded_model is not None else describe_base_model(model)
        loaded_hypernet = load_history_hypernet(None, base, target_modules)
    ctx = open_context(
        path,
        model=model,
        hypernet=hypernet,
        config=cfg.snapshot,
        progress=progress,
        loaded_model=loaded_model,
        loaded_hypernet=loaded_hypernet,
        target_modules=target_modules,
        generator=generator,
        name_probe=name_probe,
        code_texts=code_texts,
    )
    if static_every_commit is None:
        static_every_commit = follows_static(ctx.hyper)
    if static_every_commit:
        return _update_static(ctx, rev, cfg, start, worktree, progress, t0)
    _evo_net(ctx)
    reads_names = ctx.hyper.net.reads_names
    repo = ctx.repo
    target = resolve_commit(repo, rev)
    start_sha = _start_of(repo, start, target, rev)
    steps: list[StepReport] = []
    with open_store(ctx.root) as store:
        resumed_from, todo = plan_walk(ctx, store, target.hexsha, cfg, start_sha)
        h: torch.Tensor | None = None
        names: NameIndex | None = None
        prev = resumed_from
        if resumed_from is not None:
            rec = start_state(store, resumed_from, ctx.hyper.key)
            assert rec is not None
            h = torch.from_numpy(rec.vector)
            if reads_names:
                names = stored_names(ctx, store, resumed_from)
            if rec.kind != EVO_KIND:  # the network's own snapshot: h_0 of the walk from here
                stats = rec.stats
                adopted = StepReport(
                    resumed_from,
                    "snapshot",
                    None,
                    _int(stats, "chunks"),
                    0,
                    0,
                    _int(stats, "files"),
                    0.0,
                )
                record_step(store, ctx, repo.commit(resumed_from), h, EVO_KIND, adopted.__dict__)
        for i, sha in enumerate(todo):
            progress("update", i, len(todo))
            t = time.perf_counter()
            commit = repo.commit(sha)
            if h is None:  # a fresh start: h_0 is the static encoding of this commit
                snap = encode_snapshot(ctx, store, commit)
                h = snapshot_state(ctx, snap)
                names = NameIndex.of(snap.chunks) if reads_names else None
                ctx.keep_texts(sha, snap.chunks)
                rep = StepReport(sha, "snapshot", None, len(snap.chunks), 0, 0, snap.files, 0.0)
            else:
                diff = commit_chunk_diff(
                    repo, prev, sha, cfg.snapshot.exclusion, cfg.snapshot.chunker
                )
                h = _step(ctx, store, h, diff)
                if names is not None:
                    names.apply(diff.brought_in, diff.taken_out)
                ctx.keep_texts(sha, None, diff, prev)
                s = diff.summary()
                rep = StepReport(
                    sha, "diff", prev, s["added"], s["removed"], s["modified"], s["files"], 0.0
                )
            rep.seconds = round(time.perf_counter() - t, 4)
            # names are stored at the walk's end only: the index is O(names) to write, and a
            # walk resumed from a step without them reads them afresh (`stored_names`)
            last = i == len(todo) - 1
            record_step(
                store, ctx, commit, h, EVO_KIND, dict(rep.__dict__), names=names if last else None
            )
            steps.append(rep)
            prev = sha
        progress("update", len(todo), len(todo))
        assert h is not None
        out = adapter_dir(ctx.root, target.hexsha, ctx.hyper.key, EVO_KIND)
        existing = store.get_adapter(target.hexsha, ctx.hyper.key, EVO_KIND)
        weights = None
        if steps or existing is None or not Path(existing.path).is_dir():
            if reads_names and names is None:  # up to date, but its adapter went missing
                names = stored_names(ctx, store, target.hexsha)
            out, weights = write_adapter(ctx, store, target.hexsha, h, EVO_KIND, names=names)
            store.set_adapter(target.hexsha, ctx.hyper.key, EVO_KIND, str(out))
        wt_report = None
        if worktree:
            t = time.perf_counter()
            diff = worktree_chunk_diff(repo, cfg.snapshot.exclusion, cfg.snapshot.chunker)
            h_wt = _step(ctx, store, h, diff) if not diff.empty else h
            wt_report, out, weights = _write_worktree(
                ctx, store, target.hexsha, diff, h_wt, names, t
            )
    return _result(ctx, target.hexsha, resumed_from, steps, out, wt_report, t0, weights, EVO_KIND)


def _result(
    ctx: RepoContext,
    target: str,
    resumed_from: str | None,
    steps: list[StepReport],
    out: Path,
    worktree: StepReport | None,
    t0: float,
    weights: LoraWeights | None,
    followed: str,
) -> UpdateResult:
    """What an update reports, whichever state it followed."""
    return UpdateResult(
        repo_root=ctx.root,
        target=target,
        resumed_from=resumed_from,
        steps=steps,
        adapter_path=str(out),
        worktree=worktree,
        seconds=round(time.perf_counter() - t0, 4),
        base_model_untrained=ctx.base.untrained,
        hypernet_untrained=ctx.hyper.untrained,
        hypernet_key=ctx.hyper.key,
        hypernet=ctx.hyper.description,
        followed=followed,
        weights=weights,
    )


def _update_static(
    ctx: RepoContext,
    rev: str,
    cfg: UpdateConfig,
    start: str | None,
    worktree: bool,
    progress: ProgressFn,
    t0: float,
) -> UpdateResult:
    """Static at every commit: the network's pooling sums (`hypernet.pool_sums`), stored per
    commit, moved by each commit's chunk diff from the nearest ancestor that has them (or from
    `start`; or computed from a fresh snapshot when none is within `max_replay`), so every
    commit's state equals its fresh snapshot's and costs its diff. Each step stores the sums and
    the state (kind `static`, what `snapshot` stores) in one transaction; the target's adapter
    is the static one. With `worktree`, the work tree's chunk diff moves a copy of the target's
    sums the same way, for a transient adapter. A generator that reads names has them moved
    along too."""
    net = ctx.hyper.net
    encoder, key, repo = net.encoder, ctx.hyper.key, ctx.repo
    target = resolve_commit(repo, rev)
    start_sha = _start_of(repo, start, target, rev)
    steps: list[StepReport] = []
    with open_store(ctx.root) as store:
        resumed_from, todo = _plan_static(ctx, store, target.hexsha, cfg, start_sha)
        sums: PoolSums | None = None
        names: NameIndex | None = None
        if resumed_from is not None:
            data = store.get_pool_sums(resumed_from, key)
            assert data is not None
            sums = PoolSums.from_bytes(data)
            if net.reads_names and todo:
                names = stored_names(ctx, store, resumed_from)
        prev = resumed_from
        for i, sha in enumerate(todo):
            progress("update", i, len(todo))
            t = time.perf_counter()
            commit = repo.commit(sha)
            if sums is None or prev is None:
                snap = encode_snapshot(ctx, store, commit)
                sums = sums_of(encoder, snap.encoded.vectors)
                names = NameIndex.of(snap.chunks) if net.reads_names else None
                ctx.keep_texts(sha, snap.chunks)
                rep = StepReport(sha, "snapshot", None, len(snap.chunks), 0, 0, snap.files, 0.0)
            else:
                diff = commit_chunk_diff(
                    repo, prev, sha, cfg.snapshot.exclusion, cfg.snapshot.chunker
                )
                ctx.keep_texts(sha, None, diff, prev)
                brought_in, taken_out, _ = ctx.encode_diff(store, diff)
                members = functools.partial(_snapshot_vectors, ctx, store, commit)
                sums = apply_diff(encoder, sums, brought_in, taken_out, members)
                if names is not None:
                    names.apply(diff.brought_in, diff.taken_out)
                s = diff.summary()
                rep = StepReport(
                    sha, "diff", prev, s["added"], s["removed"], s["modified"], s["files"], 0.0
                )
            h = state_of(encoder, sums)
            rep.seconds = round(time.perf_counter() - t, 4)
            last = i == len(todo) - 1  # names are stored at the walk's end only, as in evo's
            with store.transaction():  # the sums and the state: one step
                store.put_pool_sums(sha, key, sums.to_bytes())
                record_step(
                    store,
                    ctx,
                    commit,
                    h,
                    STATIC_KIND,
                    dict(rep.__dict__),
                    names=names if last else None,
                )
            steps.append(rep)
            prev = sha
        progress("update", len(todo), len(todo))
        assert sums is not None
        rec = store.get_state(target.hexsha, key, STATIC_KIND)
        assert rec is not None
        existing = store.get_adapter(target.hexsha, key, STATIC_KIND)
        weights = None
        if steps or existing is None or not Path(existing.path).is_dir():
            if net.reads_names and names is None:
                names = stored_names(ctx, store, target.hexsha)
            state = torch.from_numpy(rec.vector)
            out, weights = write_adapter(ctx, store, target.hexsha, state, STATIC_KIND, names=names)
            store.set_adapter(target.hexsha, key, STATIC_KIND, str(out))
        else:
            out = Path(existing.path)
        wt_report = None
        if worktree:
            t = time.perf_counter()
            diff = worktree_chunk_diff(repo, cfg.snapshot.exclusion, cfg.snapshot.chunker)
            if not diff.empty:
                brought_in, taken_out, _ = ctx.encode_diff(store, diff)
                members = functools.partial(_worktree_vectors, ctx, store, target, diff)
                sums = apply_diff(encoder, sums, brought_in, taken_out, members)
            h_wt = state_of(encoder, sums)
            wt_report, out, weights = _write_worktree(
                ctx, store, target.hexsha, diff, h_wt, names, t
            )
    return _result(
        ctx, target.hexsha, resumed_from, steps, out, wt_report, t0, weights, STATIC_KIND
    )


def _plan_static(
    ctx: RepoContext, store: Store, target: str, cfg: UpdateConfig, start: str | None
) -> tuple[str | None, list[str]]:
    """(commit whose stored sums the static walk starts from or None, the commits to apply in
    order): from `start` when given (snapshotted when it has no sums), else from the nearest
    ancestor of `target` with sums within `max_replay` commits, else a fresh snapshot."""
    repo, key = ctx.repo, ctx.hyper.key
    if start is not None:
        if store.get_pool_sums(start, key) is None:
            return None, [start, *_path(repo, start, target, cfg)]
        return start, _path(repo, start, target, cfg)
    chain = ancestors(repo, target, cfg.max_replay, cfg.first_parent)
    stored = store.pool_sums_among(chain, key)
    resumed_from = next((sha for sha in chain if sha in stored), None)
    if resumed_from is None:
        return None, [target]
    return resumed_from, _path(repo, resumed_from, target, cfg)


def _snapshot_vectors(ctx: RepoContext, store: Store, commit: git.Commit) -> torch.Tensor:
    """A commit's chunk vectors, read afresh (cached): what a removed maximum is recomputed
    from."""
    return encode_snapshot(ctx, store, commit).encoded.vectors


def _worktree_vectors(
    ctx: RepoContext, store: Store, commit: git.Commit, diff: ChunkDiff
) -> torch.Tensor:
    """The work tree's chunk vectors: `commit`'s, less those the work tree's `diff` takes out
    (a chunk's vector depends on its content only), plus those it brings in."""
    snap = encode_snapshot(ctx, store, commit)
    gone = collections.Counter(c.content_hash for c in diff.taken_out)
    kept = []
    for i, c in enumerate(snap.chunks):
        if gone[c.content_hash] > 0:
            gone[c.content_hash] -= 1
        else:
            kept.append(i)
    fresh = ctx.encode(store, diff.brought_in).vectors
    return torch.cat([snap.encoded.vectors[kept], fresh])


@dataclass
class LogEntry:
    commit: str
    date: int
    summary: str
    source: str
    added: int
    removed: int
    modified: int
    seconds: float
    adapter: str | None
    hypernet: str
    kind: str  # evo (the evolving state) or static (the static state at every commit)


def state_log(path: str | Path, limit: int = 50, all_hypernets: bool = False) -> list[LogEntry]:
    """The stored states a repository's history was followed with, newest first: those of the
    kind (evolving, or static at every commit) and hypernetwork that stored the newest state,
    or of that kind and every hypernetwork with `all_hypernets`."""
    from repo_encoder.snapshot import open_repository

    repo = open_repository(path)
    with open_store(str(repo.working_tree_dir)) as store:
        newest = store.newest_state_of((EVO_KIND, STATIC_KIND))
        if newest is None:
            return []
        current, kind = newest
        rows = store.evo_log(kind, limit, None if all_hypernets else current)
    out = []
    for r in rows:
        st = r["stats"]
        out.append(
            LogEntry(
                commit=r["commit_sha"],
                date=r["authored_at"],
                summary=r["summary"],
                source=str(st.get("source", "")),
                added=int(st.get("added", 0)),
                removed=int(st.get("removed", 0)),
                modified=int(st.get("modified", 0)),
                seconds=float(st.get("seconds", 0.0)),
                adapter=r["adapter"],
                hypernet=r["hypernet_key"],
                kind=kind,
            )
        )
    return out
