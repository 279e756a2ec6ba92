"""Code2LoRA-Static end to end: one commit of a repository -> chunks -> cached chunk vectors ->
hypernetwork state -> LoRA adapter (a PEFT directory) -> one stored state step."""

from __future__ import annotations

import collections
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import git
import numpy as np
import torch

from evo_state.diff import ChunkDiff
from evo_state.state_dir import state_writes
from evo_state.store import Store, open_store
from repo2lora.adapters.peft_dir import save_peft_adapter
from repo2lora.adapters.weights import LoraWeights
from repo2lora.hypernet.checkpoint import LoadedHypernet, load_hypernet
from repo2lora.hypernet.name_memory import NameInput, NameProbe
from repo2lora.hypernet.protocol import DiffInput
from repo2lora.models.loading import (
    BaseModelInfo,
    LoadedModel,
    describe_base_model,
    load_base_model,
)
from repo2lora.progress import ProgressFn, no_progress
from repo_encoder.chunk import Chunk
from repo_encoder.chunker import ChunkerConfig, chunk_files, chunk_source
from repo_encoder.embed import EmbedConfig, embed_texts
from repo_encoder.exclusion import ExclusionConfig
from repo_encoder.names import NameIndex
from repo_encoder.snapshot import open_repository, read_snapshot, resolve_commit

STATIC_KIND = "static"
ENCODE_FLUSH = 256  # vectors are stored every this many chunks, so a killed run keeps its work


@dataclass(frozen=True)
class SnapshotConfig:
    """Everything that decides what a snapshot sees and how it is encoded."""

    exclusion: ExclusionConfig = field(default_factory=ExclusionConfig)
    chunker: ChunkerConfig = field(default_factory=ChunkerConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)


@dataclass
class SnapshotResult:
    repo_root: str
    commit: str
    files: int
    chunks: int
    unique_chunks: int
    cache_hits: int
    encoded: int
    skipped: dict[str, int]
    seconds: dict[str, float]
    base_model: str
    base_model_untrained: bool
    model_key: str
    hypernet: str
    hypernet_key: str
    hypernet_untrained: bool
    adapter_path: str
    state_dim: int
    weights: LoraWeights | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if k != "weights"}


@dataclass
class EncodedChunks:
    """Vectors for a chunk list, in its order ([n, hidden] float32), and how they were got."""

    vectors: torch.Tensor
    cache_hits: int
    encoded: int
    unique: int


def encode_chunks(
    chunks: list[Chunk],
    store: Store,
    base: BaseModelInfo,
    load_model: Callable[[], LoadedModel],
    embed: EmbedConfig,
    progress: ProgressFn = no_progress,
) -> EncodedChunks:
    """Chunk vectors, from the store's cache where present, else from the frozen base model
    (loaded only when something is missing), stored as they are made."""
    hashes = [c.content_hash for c in chunks]
    cached = store.get_vectors(base.model_key, hashes)
    text_of: dict[str, str] = {}
    for c in chunks:
        if c.content_hash not in cached:
            text_of.setdefault(c.content_hash, c.text)
    missing = list(text_of)
    unique = len(set(hashes))
    if missing:
        loaded = load_model()
        done = 0

        def tick(n: int) -> None:
            nonlocal done
            done += n
            progress("encode", done, len(missing))

        progress("encode", 0, len(missing))
        for start in range(0, len(missing), ENCODE_FLUSH):
            part = missing[start : start + ENCODE_FLUSH]
            vecs = embed_texts(
                loaded.model, loaded.tokenizer, [text_of[h] for h in part], embed, tick
            )
            fresh = {h: vecs[i].numpy() for i, h in enumerate(part)}
            store.put_vectors(base.model_key, fresh)
            cached.update(fresh)
    dim = int(base.config.hidden_size)
    mat = np.zeros((len(chunks), dim), dtype=np.float32)
    for i, h in enumerate(hashes):
        mat[i] = cached[h]
    return EncodedChunks(torch.from_numpy(mat), unique - len(missing), len(missing), unique)


def adapter_dir(repo_root: str | Path, commit: str, hypernet_key: str, kind: str) -> Path:
    return Path(repo_root) / ".repo2lora" / "adapters" / f"{kind}-{commit[:12]}-{hypernet_key}"


