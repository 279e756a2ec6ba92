"""Code2LoRA-Names: the evolving hypernetwork (the same state, GRU step and LoRA head) plus a
names memory on the LM head (`name_memory`), whose LoRA pair is written from the names the
repository defines. The adapter is one standard PEFT LoRA: the head's pair has its own rank
(`rank_pattern`) and the same scaling as the other targets."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from repo2lora.adapters.functional import BatchedLora, batched_to_weights
from repo2lora.adapters.targets import LoraTarget
from repo2lora.adapters.weights import LoraWeights
from repo2lora.hypernet.evo import EvoHypernet
from repo2lora.hypernet.name_memory import NameInput, NameMemory
from repo2lora.hypernet.static import HypernetConfig


class NamesHypernet(EvoHypernet):
    """`encode`, `step` as code2lora-evo; `generate(state, names)` adds the names memory's pair
    on `head_target` (the LM head) to the state's LoRA."""

    generator_name = "code2lora-names"
    reads_names = True

    def __init__(self, cfg: HypernetConfig, targets: list[LoraTarget], head: LoraTarget) -> None:
        super().__init__(cfg, targets)
        self.head_target = head
        self.reads_uses = cfg.names_contexts > 0  # its memory reads where the names are used
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed + 2)
            self.names = NameMemory(
                head,
                cfg.names_rank,
                cfg.names_max,
                cfg.names_key_rank,
                cfg.names_max_boost,
                cfg.names_select,
                cfg.names_contexts,
            )

    @property
    def scaling(self) -> float:
        return self.cfg.alpha / self.cfg.rank

    def names_parameters(self) -> list[nn.Parameter]:
        return list(self.names.parameters())

    def names_pair(self, names: NameInput | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The head's pair for one repository, A [R, hidden] and B [vocab, R], in the units
        `scaling` multiplies (all zero without names: the head is left as it is)."""
        sel = self.names.select(names.names, names.probe) if names is not None else None
        if sel is None or names is None:
            head, r = self.head_target, self.cfg.names_rank
            device = self.device
            return (
                torch.zeros(r, head.in_features, device=device),
                torch.zeros(head.out_features, r, device=device),
            )
        a, b = self.names.pair(sel, names.probe, names.texts)
        return a / self.scaling, b

    def batched_lora(
        self, states: torch.Tensor, names: Sequence[NameInput | None] | None = None
    ) -> tuple[BatchedLora, list[LoraTarget]]:
        batched = self.head(states)
        per_sample = list(names) if names is not None else [None] * states.shape[0]
        pairs = [self.names_pair(n) for n in per_sample]
        a = torch.stack([p[0] for p in pairs])[:, None]  # [b, 1, R, hidden]
        b = torch.stack([p[1] for p in pairs])[:, None]  # [b, 1, vocab, R]
        batched[self.head_target.module_type] = (a, b)
        return batched, [*self.head.targets, self.head_target]

    def generate(self, state: torch.Tensor, names: NameInput | None = None) -> LoraWeights:
        """One repository's adapter from its state [state_dim] and its names (None: the head's
        pair is zero)."""
        batched, targets = self.batched_lora(state[None], [names])
        weights = batched_to_weights(batched, targets, self.cfg.rank, self.cfg.alpha, 0)
        r = self.cfg.names_rank
        weights.rank_pattern = {self.head_target.module_type: r}
        weights.alpha_pattern = {self.head_target.module_type: self.scaling * r}
        return weights
