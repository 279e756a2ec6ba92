"""The pretraining run's settings, the precision rule (bf16 where the hardware has it) and the
one error type of pretraining."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from repo_encoder.errors import UserError


@dataclass(frozen=True)
class PretrainConfig:
    vocab_size: int = 8192
    hidden_size: int = 256
    layers: int = 4
    heads: int = 8
    kv_heads: int = 4
    intermediate: int = 688
    context: int = 512
    batch_size: int = 16
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 200
    steps: int = 20_000
    minutes: float = 0.0  # stop this invocation after this many minutes (0: run all steps)
    eval_every: int = 250
    eval_bytes: int = 200_000  # held-out text for the bits-per-byte curve
    report_bytes: int = 1_000_000  # held-out text for the final bits per byte
    checkpoint_every: int = 250
    seed: int = 0
    tokenizer_sample_bytes: int = 30_000_000
    precision: str = "auto"  # "auto" (bf16 where supported) | "bf16" | "fp32"
    compile: bool = False  # torch.compile the model (CUDA)


# Fields that may change when a run is resumed: they steer this invocation, not the training.
RESUMABLE_FIELDS = frozenset({"minutes", "eval_every", "checkpoint_every", "compile"})


class PretrainError(UserError):
    """A run directory or corpus that cannot be used as asked; the message says what to do."""


# ---- size from the compute budget ---------------------------------------------------------


def use_bf16(precision: str, device: torch.device) -> bool:
    """bf16 autocast: asked for, or "auto" on CUDA with bf16 and on CPUs with AVX512-BF16/AMX
    (about twice as fast there as float32 matmuls)."""
    if precision == "fp32":
        return False
    if precision == "bf16":
        return True
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast(device: torch.device, bf16: bool) -> Any:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
