"""A Llama-family causal LM (llama, qwen2, mistral) and its tokenizer loaded without
transformers: `config.json`, the safetensors weights and `tokenizer.json`, read directly. The
language server serves the base model's first completions with it while transformers and peft,
which take most of a start (seconds of imports), load in the background.

The module tree has transformers' names and shapes (`model.embed_tokens`,
`model.layers[i].self_attn.q_proj`, ..., `model.norm`, `model.rotary_emb`, `lm_head`) and every
module computes what transformers' does, op for op, so `repo2lora.decoding.StaticKVDecoder`
runs it unchanged and its logits equal the transformers model's bit for bit
(`tests/test_light_llama.py`). What it would not reproduce exactly is refused by
`read_light_config` / `load_light_tokenizer` with a `LightModelError`, and such a model starts
through transformers as before: rope scaling, sliding windows, weights other than float32,
quantization, tokenizer classes that transformers rebuilds or post-processes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load
from tokenizers import Tokenizer
from torch import nn

ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "mistral": "MistralForCausalLM",
}
# tokenizer classes that transformers builds from tokenizer.json as it is
_PLAIN_TOKENIZERS = frozenset({"TokenizersBackend", "PreTrainedTokenizerFast"})
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


# -- the modules, each computing what its transformers counterpart computes ----------------------


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """q [1, heads, n, head_dim], k [1, kv_heads, n, head_dim]; cos, sin [1, n, head_dim]."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return (q * cos) + (rotate_half(q) * sin), (k * cos) + (rotate_half(k) * sin)


def repeat_kv(hidden_states: torch.Tensor, n_rep: int) -> torch.Tensor:
    """[1, kv_heads, n, head_dim] -> [1, kv_heads * n_rep, n, head_dim]."""
    batch, kv_heads, n, head_dim = hidden_states.shape
    if n_rep == 1:
        return hidden_states
    expanded = hidden_states[:, :, None, :, :].expand(batch, kv_heads, n_rep, n, head_dim)
    return expanded.reshape(batch, kv_heads * n_rep, n, head_dim)


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states.to(input_dtype)


class RotaryEmbedding(nn.Module):
    """The default rope: cos and sin [1, n, head_dim] for positions [1, n]."""

    inv_freq: torch.Tensor

    def __init__(self, cfg: LightConfig) -> None:
        super().__init__()
        dim = cfg.head_dim
        exponents = torch.arange(0, dim, 2, dtype=torch.float) / dim
        self.register_buffer("inv_freq", 1.0 / (cfg.rope_theta**exponents), persistent=False)

    def forward(
        self, x: torch.Tensor, position_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        inv_freq = self.inv_freq.to(device=x.device, dtype=torch.float)
        freqs = position_ids[..., None].float() * inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype=x.dtype), emb.sin().to(dtype=x.dtype)


