"""One commit -> one adapter through a generator that keeps no stored state (SHINE reads the
chunks' text with the base model, DnD decodes the chunk vectors): written where the Code2LoRA
adapters go, with nothing added to the state history. What `repo2lora snapshot --generator
shine|dnd` and the benchmark call."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from evo_state.store import open_store
from repo2lora.adapters.weights import LoraWeights
from repo2lora.hypernet.checkpoint import (
    LoadedGenerator,
    build_hypernet,
    check_generator_kind,
    load_generator,
)
from repo2lora.hypernet.protocol import Generator, SnapshotInput, snapshot_adapter
from repo2lora.models.loading import BaseModelInfo, LoadedModel, load_base_model
from repo2lora.snapshot import (
    STATIC_KIND,
    SnapshotConfig,
    adapter_dir,
    encode_snapshot,
    open_context,
    save_adapter,
)
from repo2lora.training.dnd_trainer import default_dnd_config
from repo2lora.training.shared import TrainConfig
from repo2lora.training.shine_trainer import default_shine_config
from repo_encoder.chunker import chunk_files
from repo_encoder.errors import UserError
from repo_encoder.snapshot import read_snapshot, resolve_commit


@dataclass
class RepoAdapter:
    """A generated adapter for one repository commit, and what it cost."""

    commit: str
    generator: str
    weights: LoraWeights
    adapter_dir: str | None
    seconds: dict[str, float]  # "read" (git + chunking or vectors), "generate" (the generator)
    inputs: int  # chunks read (SHINE: those that fit the context budget are fewer)


def repo_adapter(
    path: str | Path,
    base: LoadedModel,
    net: Generator,
    out_dir: str | Path | None = None,
    rev: str = "HEAD",
    config: SnapshotConfig | None = None,
) -> RepoAdapter:
    """The adapter of `rev` of the repository at `path` (written as a PEFT directory, with its
    provenance, when `out_dir` is given). The generator sees what a snapshot sees (the same
    exclusion): the chunks' text, or their vectors from the repository's vector cache
    (`.repo2lora/state.db`, the rest encoded by the base model)."""
    t = time.perf_counter()
    ctx = open_context(path, config=config, loaded_model=base, with_hypernet=False)
    commit = resolve_commit(ctx.repo, rev)
    if net.reads_texts:
        cfg = ctx.config
        snap = read_snapshot(ctx.repo, commit, cfg.exclusion, cfg.chunker.max_file_bytes)
        chunks = chunk_files(snap.files, cfg.chunker).chunks
        inputs = SnapshotInput(chunks=chunks, base_model=base.model, tokenizer=base.tokenizer)
        n = len(chunks)
    else:
        with open_store(ctx.root) as store:
            vectors = encode_snapshot(ctx, store, commit).encoded.vectors
        inputs = SnapshotInput(vectors=vectors)
        n = int(vectors.shape[0])
    read = time.perf_counter() - t
    t = time.perf_counter()
    weights = snapshot_adapter(net, inputs)
    seconds = {"read": read, "generate": time.perf_counter() - t}
    name = net.generator_name
    if out_dir is not None:
        prov: dict[str, object] = {"commit": commit.hexsha, "kind": "static", "generator": name}
        save_adapter(weights, out_dir, base.info, prov)
    written = str(out_dir) if out_dir is not None else None
    return RepoAdapter(commit.hexsha, name, weights, written, seconds, n)


def stateless_checkpoint(
    info: BaseModelInfo,
    hypernet: str,
    generator: str | None,
    target_modules: tuple[str, ...] | None = None,
) -> LoadedGenerator[Generator]:
    """The `--hypernet` checkpoint a stateless snapshot uses (of the `--generator` kind, when
    both are given)."""
    if generator is not None:
        check_generator_kind(hypernet, generator)
    loaded = load_generator(hypernet, info, target_modules)
    if loaded.net.stores_state:  # a card that said shine/dnd but built something else
        raise UserError(f"{hypernet} is not a shine or dnd checkpoint")
    return loaded


def untrained_stateless(
    base: LoadedModel, generator: str | None, target_modules: tuple[str, ...] | None = None
) -> LoadedGenerator[Generator]:
    """An untrained SHINE or DnD generator for `base`, seeded (the same every run)."""
    choice = target_modules or TrainConfig.target_modules
    tcfg = TrainConfig(generator=str(generator), target_modules=choice)
    arch = (default_shine_config if generator == "shine" else default_dnd_config)(base, tcfg)
    net = build_hypernet(arch, base.info)
    return LoadedGenerator(
        net=net,
        key=f"untrained-{generator}-{net.cfg.digest()[:12]}",
        description=f"UNTRAINED {generator} generator (seeded init)",
        untrained=True,
    )


@dataclass
class StatelessSnapshotResult:
    repo_root: str
    commit: str
    generator: str
    inputs: int
    seconds: dict[str, float]
    base_model: str
    base_model_untrained: bool
    hypernet: str
    hypernet_key: str
    hypernet_untrained: bool
    adapter_path: str | None
    weights: LoraWeights | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, object]:
        out = {k: v for k, v in self.__dict__.items() if k != "weights"}
        out["seconds"] = {k: round(v, 4) for k, v in self.seconds.items()}
        return out


def snapshot_stateless(
    path: str | Path,
    rev: str = "HEAD",
    *,
    model: str | None = None,
    hypernet: str | None = None,
    generator: str | None = None,
    config: SnapshotConfig | None = None,
    target_modules: tuple[str, ...] | None = None,
) -> StatelessSnapshotResult:
    """`repo2lora snapshot` with a SHINE or DnD generator: one adapter of `rev`, written under
    `<repo>/.repo2lora/adapters/` (nothing is added to the state history)."""
    ctx = open_context(path, model=model, config=config, with_hypernet=False)
    commit = resolve_commit(ctx.repo, rev).hexsha
    info = ctx.base
    if hypernet:
        loaded = stateless_checkpoint(info, hypernet, generator, target_modules)
        base = load_base_model(info)
    else:
        base = load_base_model(info)
        loaded = untrained_stateless(base, generator, target_modules)
    loaded.net.eval()
    out = adapter_dir(ctx.root, commit, loaded.key, STATIC_KIND)
    res = repo_adapter(path, base, loaded.net, out_dir=out, rev=commit, config=config)
    return StatelessSnapshotResult(
        repo_root=ctx.root,
        commit=res.commit,
        generator=res.generator,
        inputs=res.inputs,
        seconds=res.seconds,
        base_model=info.description,
        base_model_untrained=info.untrained,
        hypernet=loaded.description,
        hypernet_key=loaded.key,
        hypernet_untrained=loaded.untrained,
        adapter_path=res.adapter_dir,
        weights=res.weights,
    )
