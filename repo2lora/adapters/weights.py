"""The generated LoRA: per-target (A, B) tensors, and the targets a base model offers."""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModelForCausalLM, PretrainedConfig

from repo_encoder.errors import UserError

_LAYER_RE = re.compile(r"\.layers\.(\d+)\.")


@dataclass(frozen=True)
class LoraTarget:
    """One linear module that receives a LoRA pair, e.g. `model.layers.3.self_attn.q_proj`."""

    path: str
    module_type: str  # last path component, e.g. "q_proj"
    layer: int
    in_features: int
    out_features: int


@dataclass
class LoraWeights:
    """A complete adapter: for each target path, A [rank, in] and B [out, rank].
    The update applied to a target is W x + (alpha / rank) * B A x."""

    rank: int
    alpha: int
    target_modules: tuple[str, ...]
    tensors: dict[str, tuple[torch.Tensor, torch.Tensor]]

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
        )


def find_lora_targets(
    config: PretrainedConfig, target_modules: tuple[str, ...]
) -> list[LoraTarget]:
    """The linear modules of a causal LM named by `target_modules`, in layer order, read from a
    weightless (meta-device) instance so no weights are loaded."""
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    targets = []
    for path, module in model.named_modules():
        name = path.rsplit(".", 1)[-1]
        if name not in target_modules or not isinstance(module, nn.Linear):
            continue
        m = _LAYER_RE.search(path + ".")
        targets.append(
            LoraTarget(
                path=path,
                module_type=name,
                layer=int(m.group(1)) if m else 0,
                in_features=module.in_features,
                out_features=module.out_features,
            )
        )
    missing = set(target_modules) - {t.module_type for t in targets}
    if missing:
        raise UserError(
            f"the base model has no linear modules named {sorted(missing)}; "
            "choose target modules it has (e.g. q_proj, v_proj)"
        )
    return targets


def neutral_adapter(template: LoraWeights) -> LoraWeights:
    """An adapter of `template`'s shape whose B matrices are zero: it leaves the model exactly
    as it was (used until the repository's first adapter exists)."""
    return LoraWeights(
        template.rank,
        template.alpha,
        template.target_modules,
        {p: (a.clone(), torch.zeros_like(b)) for p, (a, b) in template.tensors.items()},
    )


def module_shapes(targets: list[LoraTarget]) -> dict[str, tuple[int, int]]:
    """(in_features, out_features) of each module type, which every layer must share."""
    shapes: dict[str, tuple[int, int]] = {}
    for t in targets:
        shapes.setdefault(t.module_type, (t.in_features, t.out_features))
        if shapes[t.module_type] != (t.in_features, t.out_features):
            raise ValueError(f"{t.module_type} has different shapes across layers")
    return shapes