@dataclass
class RepoContext:
    """What every step over one repository needs: the repository, the resolved base model
    and hypernetwork, the settings, and the model weights, loaded on first use only."""

    repo: git.Repo
    root: str
    base: BaseModelInfo
    loaded_hyper: LoadedHypernet | None  # None: a context that only reads and encodes
    config: SnapshotConfig
    progress: ProgressFn
    loaded: LoadedModel | None = None
    probe: NameProbe | None = None
    # the chunk texts a names memory reads uses in (kept by the server across updates)
    code: CodeTexts = field(default_factory=lambda: CodeTexts())

    @property
    def hyper(self) -> LoadedHypernet:
        """The hypernetwork that pools states and generates adapters."""
        if self.loaded_hyper is None:
            raise RuntimeError("this context was opened without a hypernetwork")
        return self.loaded_hyper

    def model(self) -> LoadedModel:
        if self.loaded is None:
            self.loaded = load_base_model(self.base)
        return self.loaded

    def encode_diff(self, store: Store, diff: ChunkDiff) -> DiffInput:
        """A chunk diff as the evolving state's step reads it: the vectors of what it brings
        in (added chunks, the new side of modified ones) [n_in, d], of what it takes out
        (removed chunks, the old side of modified ones) [n_out, d], and its counts (added,
        removed, modified)."""
        brought_in, taken_out = diff.brought_in, diff.taken_out
        vectors = self.encode(store, brought_in + taken_out).vectors
        n_in = len(brought_in)
        counts = (len(diff.added), len(diff.removed), len(diff.modified))
        return vectors[:n_in], vectors[n_in:], counts

    def encode(self, store: Store, chunks: list[Chunk]) -> EncodedChunks:
        return encode_chunks(chunks, store, self.base, self.model, self.config.embed, self.progress)

    def name_input(
        self,
        names: NameIndex | None,
        commit: str | None = None,
        texts: Sequence[str] | None = None,
    ) -> NameInput | None:
        """What a names generator reads of `names` (None when the generator reads none), and,
        for one that reads how the code uses them, the chunk texts: `texts`, else `commit`'s."""
        net = self.hyper.net
        if names is None or not net.reads_names:
            return None
        if self.probe is None:
            loaded = self.model()
            self.probe = net.name_probe(loaded.model, loaded.tokenizer)
        assert self.probe is not None  # a generator that reads names has a probe
        if not net.reads_uses:
            texts = ()
        elif texts is None:
            texts = self.texts_at(self.repo.commit(commit)) if commit else ()
        return NameInput(names.names(), self.probe, texts)

    def keep_texts(
        self,
        sha: str,
        chunks: list[Chunk] | None,
        diff: ChunkDiff | None = None,
        prev: str | None = None,
    ) -> None:
        """Remember `sha`'s chunk texts for `texts_at`: a snapshot's `chunks`, or `prev`'s
        texts moved by the chunk `diff` (when `prev`'s are remembered; O(diff)). Only for a
        generator that reads them."""
        if not self.hyper.net.reads_uses:
            return
        before = self.code.of(prev) if prev is not None else None
        if chunks is not None:
            self.code.remember(sha, [c.text for c in chunks])
        elif diff is not None and before is not None:
            self.code.remember(sha, moved_texts(before, diff))

    def texts_at(self, commit: git.Commit) -> list[str]:
        """The chunk texts `commit`'s encoder-visible files hold: remembered (`keep_texts`),
        else read afresh (no encoding), a file whose content was chunked before not chunked
        again."""
        known = self.code.of(commit.hexsha)
        if known is not None:
            return known
        cfg = self.config
        snap = read_snapshot(self.repo, commit, cfg.exclusion, cfg.chunker.max_file_bytes)
        out = [t for path, data in snap.files for t in self.code.file(path, data, cfg.chunker)]
        self.code.remember(commit.hexsha, out)
        return out

    def names_at(self, commit: git.Commit) -> NameIndex:
        """The names `commit` defines, read and chunked afresh (no encoding)."""
        cfg = self.config
        snap = read_snapshot(self.repo, commit, cfg.exclusion, cfg.chunker.max_file_bytes)
        return NameIndex.of(chunk_files(snap.files, cfg.chunker).chunks)


class CodeTexts:
    """A repository's chunk texts as a names memory reads its names' uses in: each file content
    chunked once, and the texts of the last two commits (a commit's are its parent's moved by
    the chunk diff, `moved_texts`). The server keeps one across updates, so a commit costs its
    diff."""

    def __init__(self) -> None:
        self._files: dict[tuple[str, int, bytes], list[str]] = {}
        self._commits: dict[str, list[str]] = {}

    def of(self, sha: str) -> list[str] | None:
        return self._commits.get(sha)

    @property
    def files_chunked(self) -> int:
        return len(self._files)

    def remember(self, sha: str, texts: list[str]) -> None:
        self._commits[sha] = texts
        while len(self._commits) > 2:
            del self._commits[next(iter(self._commits))]

    def file(self, path: str, data: bytes, config: ChunkerConfig) -> list[str]:
        """The chunk texts of one file (chunked once per content, while it is in a commit
        remembered or read since)."""
        key = (path, len(data), hashlib.blake2b(data, digest_size=16).digest())
        if key not in self._files:
            if len(self._files) > 200_000:
                self._files.clear()
            self._files[key] = [c.text for c in chunk_source(path, data, config).chunks]
        return self._files[key]


