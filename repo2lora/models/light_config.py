"""Which Llama-family model directories `repo2lora.models.light_llama` reproduces exactly, read
from config.json alone (no torch, no transformers, so the language server can decide before
loading anything): llama, qwen2 and mistral with the default rope, full attention, SiLU,
float32 weights, no quantization, and the fields whose transformers defaults differ between
the three written out. Anything else is a `LightModelError`, and the model starts through
transformers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "mistral": "MistralForCausalLM",
}
# config fields whose transformers default differs between the three (or is easy to get wrong):
# a config.json that leaves them out is served through transformers
_REQUIRED = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "rms_norm_eps",
    "max_position_embeddings",
)
_DEFAULT_ROPE_THETA = 10000.0  # the default of all three config classes


class LightModelError(Exception):
    """The model directory is one the light loader does not reproduce exactly."""


@dataclass(frozen=True)
class LightConfig:
    """The fields of a Llama-family config.json the forward needs, with transformers' defaults.
    `_attn_implementation`, `layer_types` and `sliding_window` are what
    `repo2lora.decoding.static_kv_supported` asks of a config."""

    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    max_position_embeddings: int
    tie_word_embeddings: bool
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool
    identity_head_dim: int | None  # what transformers' config holds as `head_dim` (qwen2: none)
    _attn_implementation: str = "sdpa"
    layer_types: tuple[str, ...] | None = None
    sliding_window: int | None = None

    def identity_fields(self) -> dict[str, Any]:
        """The values `repo2lora.models.loading.model_identity` hashes, as transformers'
        config would hold them."""
        return {
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.identity_head_dim,
            "tie_word_embeddings": self.tie_word_embeddings,
        }


def _rope_theta(raw: dict[str, Any]) -> float:
    params = raw.get("rope_parameters")
    if params is None:
        if raw.get("rope_scaling") is not None:
            raise LightModelError("rope scaling")
        return float(raw.get("rope_theta", _DEFAULT_ROPE_THETA))
    if not isinstance(params, dict) or params.get("rope_type", "default") != "default":
        raise LightModelError("a rope type other than the default")
    if set(params) - {"rope_type", "rope_theta"}:
        raise LightModelError("rope parameters beyond rope_theta")
    return float(params.get("rope_theta", _DEFAULT_ROPE_THETA))


def read_light_config(model_dir: Path) -> LightConfig:
    """`model_dir/config.json` as a `LightConfig`; a LightModelError for anything the light
    forward would not reproduce exactly."""
    try:
        raw = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise LightModelError(f"config.json: {exc}") from None
    if not isinstance(raw, dict):
        raise LightModelError("config.json is not an object")
    kind = raw.get("model_type")
    if kind not in ARCHITECTURES:
        raise LightModelError(f"model type {kind!r}")
    if raw.get("architectures", [ARCHITECTURES[kind]]) != [ARCHITECTURES[kind]]:
        raise LightModelError(f"architectures {raw.get('architectures')}")
    missing = [k for k in _REQUIRED if not isinstance(raw.get(k), int | float)]
    if missing:
        raise LightModelError(f"config.json leaves out {', '.join(missing)}")
    dtype = raw.get("dtype", raw.get("torch_dtype"))
    if dtype not in (None, "float32"):
        raise LightModelError(f"dtype {dtype}")
    if raw.get("hidden_act", "silu") != "silu":
        raise LightModelError(f"activation {raw.get('hidden_act')}")
    for key in ("quantization_config", "attn_implementation", "_attn_implementation"):
        if raw.get(key) not in (None, "sdpa"):
            raise LightModelError(key)
    if raw.get("pretraining_tp", 1) != 1:
        raise LightModelError("pretraining_tp")
    layer_types = raw.get("layer_types")
    if layer_types is not None and any(t != "full_attention" for t in layer_types):
        raise LightModelError("layers other than full attention")
    if kind == "qwen2" and raw.get("use_sliding_window", False):
        raise LightModelError("sliding-window attention")
    if kind == "mistral" and raw.get("sliding_window", 4096) is not None:
        raise LightModelError("sliding-window attention")
    heads, hidden = int(raw["num_attention_heads"]), int(raw["hidden_size"])
    given_head_dim = raw.get("head_dim")
    head_dim = int(given_head_dim) if given_head_dim else hidden // heads
    bias = bool(raw.get("attention_bias", False))
    return LightConfig(
        model_type=kind,
        vocab_size=int(raw["vocab_size"]),
        hidden_size=hidden,
        intermediate_size=int(raw["intermediate_size"]),
        num_hidden_layers=int(raw["num_hidden_layers"]),
        num_attention_heads=heads,
        num_key_value_heads=int(raw["num_key_value_heads"]),
        head_dim=head_dim,
        rms_norm_eps=float(raw["rms_norm_eps"]),
        rope_theta=_rope_theta(raw),
        max_position_embeddings=int(raw["max_position_embeddings"]),
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
        qkv_bias=kind == "qwen2" or (kind == "llama" and bias),
        o_bias=kind == "llama" and bias,
        mlp_bias=kind == "llama" and bool(raw.get("mlp_bias", False)),
        identity_head_dim=given_head_dim if kind == "qwen2" else head_dim,
    )


def checkpoint_files(model_dir: Path) -> list[Path]:
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise LightModelError(f"{index.name}: {exc}") from None
        return [model_dir / n for n in names]
    single = model_dir / "model.safetensors"
    if not single.is_file():
        raise LightModelError("no model.safetensors")
    return [single]


def checkpoint_bytes(model_dir: Path) -> int:
    """The size of the weights `load_light_model` would read."""
    return sum(f.stat().st_size for f in checkpoint_files(model_dir) if f.is_file())
