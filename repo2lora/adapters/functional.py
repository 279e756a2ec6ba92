"""Applies a batch of generated LoRAs functionally: sample b of a batch runs through the frozen
base model with its own adapter (A_b, B_b), so one batch can mix repositories and gradients
flow into the generator, never into the base model."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from repo2lora.adapters.targets import LoraTarget, uses_fan_in_fan_out
from repo2lora.adapters.weights import LoraWeights

# module type -> (A [b, L, r, in], B [b, L, out, r]): what a LoraHead returns
BatchedLora = dict[str, tuple[torch.Tensor, torch.Tensor]]


@contextmanager
def functional_lora(
    model: Any, targets: list[LoraTarget], batched: BatchedLora, scaling: float
) -> Iterator[None]:
    """Within the block, every target projection computes W x + scaling * B_b A_b x for
    sample b.

    Implemented with forward hooks on the projections' outputs, so the base model is used
    unchanged (and may be shared with other users outside the block), and a Conv1D ([in, out]
    weight) or a fused QKV projection gets the same update as any Linear: only its input and
    output widths matter."""
    handles = []

    def hook_for(a: torch.Tensor, b: torch.Tensor) -> Any:
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> Any:
            x = args[0]  # [b, t, in]
            delta = torch.einsum("bti,bri->btr", x.to(a.dtype), a)  # [b, t, r]
            delta = torch.einsum("btr,bor->bto", delta, b)  # [b, t, out]
            return out + (scaling * delta).to(out.dtype)

        return hook

    try:
        for t in targets:
            a_all, b_all = batched[t.module_type]
            module = model.get_submodule(t.path)
            handles.append(
                module.register_forward_hook(hook_for(a_all[:, t.layer], b_all[:, t.layer]))
            )
        yield
    finally:
        for h in handles:
            h.remove()


def batched_to_weights(
    batched: BatchedLora, targets: list[LoraTarget], rank: int, alpha: int, index: int = 0
) -> LoraWeights:
    """Sample `index` of a batched LoRA as an adapter keyed by module path (what every
    generator returns for one repository)."""
    tensors = {
        t.path: (
            batched[t.module_type][0][index, t.layer],
            batched[t.module_type][1][index, t.layer],
        )
        for t in targets
    }
    types = tuple(sorted({t.module_type for t in targets}))
    return LoraWeights(rank, alpha, types, tensors, uses_fan_in_fan_out(targets))
