"""Saves generated LoRA weights as a standard PEFT adapter directory (adapter_config.json +
adapter_model.safetensors) that `PeftModel.from_pretrained(base, dir)` loads as is."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from peft import LoraConfig
from safetensors.torch import save_file

from repo2lora.adapters.weights import LoraWeights

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
PROVENANCE = "repo2lora.json"


def lora_config_for(weights: LoraWeights, base_model_name_or_path: str | None) -> LoraConfig:
    return LoraConfig(
        r=weights.rank,
        lora_alpha=weights.alpha,
        target_modules=list(weights.target_modules),
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
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        lora_config_for(weights, base_model_name_or_path).save_pretrained(str(tmp))
        save_file(peft_state_dict(weights), str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        if provenance is not None:
            (tmp / PROVENANCE).write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n")
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
