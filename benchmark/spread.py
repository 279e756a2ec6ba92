"""A diagnostic beside the scores: how different the adapters a trained generator makes for
different repositories are. Near-identical adapters mean the generator ignores what it reads."""

from __future__ import annotations

from typing import Any

import torch

from benchmark import methods as m
from benchmark.prepare import PreparedRepo
from benchmark.train import Trained
from repo2lora.adapters.weights import LoraWeights
from repo2lora.hypernet.name_memory import NameInput
from repo2lora.hypernet.protocol import SnapshotInput, replay
from repo2lora.models.loading import LoadedModel


def delta_cosine(adapters: list[LoraWeights]) -> float:
    """The mean pairwise cosine of the adapters' weight updates (every module's scaling * B A,
    flattened together): unlike `adapter_cosine` (of the A and B factors), it does not depend on
    how an update is factored (a one-hot B, a rescaled A). Computed from the factors:
    <B1 A1, B2 A2> = sum((B1^T B2) * (A1 A2^T))."""
    n = len(adapters)
    gram = torch.zeros(n, n, dtype=torch.float64)
    for path in adapters[0].tensors:
        factors = []
        for w in adapters:
            a, b = w.tensors[path]
            factors.append((a.double() * w.scaling_for(path), b.double()))
        for i in range(n):
            for j in range(i, n):
                (ai, bi), (aj, bj) = factors[i], factors[j]
                gram[i, j] += float(((bi.T @ bj) * (ai @ aj.T)).sum())
    gram = gram + gram.triu(1).T
    norms = gram.diagonal().clamp(min=1e-30).sqrt()
    sim = gram / (norms[:, None] * norms[None, :])
    return float((sim.sum() - sim.diagonal().sum()) / (n * (n - 1)))


@torch.no_grad()
def adapter_spread(
    trained: Trained, repos: list[PreparedRepo], base: LoadedModel
) -> dict[str, Any]:
    """How different the generated adapters of different repositories are: the mean pairwise
    cosine similarity of their states and of their flattened LoRA weights (static: the HEAD
    snapshot; evo: the state at the end of the walk). Near 1.0 means the hypernetwork makes
    one adapter for every repository, whatever it reads."""

    def mean_cosine(rows: list[torch.Tensor]) -> float:
        x = torch.nn.functional.normalize(torch.stack(rows), dim=1)
        sim = x @ x.T  # [n, n]
        n = sim.shape[0]
        return float((sim.sum() - sim.diagonal().sum()) / (n * (n - 1)))

    def spread(states: list[torch.Tensor] | None, adapters: list[LoraWeights]) -> dict[str, Any]:
        out: dict[str, Any] = {"repos": len(adapters)}
        if len(adapters) < 2:
            return out
        if states is not None:  # SHINE and DnD have no vector state
            out["state_cosine"] = mean_cosine(states)
        out["adapter_cosine"] = mean_cosine([w.flat() for w in adapters])
        out["delta_cosine"] = delta_cosine(adapters)
        return out

    result: dict[str, Any] = {}
    snaps = [r.static for r in repos if r.static is not None]
    if trained.static_net is not None:
        net = trained.static_net
        states = [net.encode_snapshot(SnapshotInput(vectors=v.vectors)) for v in snaps]
        result[m.STATIC] = spread(states, [m.generate_adapter(net, h) for h in states])
    if trained.evo_net is not None:
        evo = trained.evo_net
        finals = []
        for r in repos:
            if r.evo is None:
                continue
            enc = r.evo.data.encoding
            finals.append(replay(evo, evo.encode_snapshot(SnapshotInput(enc.vectors)), enc.diffs))
        result[m.EVO] = spread(finals, [m.generate_adapter(evo, h) for h in finals])
    names_net = trained.names_net
    if names_net is not None:  # the state's LoRA plus the memory's pair on the LM head
        probe = names_net.name_probe(base.model, base.tokenizer)
        assert probe is not None
        held = [(v.vectors, v.names, v.chunks) for v in snaps if v.names is not None]
        states = [names_net.encode_snapshot(SnapshotInput(vectors=x)) for x, _, _ in held]
        made = [
            names_net.generate(
                h, NameInput(index.names(), probe, [c.text for c in chunks])
            ).detached()
            for h, (_, index, chunks) in zip(states, held, strict=True)
        ]
        result[m.NAMES] = spread(states, made)
    for name, gen in trained.snapshot_nets.items():
        made = [m.stateless_adapter(gen, base, v.chunks, v.vectors) for v in snaps]
        result[name] = spread(None, made)
    return result
