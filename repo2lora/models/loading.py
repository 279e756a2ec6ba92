"""Finds and loads the base causal LM named by `--model`: a preset, a local directory, a hub id
(ordinary transformers path, honouring HF_HUB_OFFLINE), or the embedded default."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PretrainedConfig

from repo2lora.models import embedded
from repo2lora.models.presets import PRESETS, Preset, build_preset, preset_config
from repo_encoder.errors import UserError

# The config fields that decide every weight's shape; their hash is the base model's identity,
# which a hypernetwork checkpoint records so it is never paired with another architecture.
_IDENTITY_FIELDS = (
    "model_type",
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "tie_word_embeddings",
)


def model_identity(config: PretrainedConfig) -> str:
    """Hash of the architecture-defining config fields (16 hex digits). Read as attributes, so
    a config that names them otherwise (GPT-2's `n_embd`, `n_layer`) is told apart by size."""
    picked = {k: getattr(config, k, None) for k in _IDENTITY_FIELDS}
    return hashlib.sha256(json.dumps(picked, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class BaseModelInfo:
    """What is known about a base model before (or without) loading its weights."""

    spec: str
    config: PretrainedConfig
    identity: str  # architecture hash
    model_key: str  # identity + weights fingerprint: the chunk-vector cache key
    description: str
    untrained: bool
    model_dir: Path | None = None
    preset: Preset | None = None


@dataclass
class LoadedModel:
    info: BaseModelInfo
    model: Any  # a transformers PreTrainedModel in eval mode, parameters frozen
    tokenizer: Any


def _weights_fingerprint(model_dir: Path) -> str:
    """Cheap fingerprint of a checkpoint's weights: names, sizes and the first MiB of each."""
    h = hashlib.sha256()
    for f in sorted(model_dir.glob("*.safetensors")):
        h.update(f.name.encode())
        h.update(str(f.stat().st_size).encode())
        with f.open("rb") as fh:
            h.update(fh.read(1 << 20))
    return h.hexdigest()[:16]


def _looks_like_path(spec: str) -> bool:
    return spec.startswith((".", "/", "~")) or spec.endswith("/") or spec.count("/") > 1


def _preset_info(preset: Preset, spec: str) -> BaseModelInfo:
    cfg = preset_config(preset)
    ident = model_identity(cfg)
    return BaseModelInfo(
        spec=spec,
        config=cfg,
        identity=ident,
        model_key=f"{preset.name}:{ident}:seed{preset.seed}:torch{torch.__version__}",
        description=preset.description,
        untrained=True,
        preset=preset,
    )


def _dir_info(spec: str, model_dir: Path, description: str) -> BaseModelInfo:
    if not (model_dir / "config.json").is_file():
        raise UserError(f"{model_dir} has no config.json; pass a transformers model directory")
    try:
        cfg = AutoConfig.from_pretrained(str(model_dir), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read the model config in {model_dir}: {exc}") from None
    if not list(model_dir.glob("*.safetensors")):
        raise UserError(
            f"{model_dir} has no .safetensors weights; repo2lora loads safetensors only "
            "(convert the checkpoint with transformers' save_pretrained)"
        )
    ident = model_identity(cfg)
    return BaseModelInfo(
        spec=spec,
        config=cfg,
        identity=ident,
        model_key=f"dir:{ident}:{_weights_fingerprint(model_dir)}",
        description=description,
        untrained=False,
        model_dir=model_dir,
    )


def _hub_dir(spec: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(
                spec,
                allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken"],
            )
        )
    except Exception as exc:  # the hub client raises many types; all mean "not available"
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        hint = " (HF_HUB_OFFLINE is set and it is not cached)" if offline else ""
        raise UserError(
            f"cannot get model {spec!r} from the model hub{hint}: {type(exc).__name__}; "
            "pass --model with a local model directory"
        ) from None


def _embedded_description(card: dict[str, Any]) -> str:
    m = card.get("model", {})
    params = m.get("params")
    tokens = m.get("tokens_seen")
    size = f"{params / 1e6:.1f}M parameters" if params else "size unknown"
    seen = f", {tokens / 1e6:.1f}M training tokens" if tokens else ""
    return f"embedded default model ({m.get('architecture', 'llama')}, {size}{seen})"


def describe_base_model(spec: str | None) -> BaseModelInfo:
    """Resolve `spec` without loading weights. None or "default" is the embedded default."""
    if spec is None or spec == "default":
        if embedded.is_installed():
            card = embedded.verify()
            return _dir_info("default", embedded.DEFAULT_DIR, _embedded_description(card))
        return _preset_info(PRESETS["random-default"], "default")
    if spec in PRESETS:
        return _preset_info(PRESETS[spec], spec)
    path = Path(spec).expanduser()
    if path.is_dir():
        return _dir_info(spec, path.resolve(), f"local model {path.resolve()}")
    if path.exists():
        raise UserError(f"--model {spec}: not a directory; pass a transformers model directory")
    if _looks_like_path(spec):
        raise UserError(
            f"model directory not found: {spec}; pass an existing directory, a hub id, "
            f"or one of: {', '.join(PRESETS)}"
        )
    return _dir_info(spec, _hub_dir(spec), f"hub model {spec}")


def load_base_model(info: BaseModelInfo) -> LoadedModel:
    """Load the weights `info` describes, frozen and in eval mode (safetensors only)."""
    model: Any
    tokenizer: Any
    if info.preset is not None:
        model, tokenizer = build_preset(info.preset)
    else:
        assert info.model_dir is not None
        try:
            model = AutoModelForCausalLM.from_pretrained(
                str(info.model_dir), local_files_only=True, use_safetensors=True
            )
            tokenizer = AutoTokenizer.from_pretrained(str(info.model_dir), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot load the model in {info.model_dir}: {exc}") from None
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    model.requires_grad_(False)
    return LoadedModel(info=info, model=model, tokenizer=tokenizer)
