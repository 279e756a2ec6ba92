"""The generated LoRA: per-target (A, B) tensors (the targets themselves: `targets`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LoraWeights:
    """A complete adapter: for each target path, A [rank, in] and B [out, rank].
    The update applied to a target is W x + (alpha / rank) * B A x. `fan_in_fan_out`: the
    targets are Conv1D projections (GPT-2), whose weights are stored [in, out]."""

    rank: int
    alpha: int
    target_modules: tuple[str, ...]
    tensors: dict[str, tuple[torch.Tensor, torch.Tensor]]
    fan_in_fan_out: bool = False

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

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
    )
