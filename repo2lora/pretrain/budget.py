"""Sizing from the compute budget: the model shape and step count that a token budget, or
the compute of some minutes on this device, buys under C = 6 N D and D = 20 N (about 20
tokens per parameter), and the FLOP accounting behind tokens/s and model FLOPs utilisation."""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from repo2lora.pretrain.config import PretrainConfig, autocast, use_bf16

TOKENS_PER_PARAM = 20
# Peak dense bf16 FLOP/s of known accelerators, for model FLOPs utilisation.
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12}


def model_shape(params: int, vocab: int, context: int = 512) -> dict[str, int]:
    """The Llama shape on a fixed ladder whose parameter count (tied embeddings counted once)
    is closest to `params`: head dim 32 (64 from 512 wide), about 48 wide per layer, GQA 2:1,
    SwiGLU width 8/3 of the hidden size."""
    best: dict[str, int] = {}
    best_gap = float("inf")
    for h in (64, 96, 128, 160, 192, 256, 320, 384, 448, 512, 640, 768, 896, 1024, 1280, 1536):
        head_dim = 64 if h >= 512 else 32
        heads = h // head_dim
        kv = max(1, heads // 2)
        layers = max(2, min(24, round(h / 48)))
        inter = int(math.ceil(8 * h / 3 / 16) * 16)
        n = count_params(h, layers, heads, kv, inter, vocab)
        gap = abs(math.log(n / params))
        if gap < best_gap:
            best_gap = gap
            best = {
                "hidden_size": h,
                "layers": layers,
                "heads": heads,
                "kv_heads": kv,
                "intermediate": inter,
            }
    return best


def count_params(h: int, layers: int, heads: int, kv: int, inter: int, vocab: int) -> int:
    kv_dim = h // heads * kv
    per_layer = 2 * h * h + 2 * h * kv_dim + 3 * h * inter + 2 * h
    return vocab * h + layers * per_layer + h


def plan_budget(flops_per_second: float, seconds: float) -> tuple[int, int]:
    """(parameters, tokens) for a compute budget C = flops/s x seconds under C = 6 N D and
    D = 20 N (about 20 tokens per parameter)."""
    c = flops_per_second * seconds
    n = math.sqrt(c / (6 * TOKENS_PER_PARAM))
    return int(n), TOKENS_PER_PARAM * int(n)


def flops_per_token(n_params: int, layers: int, hidden: int, context: int) -> float:
    """Training FLOPs per token: 6N for the weights plus the attention scores (6 L T d)."""
    return 6 * n_params + 6 * layers * context * hidden


def measure_flops(precision: str = "auto", device: str | None = None) -> float:
    """Training FLOP/s this device reaches on a mid-size model (a few steps, median)."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    shape = model_shape(3_000_000 if dev.type == "cpu" else 100_000_000, 8192)
    cfg = LlamaConfig(
        vocab_size=8192,
        hidden_size=shape["hidden_size"],
        intermediate_size=shape["intermediate"],
        num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"],
        num_key_value_heads=shape["kv_heads"],
        max_position_embeddings=512,
        tie_word_embeddings=True,
    )
    model: Any = LlamaForCausalLM(cfg).to(dev)  # type: ignore[arg-type]
    n = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    bs = 4 if dev.type == "cpu" else 32
    x = torch.randint(0, 8192, (bs, 512), device=dev)
    times = []
    for _ in range(4):
        t = time.perf_counter()
        with autocast(dev, use_bf16(precision, dev)):
            loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    dt = float(np.median(times[1:]))
    return flops_per_token(n, shape["layers"], shape["hidden_size"], 512) * bs * 512 / dt


def config_for_budget(
    base: PretrainConfig,
    tokens: int | None,
    minutes: float,
    flops_per_second: float | None,
    max_params: int | None = None,
) -> tuple[PretrainConfig, dict[str, Any]]:
    """Size the model and the step count from the budget: `tokens` given, or the compute of
    `minutes` at `flops_per_second` (measured when None), under D = 20 N; at most `max_params`
    parameters (the planned tokens stay: a capped model trains on more tokens per parameter)."""
    plan: dict[str, Any] = {}
    if tokens is None:
        fps = flops_per_second or measure_flops(base.precision)
        params, tokens = plan_budget(fps, minutes * 60)
        plan.update(flops_per_second=fps, seconds=minutes * 60)
    else:
        params = tokens // TOKENS_PER_PARAM
    if max_params:
        params = min(params, max_params)
    shape = model_shape(params, base.vocab_size, base.context)
    steps = max(1, tokens // (base.batch_size * base.context))
    cfg = replace(
        base,
        steps=steps,
        warmup_steps=min(base.warmup_steps, max(1, steps // 20)),
        hidden_size=shape["hidden_size"],
        layers=shape["layers"],
        heads=shape["heads"],
        kv_heads=shape["kv_heads"],
        intermediate=shape["intermediate"],
    )
    plan.update(target_params=params, tokens=tokens, shape=shape, steps=steps)
    return cfg, plan
