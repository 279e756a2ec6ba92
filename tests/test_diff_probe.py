"""The diff probe: a probe must find what the features do carry, and find nothing in noise."""

from __future__ import annotations

import torch

from benchmark.diff_probe import run_probes


def _rows(informative: bool) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    rows = []
    for i in range(240):
        token = int(torch.randint(0, 8, (1,), generator=g))
        features = torch.randn(11, generator=g)  # [4d + 3] with d = 2: 8 vector, 3 count dims
        if informative:  # the vector part names the target token; the counts stay noise
            features[:8] = 0.0
            features[token] = 3.0
        y = torch.zeros(8)
        y[token] = 1.0
        rows.append((f"repo{i % 8}", features, y))
    return rows


def test_a_probe_finds_what_the_diff_carries_across_repositories() -> None:
    res = run_probes(_rows(informative=True), share=0.25, seed=0)
    assert res["test_repos"] == 2 and res["test_tasks"] == 60
    assert res["vectors"]["test_ce"] < res["prior"]["test_ce"] - 1.0, res
    assert res["counts"]["test_ce"] > res["prior"]["test_ce"] - 0.1, res  # counts are noise here


def test_noise_features_do_not_beat_the_prior() -> None:
    res = run_probes(_rows(informative=False), share=0.25, seed=0)
    assert res["vectors"]["test_ce"] > res["prior"]["test_ce"] - 0.05, res
