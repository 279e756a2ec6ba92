"""Resumable training checkpoints: `checkpoints/step-NNNNNNN/` holds the hypernetwork (the
usual safetensors + card), the optimizer state (safetensors + JSON) and the trainer state.
Each is written aside and renamed into place, so a kill never leaves a half checkpoint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from repo2lora.atomic import atomic_directory

OPTIMIZER = "optimizer.safetensors"
OPTIMIZER_META = "optimizer.json"
TRAINER_STATE = "trainer_state.json"


def optimizer_to_safetensors(
    state: dict[str, Any],
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state_dict into flat tensors and JSON-able metadata."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, per_param in state["state"].items():
        for name, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{idx}.{name}"] = value.detach().cpu().clone()  # never shared storage
            else:
                scalars.setdefault(str(idx), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_safetensors(
    tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    for idx, extra in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(extra)
    return {"state": state, "param_groups": meta["param_groups"]}


def checkpoint_dir(out: Path, step: int) -> Path:
    return out / "checkpoints" / f"step-{step:07d}"


def latest_checkpoint(out: Path) -> Path | None:
    root = out / "checkpoints"
    if not root.is_dir():
        return None
    done = sorted(
        p for p in root.iterdir() if p.name.startswith("step-") and (p / TRAINER_STATE).is_file()
    )
    return done[-1] if done else None


def write_checkpoint(
    out: Path,
    step: int,
    write_model: Any,  # callable(dir) writing the model files
    optimizer: torch.optim.Optimizer,
    trainer_state: dict[str, Any],
    keep: int = 2,
) -> Path:
    target = checkpoint_dir(out, step)
    with atomic_directory(target) as tmp:
        write_model(tmp)
        tensors, meta = optimizer_to_safetensors(optimizer.state_dict())
        save_file(tensors, str(tmp / OPTIMIZER))
        (tmp / OPTIMIZER_META).write_text(json.dumps(meta))
        (tmp / TRAINER_STATE).write_text(json.dumps(trainer_state, indent=2, sort_keys=True))
    old = sorted(p for p in target.parent.iterdir() if p.name.startswith("step-"))
    for p in old[:-keep]:
        shutil.rmtree(p, ignore_errors=True)
    return target


def read_optimizer(ckpt: Path) -> dict[str, Any]:
    return optimizer_from_safetensors(
        load_file(str(ckpt / OPTIMIZER)), json.loads((ckpt / OPTIMIZER_META).read_text())
    )


def read_trainer_state(ckpt: Path) -> dict[str, Any]:
    return dict(json.loads((ckpt / TRAINER_STATE).read_text()))
