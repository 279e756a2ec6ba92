"""Applies a batch of generated LoRAs functionally: sample b of a batch runs through the frozen
base model with its own adapter (A_b, B_b), so one batch can mix repositories and gradients
flow into the generator, never into the base model."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from repo2lora.adapters.targets import LoraTarget, layer_blocks, uses_fan_in_fan_out
from repo2lora.adapters.weights import LoraWeights

# module type -> (A [b, L, r, in], B [b, L, out, r]): what a LoraHead returns
BatchedLora = dict[str, tuple[torch.Tensor, torch.Tensor]]


def _lora_hook(a: torch.Tensor, b: torch.Tensor, scaling: float) -> Any:
    """A forward hook adding scaling * B_b A_b x to a projection's output, per sample b."""

    def hook(module: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> Any:
        # in the base model's compute dtype: the input is then the tensor the projection read,
        # kept once for the backward pass however many targets read it, not a copy per target
        x = args[0]  # [b, t, in]
        delta = torch.einsum("bti,bri->btr", x, a.to(x.dtype))  # [b, t, r]
        delta = torch.einsum("btr,bor->bto", delta, b.to(x.dtype))  # [b, t, out]
        return out + (scaling * delta).to(out.dtype)

    return hook


@contextmanager
def _hooked(
    model: Any, targets: list[LoraTarget], batched: BatchedLora, scaling: float
) -> Iterator[None]:
    handles = []
    try:
        for t in targets:
            a_all, b_all = batched[t.module_type]
            module = model.get_submodule(t.path)
            hook = _lora_hook(a_all[:, t.layer], b_all[:, t.layer], scaling)
            handles.append(module.register_forward_hook(hook))
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def _checkpointed_blocks(
    model: Any, targets: list[LoraTarget], batched: BatchedLora, scaling: float
) -> Iterator[None]:
    """Every layer block's forward runs under activation checkpointing: only its inputs are
    kept, and the backward pass recomputes it with the same block's LoRA hooks registered again
    (they are gone by then: the backward runs after the `functional_lora` block closes)."""
    _, blocks = layer_blocks(model)
    by_layer: dict[int, list[LoraTarget]] = {}
    for t in targets:
        by_layer.setdefault(t.layer, []).append(t)
    patched = []

    def checkpointed(forward: Any, mine: list[LoraTarget]) -> Any:
        def contexts() -> tuple[Any, Any]:
            return nullcontext(), _hooked(model, mine, batched, scaling)

        def run(*args: Any, **kwargs: Any) -> Any:
            if not torch.is_grad_enabled():
                return forward(*args, **kwargs)
            return checkpoint(forward, *args, use_reentrant=False, context_fn=contexts, **kwargs)

        return run

    try:
        for i, block in enumerate(blocks):
            block.forward = checkpointed(block.forward, by_layer.get(i, []))
            patched.append(block)
        yield
    finally:
        for block in patched:
            del block.forward  # the class's forward again


@contextmanager
def functional_lora(
    model: Any,
    targets: list[LoraTarget],
    batched: BatchedLora,
    scaling: float,
    checkpoint_layers: bool = False,
) -> Iterator[None]:
    """Within the block, every target projection computes W x + scaling * B_b A_b x for
    sample b.

    Implemented with forward hooks on the projections' outputs, so the base model is used
    unchanged (and may be shared with other users outside the block), and a Conv1D ([in, out]
    weight) or a fused QKV projection gets the same update as any Linear: only its input and
    output widths matter. `checkpoint_layers`: the frozen base's layer blocks keep only their
    inputs for the backward pass and recompute the rest (activation checkpointing), trading
    about one more forward pass for most of the activation memory."""
    with _hooked(model, targets, batched, scaling):
        if checkpoint_layers:
            with _checkpointed_blocks(model, targets, batched, scaling):
                yield
        else:
            yield


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


def weights_to_batched(weights: list[LoraWeights], targets: list[LoraTarget]) -> BatchedLora:
    """Adapters keyed by module path (one per sample) as one batch for `functional_lora`: the
    inverse of `batched_to_weights`."""
    layers = max(t.layer for t in targets) + 1
    out: BatchedLora = {}
    for mt in sorted({t.module_type for t in targets}):
        mine = {t.layer: t.path for t in targets if t.module_type == mt}
        a = torch.stack(
            [torch.stack([w.tensors[mine[i]][0] for i in range(layers)]) for w in weights]
        )  # [b, L, r, in]
        b = torch.stack(
            [torch.stack([w.tensors[mine[i]][1] for i in range(layers)]) for w in weights]
        )  # [b, L, out, r]
        out[mt] = (a, b)
    return out