def moved_texts(texts: list[str], diff: ChunkDiff) -> list[str]:
    """`texts` without the diff's old chunks' texts (once each) and with its new ones'."""
    gone = collections.Counter(c.text for c in diff.taken_out)
    out = [c.text for c in diff.brought_in]
    for text in texts:
        if gone[text] > 0:
            gone[text] -= 1
        else:
            out.append(text)
    return out


def open_context(
    path: str | Path,
    *,
    model: str | None = None,
    hypernet: str | None = None,
    config: SnapshotConfig | None = None,
    progress: ProgressFn = no_progress,
    loaded_model: LoadedModel | None = None,
    loaded_hypernet: LoadedHypernet | None = None,
    with_hypernet: bool = True,
    target_modules: tuple[str, ...] | None = None,
    generator: str | None = None,
    name_probe: NameProbe | None = None,
    code_texts: CodeTexts | None = None,
) -> RepoContext:
    """Resolve the repository, base model and hypernetwork (raising UserError for bad input)
    before anything is written. A loaded model/hypernetwork may be passed in (the server keeps
    them); otherwise the model's weights are loaded only if some chunk needs encoding. Without
    `with_hypernet` the context only reads and encodes chunks (no hypernetwork is loaded).
    `target_modules` (`--target-modules`): the untrained default adapts those, and a
    checkpoint must have been trained for them. `generator`: which default stands in for a
    missing `hypernet` (`load_hypernet`). `name_probe`: a names generator's probe of the loaded
    model kept from earlier steps (the server's), so names read before are not read again;
    `code_texts` likewise, the chunk texts a names memory reads uses in."""
    repo = open_repository(path)
    base = loaded_model.info if loaded_model is not None else describe_base_model(model)
    hyper = loaded_hypernet
    if hyper is None and with_hypernet:
        hyper = load_hypernet(hypernet, base, target_modules, generator)
    return RepoContext(
        repo=repo,
        root=str(repo.working_tree_dir),
        base=base,
        loaded_hyper=hyper,
        config=config or SnapshotConfig(),
        progress=progress,
        loaded=loaded_model,
        probe=name_probe,
        code=code_texts if code_texts is not None else CodeTexts(),
    )


@dataclass
class SnapshotEncoding:
    """A commit's encoder-visible chunks and their vectors (`snapshot_state` pools them)."""

    chunks: list[Chunk]
    files: int
    skipped: dict[str, int]
    encoded: EncodedChunks
    seconds: dict[str, float]


def encode_snapshot(ctx: RepoContext, store: Store, commit: git.Commit) -> SnapshotEncoding:
    """Read `commit` from git objects, chunk it and encode the chunks (cached)."""
    seconds = {}
    t = time.perf_counter()
    cfg = ctx.config
    snap = read_snapshot(ctx.repo, commit, cfg.exclusion, cfg.chunker.max_file_bytes)
    seconds["read"] = time.perf_counter() - t
    t = time.perf_counter()
    ctx.progress("chunk", 0, len(snap.files))
    chunked = chunk_files(snap.files, cfg.chunker)
    ctx.progress("chunk", len(snap.files), len(snap.files))
    seconds["chunk"] = time.perf_counter() - t
    t = time.perf_counter()
    enc = ctx.encode(store, chunked.chunks)
    seconds["encode"] = time.perf_counter() - t
    counts = snap.counts + chunked.counts
    skipped = {k: v for k, v in counts.items() if k.startswith(("skipped", "fallback"))}
    return SnapshotEncoding(chunked.chunks, len(snap.files), skipped, enc, seconds)


def snapshot_state(ctx: RepoContext, snap: SnapshotEncoding) -> torch.Tensor:
    """h_0: the hypernetwork's pooled state of an encoded snapshot [state_dim] (its seconds
    are added to the snapshot's as "pool")."""
    t = time.perf_counter()
    with torch.no_grad():
        state = ctx.hyper.net.encode(snap.encoded.vectors)
    snap.seconds["pool"] = time.perf_counter() - t
    return state


