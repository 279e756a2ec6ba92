"""The evolving state: a commit's chunk diff pooled into one diff vector, and the GRU step
h_t = GRU(h_{t-1}, diff_t).

Diff vector (our choice, after the reference design's mean||max pooling of diff embeddings):
the vectors of what a commit brings in (added chunks and the new side of modified ones) and of
what it takes out (removed chunks and the old side of modified ones) are each pooled as
mean || max, and log(1 + count) of added, removed and modified chunks is appended, so the GRU
sees both what changed and how much: [4 * d + 3]. An empty side pools to zeros."""

from __future__ import annotations

import torch
from torch import nn


def diff_dim(vector_dim: int) -> int:
    return 4 * vector_dim + 3


def _mean_max(x: torch.Tensor, dim: int) -> torch.Tensor:
    if x.shape[0] == 0:
        return x.new_zeros(2 * dim)
    return torch.cat([x.mean(0), x.amax(0)])


def diff_features(
    brought_in: torch.Tensor, taken_out: torch.Tensor, n_added: int, n_removed: int, n_modified: int
) -> torch.Tensor:
    """[n_in, d] and [n_out, d] chunk vectors -> the diff vector [4d + 3]."""
    d = brought_in.shape[1] if brought_in.dim() == 2 else taken_out.shape[1]
    counts = torch.tensor([n_added, n_removed, n_modified], dtype=torch.float32)
    counts = torch.log1p(counts).to(brought_in.device)
    return torch.cat([_mean_max(brought_in, d), _mean_max(taken_out, d), counts])


class StateUpdater(nn.Module):
    """h_{t-1} [b, state] and diff vectors [b, 4d+3] -> h_t [b, state]."""

    def __init__(self, vector_dim: int, state_dim: int, hidden: int = 256) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(diff_dim(vector_dim))
        self.proj = nn.Sequential(nn.Linear(diff_dim(vector_dim), hidden), nn.GELU())
        self.cell = nn.GRUCell(hidden, state_dim)

    def forward(self, h: torch.Tensor, diff: torch.Tensor) -> torch.Tensor:
        return self.cell(self.proj(self.norm(diff)), h)
