"""Code2LoRA-Static end to end: one commit of a repository -> chunks -> cached chunk vectors ->
hypernetwork state -> LoRA adapter (a PEFT directory) -> one stored state step."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from evo_state.store import Store, open_store, state_writes
from repo2lora.adapters.peft_dir import save_peft_adapter
from repo2lora.adapters.weights import LoraWeights
from repo2lora.hypernet.checkpoint import LoadedHypernet, load_hypernet
from repo2lora.models.loading import (
    BaseModelInfo,
    LoadedModel,
    describe_base_model,
    load_base_model,
)
from repo2lora.progress import ProgressFn, no_progress
from repo_encoder.chunk import Chunk
from repo_encoder.chunker import ChunkerConfig, chunk_files
from repo_encoder.embed import EmbedConfig, embed_texts
from repo_encoder.exclusion import ExclusionConfig
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
) -> SnapshotResult:
    """Snapshot `rev` of the repository at `path` into a stored state and a PEFT adapter.

    A loaded model/hypernetwork may be passed in (the server keeps them); otherwise they are
    resolved from `model`/`hypernet`, and the model's weights are loaded only if some chunk
    has no cached vector."""
    cfg = config or SnapshotConfig()
    t0 = time.perf_counter()
    seconds: dict[str, float] = {}
    repo = open_repository(path)
    root = str(repo.working_tree_dir)
    commit = resolve_commit(repo, rev)
    base = loaded_model.info if loaded_model is not None else describe_base_model(model)
    hyper = loaded_hypernet if loaded_hypernet is not None else load_hypernet(hypernet, base)
    seconds["resolve"] = time.perf_counter() - t0

    t = time.perf_counter()
    snap = read_snapshot(repo, commit, cfg.exclusion, cfg.chunker.max_file_bytes)
    seconds["read"] = time.perf_counter() - t
    t = time.perf_counter()
    progress("chunk", 0, len(snap.files))
    chunked = chunk_files(snap.files, cfg.chunker)
    progress("chunk", len(snap.files), len(snap.files))
    seconds["chunk"] = time.perf_counter() - t

    with open_store(root) as store:
        t = time.perf_counter()
        enc = encode_chunks(
            chunked.chunks,
            store,
            base,
            (lambda: loaded_model) if loaded_model is not None else (lambda: load_base_model(base)),
            cfg.embed,
            progress,
        )
        seconds["encode"] = time.perf_counter() - t
        t = time.perf_counter()
        with torch.no_grad():
            state = hyper.net.encode(enc.vectors)
            weights = hyper.net.generate(state).detached()
        seconds["generate"] = time.perf_counter() - t
        t = time.perf_counter()
        out = adapter_dir(root, commit.hexsha, hyper.key, STATIC_KIND)
        with state_writes(store.where):
            save_peft_adapter(
                weights,
                out,
                str(base.model_dir) if base.model_dir else base.spec,
                provenance={
                    "commit": commit.hexsha,
                    "kind": STATIC_KIND,
                    "generator": hyper.net.generator_name,
                    "hypernet_key": hyper.key,
                    "base_model": base.spec,
                    "base_model_identity": base.identity,
                    "model_key": base.model_key,
                },
            )
        skipped = {
            k: v
            for k, v in (snap.counts + chunked.counts).items()
            if k.startswith(("skipped", "fallback"))
        }
        store.record_state(
            commit=commit.hexsha,
            parents=[p.hexsha for p in commit.parents],
            authored_at=int(commit.authored_date),
            summary=commit.summary if isinstance(commit.summary, str) else commit.summary.decode(),
            chunks=chunked.chunks,
            hypernet_key=hyper.key,
            kind=STATIC_KIND,
            model_key=base.model_key,
            vector=state.numpy(),
            stats={"files": len(snap.files), "chunks": len(chunked.chunks), **skipped},
            adapter_path=str(out),
        )
        seconds["store"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t0
    return SnapshotResult(
        repo_root=root,
        commit=commit.hexsha,
        files=len(snap.files),
        chunks=len(chunked.chunks),
        unique_chunks=enc.unique,
        cache_hits=enc.cache_hits,
        encoded=enc.encoded,
        skipped=skipped,
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
