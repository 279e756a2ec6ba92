"""The generated LoRA: per-target (A, B) tensors (the targets themselves: `targets`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class LoraWeights:
    """A complete adapter: for each target path, A [rank, in] and B [out, rank].
    The update applied to a target is W x + (alpha / rank) * B A x. `fan_in_fan_out`: the
    targets are Conv1D projections (GPT-2), whose weights are stored [in, out].
    `rank_pattern`/`alpha_pattern` (PEFT's): module types whose pairs have another rank and
    alpha than `rank`/`alpha`, e.g. {"lm_head": 32} for a names memory on the LM head."""

    rank: int
    alpha: int
    target_modules: tuple[str, ...]
    tensors: dict[str, tuple[torch.Tensor, torch.Tensor]]
    fan_in_fan_out: bool = False
    rank_pattern: dict[str, int] = field(default_factory=dict)
    alpha_pattern: dict[str, float] = field(default_factory=dict)

    @property
    def scaling(self) -> float:
        """The scaling of the targets at the default rank and alpha."""
        return self.alpha / self.rank

    def scaling_for(self, path: str) -> float:
        """alpha / rank of the target at `path` (a pattern's when its module type has one)."""
        for key, rank in self.rank_pattern.items():
            if path == key or path.endswith("." + key):
                return self.alpha_pattern.get(key, self.alpha) / rank
        return self.scaling

    def scalings(self) -> dict[str, float]:
        """The scaling of every target, by path."""
        return {p: self.scaling_for(p) for p in self.tensors}

    def flat(self) -> torch.Tensor:
        """Every A and B, flattened into one vector (in target order)."""
        return torch.cat([t.flatten() for ab in self.tensors.values() for t in ab])

    def detached(self) -> LoraWeights:
        return LoraWeights(
            self.rank,
            self.alpha,
            self.target_modules,
            {
                k: (a.detach().float().cpu(), b.detach().float().cpu())
                for k, (a, b) in self.tensors.items()
            },
            self.fan_in_fan_out,
            dict(self.rank_pattern),
            dict(self.alpha_pattern),
        )


def neutral_adapter(template: LoraWeights) -> LoraWeights:
    """An adapter of `template`'s shape whose B matrices are zero: it leaves the model exactly
    as it was (used until the repository's first adapter exists)."""
    return LoraWeights(
        template.rank,
        template.alpha,
        template.target_modules,
        {p: (a.clone(), torch.zeros_like(b)) for p, (a, b) in template.tensors.items()},
        template.fan_in_fan_out,
        dict(template.rank_pattern),
        dict(template.alpha_pattern),
    )
