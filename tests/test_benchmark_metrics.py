"""The diagnostics' own arithmetic: the spread of weight updates computed from the factors
equals the spread of the updates themselves, whatever the factoring, and the rank correlation
`benchmark.names_selection` reports."""

from __future__ import annotations

import torch

from benchmark.names_selection import spearman
from benchmark.spread import delta_cosine
from repo2lora.adapters.weights import LoraWeights


def _adapter(seed: int, scale_a: float = 1.0) -> LoraWeights:
    g = torch.Generator().manual_seed(seed)
    tensors = {
        f"layers.{i}.q_proj": (
            torch.randn(4, 6, generator=g) * scale_a,
            torch.randn(5, 4, generator=g) / scale_a,
        )
        for i in range(2)
    }
    return LoraWeights(4, 8, ("q_proj",), tensors)


def test_delta_cosine_is_the_cosine_of_the_updates_whatever_their_factors() -> None:
    adapters = [_adapter(s) for s in range(3)]
    flat = [
        torch.cat([(b.double() @ a.double()).flatten() * w.scaling for a, b in w.tensors.values()])
        for w in adapters
    ]
    x = torch.nn.functional.normalize(torch.stack(flat), dim=1)
    expected = float(((x @ x.T).sum() - 3) / 6)
    assert abs(delta_cosine(adapters) - expected) < 1e-9
    # A scaled up and B down: the same updates (to float32 rounding), so the same spread
    rescaled = [_adapter(0, 10.0), _adapter(1), _adapter(2)]
    assert abs(delta_cosine(rescaled) - expected) < 1e-6
    assert abs(delta_cosine([_adapter(0), _adapter(0)]) - 1.0) < 1e-9


def test_spearman_ranks_with_ties() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    assert spearman([1, 1, 2], [5, 5, 6]) == 1.0
    assert spearman([1, 2], [1, 2]) is None  # too few pairs