class Attention(nn.Module):
    """The projections and constants `StaticKVDecoder` reads; it makes the SDPA call itself."""

    def __init__(self, cfg: LightConfig) -> None:
        super().__init__()
        d, h, kv = cfg.head_dim, cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = d
        self.num_key_value_groups = h // kv
        self.scaling = d**-0.5
        self.attention_dropout = 0.0
        self.q_proj = nn.Linear(cfg.hidden_size, h * d, bias=cfg.qkv_bias)
        self.k_proj = nn.Linear(cfg.hidden_size, kv * d, bias=cfg.qkv_bias)
        self.v_proj = nn.Linear(cfg.hidden_size, kv * d, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(h * d, cfg.hidden_size, bias=cfg.o_bias)


class MLP(nn.Module):
    def __init__(self, cfg: LightConfig) -> None:
        super().__init__()
        hidden, inner = cfg.hidden_size, cfg.intermediate_size
        self.gate_proj = nn.Linear(hidden, inner, bias=cfg.mlp_bias)
        self.up_proj = nn.Linear(hidden, inner, bias=cfg.mlp_bias)
        self.down_proj = nn.Linear(inner, hidden, bias=cfg.mlp_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: LightConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)


class LightBody(nn.Module):
    def __init__(self, cfg: LightConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class LightLlamaForCausalLM(nn.Module):
    """The model; `repo2lora.decoding.StaticKVDecoder` runs its forward."""

    def __init__(self, cfg: LightConfig) -> None:
        super().__init__()
        self.config = cfg
        with torch.device("meta"):  # shapes only: the weights come from the checkpoint
            self.model = LightBody(cfg)
            self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.model.rotary_emb = RotaryEmbedding(cfg)


def _checkpoint_files(model_dir: Path) -> list[Path]:
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
    return sum(f.stat().st_size for f in _checkpoint_files(model_dir) if f.is_file())


def load_light_model(model_dir: Path, cfg: LightConfig | None = None) -> LightLlamaForCausalLM:
    """The model in `model_dir`, frozen, in eval mode, weights as stored (row-major)."""
    cfg = cfg or read_light_config(model_dir)
    model = LightLlamaForCausalLM(cfg)
    expected = {k for k in model.state_dict() if not k.startswith("lm_head.")}
    if not cfg.tie_word_embeddings:
        expected.add("lm_head.weight")
    state: dict[str, torch.Tensor] = {}
    for f in _checkpoint_files(model_dir):
        try:  # read into memory, not mapped: the file may change under a running server
            part = load(f.read_bytes())
        except Exception as exc:  # safetensors raises its own error types
            raise LightModelError(f"{f.name}: {exc}") from None
        if set(part) - expected - {"lm_head.weight"}:
            raise LightModelError(f"{f.name} holds weights this layout does not have")
        state.update(part)
    if cfg.tie_word_embeddings:
        state.pop("lm_head.weight", None)  # transformers ties it to the embedding all the same
    if set(state) != expected:
        raise LightModelError(f"weights missing: {sorted(expected - set(state))[:3]}")
    if any(t.dtype != torch.float32 for t in state.values()):
        raise LightModelError("weights other than float32")
    try:
        model.load_state_dict(state, strict=False, assign=True)
    except RuntimeError as exc:  # a shape that does not match the config
        raise LightModelError(str(exc).splitlines()[0]) from None
    if cfg.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    model.eval()
    model.requires_grad_(False)
    return model


# -- the tokenizer -------------------------------------------------------------------------------


class LightTokenizer:
    """`tokenizer.json` with the calls `repo2lora.generation` makes of a transformers tokenizer:
    `tok(text, add_special_tokens=False)["input_ids"]`, `decode`, `eos_token_id`."""

    def __init__(self, tokenizer: Tokenizer, eos_token_id: int) -> None:
        self.backend = tokenizer
        self.eos_token_id = eos_token_id

    def __call__(
        self, text: str, add_special_tokens: bool = False, verbose: bool = False
    ) -> dict[str, list[int]]:
        if add_special_tokens:  # transformers may add its own; the prompts never ask for them
            raise ValueError("the light tokenizer encodes without special tokens only")
        return {"input_ids": self.backend.encode(text, add_special_tokens=False).ids}

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return str(self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens))


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def load_light_tokenizer(model_dir: Path) -> LightTokenizer:
    """`model_dir`'s tokenizer.json, when transformers would use it as it is."""
    try:
        meta = json.loads((model_dir / "tokenizer_config.json").read_text())
        backend = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    except Exception as exc:  # a missing or unreadable file: transformers decides what it is
        raise LightModelError(f"tokenizer: {exc}") from None
    if meta.get("tokenizer_class") not in _PLAIN_TOKENIZERS:
        raise LightModelError(f"tokenizer class {meta.get('tokenizer_class')}")
    for key in ("add_prefix_space", "split_special_tokens", "clean_up_tokenization_spaces"):
        if meta.get(key):
            raise LightModelError(f"tokenizer option {key}")
    for tid, added in (meta.get("added_tokens_decoder") or {}).items():
        if backend.token_to_id(_token_text(added) or "") != int(tid):
            raise LightModelError("added tokens that tokenizer.json does not hold")
    eos = _token_text(meta.get("eos_token"))
    eos_id = backend.token_to_id(eos) if eos is not None else None
    if eos_id is None:
        raise LightModelError("no end-of-sequence token")
    return LightTokenizer(backend, eos_id)
