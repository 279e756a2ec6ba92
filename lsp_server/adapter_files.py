"""Reads a PEFT adapter directory written by `repo2lora.adapters.peft_dir.save_peft_adapter`
back into `LoraWeights` (the inverse of that writer), and fingerprints it so an unchanged
adapter is not swapped in again."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from repo2lora.adapters.peft_dir import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from repo2lora.adapters.weights import LoraWeights
from repo_encoder.errors import UserError

_PREFIX = "base_model.model."
_A, _B = ".lora_A.weight", ".lora_B.weight"


def adapter_fingerprint(adapter_dir: str | Path) -> str:
    """sha256 of the adapter's weights file (16 hex digits)."""
    h = hashlib.sha256()
    with (Path(adapter_dir) / ADAPTER_WEIGHTS).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def read_peft_adapter(adapter_dir: str | Path) -> LoraWeights:
    """The (A, B) pairs of a PEFT LoRA directory, keyed by module path."""
    d = Path(adapter_dir)
    try:
        cfg = json.loads((d / ADAPTER_CONFIG).read_text())
        tensors = load_file(str(d / ADAPTER_WEIGHTS))
    except (OSError, json.JSONDecodeError, SafetensorError) as exc:
        raise UserError(f"cannot read the adapter in {d}: {exc}") from None
    pairs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for key, a in tensors.items():
        if key.startswith(_PREFIX) and key.endswith(_A):
            path = key[len(_PREFIX) : -len(_A)]
            b = tensors.get(f"{_PREFIX}{path}{_B}")
            if b is None:
                raise UserError(f"{d / ADAPTER_WEIGHTS} has lora_A for {path} but no lora_B")
            pairs[path] = (a.float(), b.float())
    if not pairs:
        raise UserError(f"{d / ADAPTER_WEIGHTS} holds no LoRA tensors")
    targets = cfg.get("target_modules") or []
    return LoraWeights(
        rank=int(cfg["r"]),
        alpha=int(cfg["lora_alpha"]),
        target_modules=tuple(sorted(targets)),
        tensors=pairs,
    )


def neutral_adapter(template: LoraWeights) -> LoraWeights:
    """An adapter of `template`'s shape whose B matrices are zero: it leaves the model exactly
    as it was (used until the repository's first adapter exists)."""
    return LoraWeights(
        template.rank,
        template.alpha,
        template.target_modules,
        {p: (a.clone(), torch.zeros_like(b)) for p, (a, b) in template.tensors.items()},
    )
