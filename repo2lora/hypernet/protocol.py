"""The one interface every generator implements (code2lora-static, -evo, -names, SHINE, DnD):
encode a snapshot, step a diff (where it has state), generate weights, describe itself; its
capabilities are attributes, so the CLI, the server, training and the benchmark ask a
generator what it can do instead of checking its class. Also the two steps every caller
shares: replaying an evolving state along diffs, and one snapshot's adapter."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from repo2lora.adapters.weights import LoraWeights
from repo2lora.hypernet.name_memory import NameInput, NameProbe
from repo_encoder.chunk import Chunk

# what one diff step reads: vectors brought in [n_in, d], taken out [n_out, d], and the counts
# of added, removed and modified chunks
DiffInput = tuple[torch.Tensor, torch.Tensor, tuple[int, int, int]]


@dataclass
class SnapshotInput:
    """What a generator may read of one snapshot: its chunks (SHINE reads their text), their
    vectors from the frozen base model [n, d] (code2lora and DnD read these), and the loaded base
    model and tokenizer (SHINE reads the text with them)."""

    vectors: torch.Tensor | None = None
    chunks: list[Chunk] = field(default_factory=list)
    base_model: Any = None
    tokenizer: Any = None


class GeneratorSettings(Protocol):
    """What every generator's config records (`config.JsonConfig` gives the JSON and digest)."""

    @property
    def rank(self) -> int: ...
    @property
    def alpha(self) -> int: ...
    @property
    def target_modules(self) -> tuple[str, ...]: ...
    @property
    def seed(self) -> int: ...

    def to_json(self) -> dict[str, object]: ...
    def digest(self) -> str: ...


class Generator(Protocol):
    """A repository encoding -> LoRA weights for every (layer, target module).

    Capabilities (class attributes):
    - `generator_name`: the kind, as checkpoint cards, `--generator` and the benchmark name it;
    - `stateful`: `step` moves the state along a commit's chunk diff (it follows history);
    - `stores_state`: its snapshot state is a vector that the state store keeps, so snapshot,
      update and the server drive it (SHINE and DnD make one adapter per snapshot instead);
    - `reads_names`: `generate` reads the repository's names (`name_probe` makes the probe);
    - `reads_uses`: its names input also carries the snapshot's chunk texts, where the names
      are used (code2lora-names with `names_contexts`);
    - `reads_texts`: `encode_snapshot` reads the chunks' text with the base model, not vectors;
    - `trainer`: which training entry trains it (`repo2lora.train`).
    Saving and loading (`hypernet.checkpoint`) go through `cfg.to_json()` and the module's
    `state_dict` / `load_state_dict`."""

    generator_name: str
    stateful: bool
    stores_state: bool
    reads_names: bool
    reads_uses: bool
    reads_texts: bool
    trainer: str

    @property
    def cfg(self) -> GeneratorSettings: ...

    def encode_snapshot(self, snapshot: SnapshotInput) -> torch.Tensor:
        """The state a snapshot gives (code2lora: the pooled state [state_dim]; DnD: its prompt
        vectors [N, d]; SHINE: the memory tokens' hidden states [L, M, H])."""
        ...

    def step(
        self,
        h: torch.Tensor,
        brought_in: torch.Tensor,
        taken_out: torch.Tensor,
        counts: tuple[int, int, int],
    ) -> torch.Tensor:
        """The state after one commit's chunk diff (only where `stateful`)."""
        ...

    def generate(self, state: torch.Tensor, names: NameInput | None = None) -> LoraWeights:
        """One repository's adapter from its state (and names, where `reads_names`)."""
        ...

    def name_probe(self, base_model: Any, tokenizer: Any) -> NameProbe | None:
        """The probe of the base model its names memory reads through (None: reads none)."""
        ...

    def describe(self) -> dict[str, object]:
        """The kind, its capabilities, parameter count and config, for cards and reports."""
        ...

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...
    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]: ...
    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> Any: ...
    def eval(self) -> Any: ...
    def train(self, mode: bool = True) -> Any: ...


def describe_generator(net: Generator) -> dict[str, object]:
    """`Generator.describe`, written once for every kind."""
    return {
        "generator": net.generator_name,
        "stateful": net.stateful,
        "stores_state": net.stores_state,
        "reads_names": net.reads_names,
        "reads_uses": net.reads_uses,
        "reads_texts": net.reads_texts,
        "trainer": net.trainer,
        "params": sum(p.numel() for p in net.parameters()),
        "config": net.cfg.to_json(),
    }


def replay(net: Generator, h: torch.Tensor, diffs: Iterable[DiffInput]) -> torch.Tensor:
    """The evolving state after each diff in turn, from `h`: the one replay loop that training,
    evaluation and the benchmark share (a generator without state is never stepped: `h`)."""
    if not net.stateful:
        return h
    for diff in diffs:
        h = net.step(h, *diff)
    return h


@torch.no_grad()
def snapshot_adapter(
    net: Generator, snapshot: SnapshotInput, names: NameInput | None = None
) -> LoraWeights:
    """One snapshot's adapter, detached on the CPU: encode, then generate."""
    return net.generate(net.encode_snapshot(snapshot), names).detached()
