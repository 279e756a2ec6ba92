"""A diagnostic beside the scores: how different the adapters a trained generator makes for
different repositories are. Near-identical adapters mean the generator ignores what it reads."""

from __future__ import annotations

from typing import Any

import torch

from benchmark import methods as m
from benchmark.prepare import PreparedRepo
from benchmark.train import Trained
from repo2lora.adapters.weights import LoraWeights
from repo2lora.hypernet.protocol import SnapshotInput, replay
from repo2lora.models.loading import LoadedModel


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
    for name, gen in trained.snapshot_nets.items():
        made = [m.stateless_adapter(gen, base, v.chunks, v.vectors) for v in snaps]
        result[name] = spread(None, made)
    return result
