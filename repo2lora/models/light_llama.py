"""A Llama-family causal LM (llama, qwen2, mistral) and its tokenizer loaded without
transformers: `config.json`, the safetensors weights and `tokenizer.json`, read directly. The
language server serves the base model's first completions with it while transformers and peft,
which take most of a start (seconds of imports), load in the background.

The module tree has transformers' names and shapes (`model.embed_tokens`,
`model.layers[i].self_attn.q_proj`, ..., `model.norm`, `model.rotary_emb`, `lm_head`) and every
module computes what transformers' does, op for op, so `repo2lora.decoding.StaticKVDecoder`
runs it unchanged and its logits equal the transformers model's bit for bit
(`tests/test_light_llama.py`). What it would not reproduce exactly is refused with a
`LightModelError` (`repo2lora.models.light_config` says which configs; `load_light_tokenizer`
which tokenizers), and such a model starts through transformers as before.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load
from tokenizers import Tokenizer
from torch import nn

from repo2lora.models.light_config import (
    LightConfig,
    LightModelError,
    checkpoint_files,
    read_light_config,
)

# tokenizer classes that transformers builds from tokenizer.json as it is
_PLAIN_TOKENIZERS = frozenset({"TokenizersBackend", "PreTrainedTokenizerFast"})

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


def linear_around(weight: torch.Tensor | nn.Parameter, bias: torch.Tensor | None) -> nn.Linear:
    """An nn.Linear holding `weight` [out, in] (the same tensor when it is a Parameter already,
    as a tied head is), without the random init its constructor does: on real shapes that is
    wasted time, and on a meta device it imports torch._dynamo (seconds)."""
    layer = nn.Linear.__new__(nn.Linear)
    nn.Module.__init__(layer)
    layer.out_features, layer.in_features = weight.shape
    layer.weight = weight if isinstance(weight, nn.Parameter) else nn.Parameter(weight)
    layer.register_parameter("bias", None if bias is None else nn.Parameter(bias))
    return layer


class Weights:
    """The checkpoint's tensors, taken one by one by the modules that hold them, each checked
    against the shape the config gives it."""

    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        self._state = state

    def take(self, name: str, *shape: int) -> torch.Tensor:
        t = self._state.pop(name, None)
        if t is None:
            raise LightModelError(f"the checkpoint has no {name}")
        if tuple(t.shape) != shape:
            raise LightModelError(f"{name} is {tuple(t.shape)}, the config says {shape}")
        if t.dtype != torch.float32:
            raise LightModelError(f"{name} is {t.dtype}, not float32")
        return t

    def linear(self, prefix: str, n_in: int, n_out: int, bias: bool) -> nn.Linear:
        weight = self.take(f"{prefix}.weight", n_out, n_in)
        return linear_around(weight, self.take(f"{prefix}.bias", n_out) if bias else None)

    def left(self) -> list[str]:
        return sorted(self._state)


class RMSNorm(nn.Module):
    def __init__(self, weight: torch.Tensor, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)
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

    def __init__(self, cfg: LightConfig, w: Weights, prefix: str) -> None:
        super().__init__()
        d, h, kv, size = (
            cfg.head_dim,
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.hidden_size,
        )
        self.head_dim = d
        self.num_key_value_groups = h // kv
        self.scaling = d**-0.5
        self.attention_dropout = 0.0
        self.q_proj = w.linear(f"{prefix}.q_proj", size, h * d, cfg.qkv_bias)
        self.k_proj = w.linear(f"{prefix}.k_proj", size, kv * d, cfg.qkv_bias)
        self.v_proj = w.linear(f"{prefix}.v_proj", size, kv * d, cfg.qkv_bias)
        self.o_proj = w.linear(f"{prefix}.o_proj", h * d, size, cfg.o_bias)


class MLP(nn.Module):
    def __init__(self, cfg: LightConfig, w: Weights, prefix: str) -> None:
        super().__init__()
        size, inner, bias = cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias
        self.gate_proj = w.linear(f"{prefix}.gate_proj", size, inner, bias)
        self.up_proj = w.linear(f"{prefix}.up_proj", size, inner, bias)
        self.down_proj = w.linear(f"{prefix}.down_proj", inner, size, bias)
        self.act_fn = F.silu  # transformers' name (`StaticKVDecoder`'s lean path calls it)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: LightConfig, w: Weights, prefix: str) -> None:
        super().__init__()
        size, eps = cfg.hidden_size, cfg.rms_norm_eps
        self.input_layernorm = RMSNorm(w.take(f"{prefix}.input_layernorm.weight", size), eps)
        self.self_attn = Attention(cfg, w, f"{prefix}.self_attn")
        norm = w.take(f"{prefix}.post_attention_layernorm.weight", size)
        self.post_attention_layernorm = RMSNorm(norm, eps)
        self.mlp = MLP(cfg, w, f"{prefix}.mlp")


class LightBody(nn.Module):
    def __init__(self, cfg: LightConfig, w: Weights) -> None:
        super().__init__()
        embed = w.take("model.embed_tokens.weight", cfg.vocab_size, cfg.hidden_size)
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size, _weight=embed)
        self.layers = nn.ModuleList(
            DecoderLayer(cfg, w, f"model.layers.{i}") for i in range(cfg.num_hidden_layers)
        )
        self.norm = RMSNorm(w.take("model.norm.weight", cfg.hidden_size), cfg.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(cfg)


class LightLlamaForCausalLM(nn.Module):
    """The model, built around a checkpoint's tensors; `repo2lora.decoding.StaticKVDecoder`
    runs its forward."""

    def __init__(self, cfg: LightConfig, w: Weights) -> None:
        super().__init__()
        self.config = cfg
        self.model = LightBody(cfg, w)
        if cfg.tie_word_embeddings:  # one tensor, as transformers ties it
            self.lm_head = linear_around(self.model.embed_tokens.weight, None)
        else:
            self.lm_head = w.linear("lm_head", cfg.hidden_size, cfg.vocab_size, False)


def load_light_model(model_dir: Path, cfg: LightConfig | None = None) -> LightLlamaForCausalLM:
    """The model in `model_dir`, frozen, in eval mode, weights as stored (row-major); a
    LightModelError when the checkpoint does not hold exactly the weights the config names."""
    cfg = cfg or read_light_config(model_dir)
    state: dict[str, torch.Tensor] = {}
    for f in checkpoint_files(model_dir):
        try:  # read into memory, not mapped: the file may change under a running server
            state.update(load(f.read_bytes()))
        except Exception as exc:  # safetensors raises its own error types
            raise LightModelError(f"{f.name}: {exc}") from None
    if cfg.tie_word_embeddings:
        state.pop("lm_head.weight", None)  # transformers ties it to the embedding all the same
    w = Weights(state)
    model = LightLlamaForCausalLM(cfg, w)
    if w.left():
        raise LightModelError(f"weights this layout does not have: {w.left()[:3]}")
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