def write_adapter(
    ctx: RepoContext,
    store: Store,
    commit: str,
    state: torch.Tensor,
    kind: str,
    out: Path | None = None,
    names: NameIndex | None = None,
    texts: Sequence[str] | None = None,
) -> tuple[Path, LoraWeights]:
    """Generate the adapter for `state` (and the repository's `names`, for a generator that
    reads them, with the chunk `texts` where they are used: `commit`'s when not given) and
    write it as a PEFT directory (atomically)."""
    with torch.no_grad():
        weights = ctx.hyper.net.generate(state, ctx.name_input(names, commit, texts)).detached()
    out = out or adapter_dir(ctx.root, commit, ctx.hyper.key, kind)
    with state_writes(store.where):
        save_adapter(
            weights,
            out,
            ctx.base,
            {
                "commit": commit,
                "kind": kind,
                "generator": ctx.hyper.net.generator_name,
                "hypernet_key": ctx.hyper.key,
            },
        )
    return out, weights


def save_adapter(
    weights: LoraWeights, out: str | Path, base: BaseModelInfo, provenance: dict[str, object]
) -> None:
    """A PEFT adapter directory (written atomically) whose provenance also names the base
    model it was generated for."""
    save_peft_adapter(
        weights,
        out,
        str(base.model_dir) if base.model_dir else base.spec,
        provenance={
            **provenance,
            "base_model": base.spec,
            "base_model_identity": base.identity,
            "model_key": base.model_key,
        },
    )


def record_step(
    store: Store,
    ctx: RepoContext,
    commit: git.Commit,
    state: torch.Tensor,
    kind: str,
    stats: dict[str, object],
    chunks: list[Chunk] | None = None,
    adapter_path: Path | None = None,
    names: NameIndex | None = None,
) -> None:
    """Store one state step (commit row, state, optional chunk list, adapter and names): one
    transaction."""
    summary = commit.summary if isinstance(commit.summary, str) else commit.summary.decode()
    store.record_state(
        commit=commit.hexsha,
        parents=[p.hexsha for p in commit.parents],
        authored_at=int(commit.authored_date),
        summary=summary,
        chunks=chunks,
        hypernet_key=ctx.hyper.key,
        kind=kind,
        model_key=ctx.base.model_key,
        vector=state.detach().numpy(),
        stats=stats,
        adapter_path=str(adapter_path) if adapter_path is not None else None,
        names=names.to_bytes() if names is not None else None,
    )


def snapshot_repository(
    path: str | Path,
    rev: str = "HEAD",
    *,
    model: str | None = None,
    hypernet: str | None = None,
    config: SnapshotConfig | None = None,
    progress: ProgressFn = no_progress,
    loaded_model: LoadedModel | None = None,
    loaded_hypernet: LoadedHypernet | None = None,
    target_modules: tuple[str, ...] | None = None,
    generator: str | None = None,
) -> SnapshotResult:
    """Snapshot `rev` of the repository at `path` into a stored state and a PEFT adapter."""
    t0 = time.perf_counter()
    ctx = open_context(
        path,
        model=model,
        hypernet=hypernet,
        config=config,
        progress=progress,
        loaded_model=loaded_model,
        loaded_hypernet=loaded_hypernet,
        target_modules=target_modules,
        generator=generator,
    )
    commit = resolve_commit(ctx.repo, rev)
    seconds = {"resolve": time.perf_counter() - t0}
    with open_store(ctx.root) as store:
        snap = encode_snapshot(ctx, store, commit)
        state = snapshot_state(ctx, snap)
        seconds.update(snap.seconds)
        t = time.perf_counter()
        names = NameIndex.of(snap.chunks) if ctx.hyper.net.reads_names else None
        ctx.keep_texts(commit.hexsha, snap.chunks)  # what its names' uses are read in
        out, weights = write_adapter(ctx, store, commit.hexsha, state, STATIC_KIND, names=names)
        seconds["generate"] = time.perf_counter() - t
        t = time.perf_counter()
        stats: dict[str, object] = {"files": snap.files, "chunks": len(snap.chunks), **snap.skipped}
        record_step(store, ctx, commit, state, STATIC_KIND, stats, snap.chunks, out, names)
        seconds["store"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t0
    base, hyper, enc = ctx.base, ctx.hyper, snap.encoded
    return SnapshotResult(
        repo_root=ctx.root,
        commit=commit.hexsha,
        files=snap.files,
        chunks=len(snap.chunks),
        unique_chunks=enc.unique,
        cache_hits=enc.cache_hits,
        encoded=enc.encoded,
        skipped=snap.skipped,
        seconds={k: round(v, 4) for k, v in seconds.items()},
        base_model=base.description,
        base_model_untrained=base.untrained,
        model_key=base.model_key,
        hypernet=hyper.description,
        hypernet_key=hyper.key,
        hypernet_untrained=hyper.untrained,
        adapter_path=str(out),
        state_dim=int(state.shape[0]),
        weights=weights,
    )
