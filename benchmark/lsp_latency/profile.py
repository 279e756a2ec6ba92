"""Where one completion's time goes (`--profile`): tokenisation, prefill, per-token decode,
detokenisation, post-processing and the session's bookkeeping, for each decoder variant, with
the arithmetic and memory floors of a token."""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from benchmark.lsp_latency.in_process import started_session
from benchmark.lsp_latency.workload import VARIANTS, cursors, median_of
from lsp_server.config import ServerConfig
from lsp_server.prompt import Prompt
from repo2lora.adapters.peft_dir import load_peft_adapter
from repo2lora.decoding import TransformersDecoder, set_linear_layout
from repo2lora.generation import PromptCache

# -- the profile ----------------------------------------------------------------------------


def _linear_weights(model: Any) -> list[torch.Tensor]:
    return [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]


def token_floors(model: Any, context: int) -> dict[str, Any]:
    """What one decoded token must cost at `context` positions: its FLOPs over this machine's
    matrix-multiply rate (on the model's own layer shapes), and the bytes it must read (every
    weight once, plus the keys and values) over this machine's memory read bandwidth."""
    cfg = model.config
    weights = _linear_weights(model)
    layers, heads = cfg.num_hidden_layers, cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    kv_heads = getattr(cfg, "num_key_value_heads", heads)
    flops = 2 * sum(w.numel() for w in weights) + 4 * layers * heads * head_dim * context
    size = weights[0].element_size()
    kv_bytes = 2 * layers * kv_heads * head_dim * context * size
    weight_bytes = sum(w.numel() * w.element_size() for w in weights)
    hidden = cfg.hidden_size
    inter = getattr(cfg, "intermediate_size", 4 * hidden)
    device = weights[0].device
    x = torch.randn(256, hidden, device=device)
    w = torch.randn(inter, hidden, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    rates = []
    for _ in range(7):
        sync()
        t = time.perf_counter()
        for _ in range(10):
            F.linear(x, w)
        sync()
        rates.append(10 * 2 * 256 * hidden * inter / (time.perf_counter() - t))
    big = torch.ones(64 * 2**20 // 4, device=device)  # 64 MB: more than any CPU cache
    bandwidth = []
    for _ in range(7):
        sync()
        t = time.perf_counter()
        big.sum()
        sync()
        bandwidth.append(big.numel() * 4 / (time.perf_counter() - t))
    rate, bw = statistics.median(rates), statistics.median(bandwidth)
    return {
        "context_tokens": context,
        "flops_per_token": flops,
        "matmul_gflops_per_s": round(rate / 1e9, 1),
        "compute_floor_ms": round(1000 * flops / rate, 4),
        "bytes_per_token": weight_bytes + kv_bytes,
        "memory_read_gb_per_s": round(bw / 1e9, 1),
        "memory_floor_ms": round(1000 * (weight_bytes + kv_bytes) / bw, 4),
    }


def profile(spec: str | None, root: Path, n: int, device: str) -> dict[str, Any]:
    """Where a single-line completion's time goes, through `Session.complete` (cold prompts),
    for each variant (decoder, weight layout), interleaved; and the per-token cost of a fixed
    32-token decode."""
    session, first_adapter_s = started_session(spec, root, device)
    gen, base = session.generation, session.encoder
    assert gen is not None and base is not None
    prompts = [p for _, p in cursors(root, n)]
    served = session.config
    fixed = replace(served, max_new_tokens=33, single_line=False)
    stages: dict[str, dict[str, list[float]]] = {}

    caches = {variant: PromptCache() for variant in VARIANTS}  # each keeps its decoder
    for variant, (_, _, all_logits) in VARIANTS.items():
        if all_logits:
            caches[variant].decoder = TransformersDecoder(gen.model, all_logits=True)

    def run(variant: str, prompt: Prompt, config: ServerConfig) -> None:
        kind, layout, _ = VARIANTS[variant]
        set_linear_layout(base.model, layout)  # a copy when it changes: outside the timing
        set_linear_layout(gen.model, layout)
        session.config = replace(config, decoder=kind)
        session.cache.clear()
        session.prompt_cache = caches[variant]
        session.prompt_cache.forget()
        t0, cpu0 = time.perf_counter(), time.thread_time()
        res = session.complete(prompt, lambda: False)
        wall, cpu = time.perf_counter() - t0, time.thread_time() - cpu0
        t = res.timings
        assert t is not None
        assert t.decoder == ("StaticKVDecoder" if kind == "auto" else "TransformersDecoder")
        into = stages.setdefault(variant, {})
        if config is fixed:  # the fixed-length decode: only its per-token cost
            per_token = 1000 * t.decode / max(1, t.new_tokens)
            into.setdefault("fixed_32_decode_ms_per_token", []).append(per_token)
            return
        parts = {
            "tokenize_ms": t.tokenize,
            "prefill_ms": t.prefill,
            "decode_ms": t.decode,
            "detokenize_ms": t.detokenize,
            "postprocess_ms": t.postprocess,
        }
        parts["bookkeeping_ms"] = wall - sum(parts.values())
        parts["total_ms"] = wall
        parts["total_cpu_ms"] = cpu  # this thread's CPU time: less moved by other processes
        for k, v in parts.items():
            into.setdefault(k, []).append(1000 * v)
        if t.new_tokens:
            into.setdefault("decode_ms_per_token", []).append(1000 * t.decode / t.new_tokens)
        into.setdefault("prompt_tokens", []).append(t.prompt_tokens)
        into.setdefault("new_tokens", []).append(t.new_tokens)

    for variant in VARIANTS:  # warm-up
        run(variant, prompts[0], served)
    stages.clear()
    names = list(VARIANTS)
    for i, p in enumerate(prompts):  # the order rotating, so none always runs first
        for variant in names[i % len(names) :] + names[: i % len(names)]:
            run(variant, p, served)
    for i, p in enumerate(prompts):
        for variant in names[i % len(names) :] + names[: i % len(names)]:
            run(variant, p, fixed)
    session.config = served
    set_linear_layout(base.model, "column")
    set_linear_layout(gen.model, "column")
    session.prompt_cache = PromptCache()
    swaps = []
    weights = load_peft_adapter(str(session.status()["adapter"]["path"]))
    for _ in range(10):
        gen.install(weights, commit=gen.installed.commit)
        swaps.append({k: 1000 * v for k, v in gen.swap_seconds.items()})
    session.close()
    by_variant = {
        variant: {k: median_of(v) for k, v in values.items()} for variant, values in stages.items()
    }
    now = by_variant["static_kv_column_major"]
    before = by_variant["before"]
    floors = token_floors(gen.model, int(now["prompt_tokens"] or 0))
    floor = max(floors["compute_floor_ms"], floors["memory_floor_ms"])
    fast = now["fixed_32_decode_ms_per_token"] or math.nan
    return {
        "model": session.status()["model"]["description"],
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "startup_to_first_adapter_s": round(first_adapter_s, 3),
        "requests": len(prompts),
        "stages_median": by_variant,
        "adapter_swap_ms": {
            k: median_of([s[k] for s in swaps]) for k in ("prepare", "wait", "locked")
        },
        "token_floors": floors,
        "decode_per_token_over_floor": {
            "compute": round(fast / floors["compute_floor_ms"], 1),
            "memory": round(fast / floors["memory_floor_ms"], 1),
            "larger_floor": round(fast / floor, 1),
        },
        "speedup_over_before": {
            k: round((before[k] or math.nan) / (now[k] or math.nan), 2)
            for k in ("fixed_32_decode_ms_per_token", "prefill_ms", "total_ms", "total_cpu_ms")
        },
    }
