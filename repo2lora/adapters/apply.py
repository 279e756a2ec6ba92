"""Applies generated LoRA weights to a loaded model: wrap it as a PeftModel once, then hot-swap
every LoRA tensor in place (no reload) whenever a new adapter is generated."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable
from typing import Any

import torch
from peft import PeftModel, get_peft_model

from repo2lora.adapters.peft_dir import lora_config_for
from repo2lora.adapters.targets import is_fan_in_fan_out
from repo2lora.adapters.weights import LoraWeights

ADAPTER_NAME = "default"


def attach_lora(
    model: Any, weights: LoraWeights, base_model_name_or_path: str | None = None
) -> PeftModel:
    """Wrap `model` (modified in place, as peft does) with a LoRA slot shaped for `weights` and
    fill it with them."""
    with warnings.catch_warnings():
        # a LoRA on an LM head tied to the embeddings: peft warns that merging it would reach
        # the embeddings; this slot is never merged (the merged twin unties its head instead)
        warnings.filterwarnings("ignore", message=".*tie_word_embeddings.*")
        peft_model = get_peft_model(model, lora_config_for(weights, base_model_name_or_path))
    peft_model.eval()
    peft_model.requires_grad_(False)
    swap_lora_weights(peft_model, weights)
    return peft_model


@torch.no_grad()
def swap_lora_weights(
    peft_model: PeftModel, weights: LoraWeights, adapter_name: str = ADAPTER_NAME
) -> None:
    """Copy every (A, B) of `weights` into the loaded adapter's tensors in place.

    All shapes and the scaling are checked before the first copy, so a mismatch leaves the old
    adapter untouched."""
    inner: Any = peft_model.base_model.model
    plan = []
    for path, (a, b) in weights.tensors.items():
        module: Any = inner.get_submodule(path)
        la = module.lora_A[adapter_name].weight
        lb = module.lora_B[adapter_name].weight
        if la.shape != a.shape or lb.shape != b.shape:
            raise ValueError(
                f"{path}: adapter shapes {tuple(a.shape)}/{tuple(b.shape)} do not fit the loaded "
                f"LoRA slot {tuple(la.shape)}/{tuple(lb.shape)}"
            )
        if abs(module.scaling[adapter_name] - weights.scaling_for(path)) > 1e-9:
            raise ValueError(f"{path}: LoRA scaling differs from the loaded slot")
        plan.append((la, a, lb, b))
    for la, a, lb, b in plan:
        la.copy_(a)
        lb.copy_(b)


def weight_sharing_twin(model: Any, own: Iterable[str] = ()) -> Any:
    """A second module tree over `model`'s parameters (the same tensors, not copies), except the
    parameters named in `own`, which the twin gets its own copies of. A parameter tied to
    another one (an LM head tied to the input embeddings) is untied in the twin when only one
    of its names is in `own`: writing the twin's LM head never reaches the embeddings."""
    own = set(own)
    memo: dict[int, Any] = {
        id(p): p for name, p in model.named_parameters(remove_duplicate=False) if name not in own
    }
    twin = copy.deepcopy(model, memo)
    shared = {id(p) for p in model.parameters()}
    for name in own:
        where, _, attr = name.rpartition(".")
        module = twin.get_submodule(where)
        p = getattr(module, attr)
        if id(p) in shared:  # tied to a parameter the twin shares with `model`
            setattr(module, attr, torch.nn.Parameter(p.detach().clone(), requires_grad=False))
    twin.eval()
    return twin


@torch.no_grad()
def merged_target_weights(base_model: Any, weights: LoraWeights) -> dict[str, torch.Tensor]:
    """W + (alpha / r) B A for every target of `weights`, from the frozen, never-adapted W of
    `base_model`: computed aside, so installing them is a pointer swap. A Conv1D keeps W as
    [in, out], so it gets the transposed update."""
    staged = {}
    for path, (a, b) in weights.tensors.items():
        module = base_model.get_submodule(path)
        w = module.weight
        delta = weights.scaling_for(path) * (b.float() @ a.float())  # [out, r] @ [r, in]
        if is_fan_in_fan_out(module):
            delta = delta.T  # [in, out]
        staged[path] = (w.float() + delta.to(w.device)).to(w.dtype)
    return staged
