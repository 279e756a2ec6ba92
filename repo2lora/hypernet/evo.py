"""Code2LoRA-Evo: the static hypernetwork (h_0 = the snapshot encoding, the same LoRA head)
plus the GRU step that moves the state along each commit's chunk diff."""

from __future__ import annotations

import torch

from evo_state.gru import StateUpdater, diff_features
from repo2lora.adapters.targets import LoraTarget
from repo2lora.hypernet.static import HypernetConfig, StaticHypernet


class EvoHypernet(StaticHypernet):
    """`encode` gives h_0 from a snapshot; `step` gives h_t from h_{t-1} and a diff;
    `generate` reads any state with the shared LoRA head."""

    generator_name = "code2lora-evo"
    stateful = True

    def __init__(self, cfg: HypernetConfig, targets: list[LoraTarget]) -> None:
        super().__init__(cfg, targets)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed + 1)
            self.updater = StateUpdater(cfg.input_dim, cfg.state_dim, cfg.diff_hidden)

    def step(
        self,
        h: torch.Tensor,
        brought_in: torch.Tensor,
        taken_out: torch.Tensor,
        counts: tuple[int, int, int],
    ) -> torch.Tensor:
        """One commit: state [state_dim], chunk vectors [n_in, d] / [n_out, d] -> new state."""
        std = self.encoder.standardized
        brought_in, taken_out = brought_in.to(self.device), taken_out.to(self.device)
        diff = diff_features(std(brought_in), std(taken_out), *counts)
        return self.updater(h[None], diff[None])[0]
