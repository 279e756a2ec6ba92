"""Saves generated LoRA weights as a standard PEFT adapter directory (adapter_config.json +
adapter_model.safetensors) that `PeftModel.from_pretrained(base, dir)` loads as is."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from peft import LoraConfig
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from repo2lora.adapters.weights import LoraWeights
from repo2lora.atomic import atomic_directory
from repo_encoder.errors import UserError

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
PROVENANCE = "repo2lora.json"


def lora_config_for(weights: LoraWeights, base_model_name_or_path: str | None) -> LoraConfig:
    """Plain LoRA on the projections `weights` targets (no DoRA, no `modules_to_save`: what
    multi-LoRA servers load); `fan_in_fan_out` for Conv1D projections (GPT-2); PEFT's
    `rank_pattern`/`alpha_pattern` where some module types have their own rank."""
    return LoraConfig(
        r=weights.rank,
        lora_alpha=weights.alpha,
        target_modules=list(weights.target_modules),
        rank_pattern=dict(weights.rank_pattern),
        alpha_pattern=dict(weights.alpha_pattern),
        fan_in_fan_out=weights.fan_in_fan_out,
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
        base_model_name_or_path=base_model_name_or_path,
    )


def peft_state_dict(weights: LoraWeights) -> dict[str, torch.Tensor]:
    """Tensors under the key names PEFT saves (no adapter name inside the file)."""
    sd = {}
    for path, (a, b) in weights.tensors.items():
        sd[f"base_model.model.{path}.lora_A.weight"] = a.detach().float().cpu().contiguous()
        sd[f"base_model.model.{path}.lora_B.weight"] = b.detach().float().cpu().contiguous()
    return sd


def save_peft_adapter(
    weights: LoraWeights,
    out_dir: str | os.PathLike[str],
    base_model_name_or_path: str | None,
    provenance: dict[str, object] | None = None,
) -> Path:
    """Write the adapter to `out_dir` atomically: it is built in a sibling temporary directory
    and renamed into place, so a crash never leaves a half-written adapter under `out_dir`."""
    out = Path(out_dir)
    with atomic_directory(out) as tmp:
        lora_config_for(weights, base_model_name_or_path).save_pretrained(str(tmp))
        save_file(peft_state_dict(weights), str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        if provenance is not None:
            (tmp / PROVENANCE).write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n")
    return out


_PREFIX = "base_model.model."
_A, _B = ".lora_A.weight", ".lora_B.weight"


def adapter_fingerprint(adapter_dir: str | Path) -> str:
    """sha256 of the adapter's weights file (16 hex digits)."""
    h = hashlib.sha256()
    with (Path(adapter_dir) / ADAPTER_WEIGHTS).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def load_peft_adapter(adapter_dir: str | Path) -> LoraWeights:
    """The inverse of `save_peft_adapter`: the (A, B) pairs of a PEFT LoRA directory, keyed by
    module path."""
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
        fan_in_fan_out=bool(cfg.get("fan_in_fan_out", False)),
        rank_pattern={str(k): int(v) for k, v in (cfg.get("rank_pattern") or {}).items()},
        alpha_pattern={str(k): float(v) for k, v in (cfg.get("alpha_pattern") or {}).items()},
    )
