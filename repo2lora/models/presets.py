"""Models built in-process from a config (random init, seeded): `tiny-random` for tests and the
placeholder default used until a pretrained default ships; their byte-level tokenizer; and the
shapes of public code models (configs only: no weights), which the training estimate and the
GPU training benchmark build from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config

EOS = "<|endoftext|>"
FIM_PREFIX = "<|fim_prefix|>"
FIM_SUFFIX = "<|fim_suffix|>"
FIM_MIDDLE = "<|fim_middle|>"
SPECIAL_TOKENS = (EOS, FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE)


@dataclass(frozen=True)
class Preset:
    """A random-init Llama-architecture model defined by its config and seed."""

    name: str
    config: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    description: str = ""


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer with no merges: 256 byte tokens plus the special tokens. Any text
    round-trips; nothing is trained or downloaded."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS,
        bos_token=EOS,
        pad_token=EOS,
        unk_token=None,
        model_max_length=1024,
    )


_BYTE_VOCAB = 256 + len(SPECIAL_TOKENS)

PRESETS: dict[str, Preset] = {
    "tiny-random": Preset(
        name="tiny-random",
        config=dict(
            vocab_size=_BYTE_VOCAB,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=1024,
            tie_word_embeddings=True,
            # wider than the usual 0.02: its logits then span a range an adapter can move,
            # so training tests can show learning on a model that was never pretrained
            initializer_range=0.1,
        ),
        description="tiny random-init Llama (64 hidden, 2 layers), byte tokenizer; for tests",
    ),
    "random-default": Preset(
        name="random-default",
        config=dict(
            vocab_size=_BYTE_VOCAB,
            hidden_size=256,
            intermediate_size=688,
            num_hidden_layers=4,
            num_attention_heads=8,
            num_key_value_heads=4,
            max_position_embeddings=1024,
            tie_word_embeddings=True,
        ),
        description=(
            "UNTRAINED random-init placeholder (256 hidden, 4 layers), used only when the "
            "embedded default is not installed; its completions are noise: pass --model"
        ),
    ),
}


def preset_config(preset: Preset) -> LlamaConfig:
    cfg = LlamaConfig(**preset.config)
    cfg.bos_token_id = cfg.eos_token_id = cfg.pad_token_id = 256  # EOS is the first special
    return cfg


def build_preset(preset: Preset) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """The preset's model, initialised from its seed without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(preset.seed)
        model = LlamaForCausalLM(preset_config(preset))
    model.eval()
    return model, byte_tokenizer()


# The config.json fields that decide the shapes of public checkpoints (weights not included).
REFERENCE_SHAPES: dict[str, dict[str, Any]] = {
    "qwen2.5-coder-0.5b": dict(
        vocab_size=151936,
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    ),
    "qwen2.5-coder-1.5b": dict(
        vocab_size=151936,
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    ),
}


def reference_config(name: str) -> Qwen2Config:
    """The config of a reference shape (Qwen2 architecture), for a random-init model of that
    shape or an estimate."""
    cfg = Qwen2Config(max_position_embeddings=32768, **REFERENCE_SHAPES[name])
    cfg.bos_token_id = cfg.eos_token_id = cfg.pad_token_id = 256  # the byte tokenizer's EOS
    return cfg
