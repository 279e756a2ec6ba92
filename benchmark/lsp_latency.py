"""Latency of the language server's completions, with the repository adapter vs the base
model, and what serving costs: start-up, adapter swap time and memory. Prints one JSON object;
never fails on a missed target.

In process, through the functions the server runs (`Session`, `GenerationModel`,
`generate_completion` + `postprocess`): single-line completions at cursors in real source files,
base / merged adapter / PEFT adapter interleaved so machine load hits all alike; typing along at
a cursor (the prompt's keys and values reused keystroke after keystroke, as in an editor); a
fixed-length decode for the per-token cost; a retrieval prompt (bm25s top chunks in the same
token budget) for comparison. End to end: the real `repo2lora serve --stdio` driven by a pygls
client: time to `initialize`, to the first completion (base model), to the first
adapter-backed completion, latency of a few requests, and its RSS.

`--profile` writes down where one completion's time goes instead: tokenisation, prefill,
per-token decode, detokenisation, post-processing and the session's bookkeeping, for each
decoder (`repo2lora.decoding`) interleaved, with the arithmetic and memory floors of a token.

    python -m benchmark.lsp_latency [--models tiny-random,default] [--requests 40] [--e2e 10]
    python -m benchmark.lsp_latency --profile [--models default] [--requests 30]
    python -m benchmark.lsp_latency --startup [--startup-runs 5]   # benchmark/lsp_startup.py
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import math
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from benchmark.retrieval import ChunkRetriever, rag_prompt
from benchmark.speed.scaffold import machine_info
from lsp_server.config import ServerConfig
from lsp_server.generation_model import GenerationModel
from lsp_server.prompt import Prompt, postprocess, prompt_at
from lsp_server.session import QuietEvents, Session, resolve_models
from repo2lora.adapters.peft_dir import load_peft_adapter
from repo2lora.decoding import DecoderKind, TransformersDecoder, WeightLayout, set_linear_layout
from repo2lora.generation import CompletionTimings, GenerationConfig, PromptCache
from repo2lora.generation import generate_completion as generate
from repo_encoder.chunker import ChunkerConfig, chunk_files

SEED = 7
TARGETS = {
    "single_line_p50_ms": 60.0,
    "single_line_p95_ms": 150.0,
    "decode_ms_per_token": 3.0,
    "adapter_overhead_pct_merged": 5.0,
    "swap_locked_ms": 5.0,
    "start_to_first_completion_s": 3.0,
}
RETRIEVAL_TOKENS = 256  # at most this much of the prompt budget goes to retrieved chunks
RETRIEVAL_TOP_K = 8
TYPED_CHARS = 12  # keystrokes typed along at each cursor
SOURCE_PACKAGES = ("repo_encoder", "evo_state")  # real Python code for the served repository
# the profile's variants: (decoder, weight layout, every position's logits)
VARIANTS: dict[str, tuple[DecoderKind, WeightLayout, bool]] = {
    "before": ("transformers", "row", True),  # the path before the static-KV decoder
    "transformers_last_logits": ("transformers", "row", False),
    "static_kv_row_major": ("auto", "row", False),
    "static_kv_column_major": ("auto", "column", False),  # what the server runs
}
_CURSOR = re.compile(r"(return |= )")


# -- the served repository and the cursors --------------------------------------------------


def _git(root: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "bench",
        "GIT_AUTHOR_EMAIL": "bench@example.com",
        "GIT_COMMITTER_NAME": "bench",
        "GIT_COMMITTER_EMAIL": "bench@example.com",
        "GIT_AUTHOR_DATE": "2026-01-01T00:00:00+00:00",
        "GIT_COMMITTER_DATE": "2026-01-01T00:00:00+00:00",
    }
    out = subprocess.run(
        ["git", "-c", "commit.gpgsign=false", *args],
        cwd=root,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def make_repository(root: Path, sources: list[Path] | None = None) -> Path:
    """A git repository holding copies of `sources` (directories of Python code; by default
    this project's own source packages)."""
    project = Path(__file__).resolve().parent.parent
    for src in sources or [project / pkg for pkg in SOURCE_PACKAGES]:
        shutil.copytree(src, root / src.name, ignore=shutil.ignore_patterns("__pycache__"))
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "sources")
    return root


def cursors(root: Path, n: int) -> list[tuple[Path, Prompt]]:
    """`n` cursors right after `return ` or `= ` in the repository's files (seeded)."""
    found = []
    for f in sorted(root.rglob("*.py")):
        text = f.read_text()
        for m in _CURSOR.finditer(text):
            line_end = text.find("\n", m.end())
            if line_end > m.end() + 3:  # something follows on the line: a real completion
                found.append((f, prompt_at(text, m.end())))
    random.Random(SEED).shuffle(found)
    return found[:n]


# -- timing -------------------------------------------------------------------------------


def _summary(ms: list[float]) -> dict[str, float]:
    s = sorted(ms)
    return {
        "p50_ms": round(statistics.median(s), 2),
        "p95_ms": round(s[min(len(s) - 1, math.ceil(0.95 * len(s)) - 1)], 2),
        "mean_ms": round(statistics.mean(s), 2),
        "n": len(s),
    }


def _median(xs: list[float], digits: int = 3) -> float | None:
    return round(statistics.median(xs), digits) if xs else None


def _ratio(before: dict[str, float], after: dict[str, float]) -> float:
    return round(before["p50_ms"] / after["p50_ms"], 2)


def _overhead(adapted: dict[str, float], base: dict[str, float]) -> float:
    return round(100 * (adapted["p50_ms"] / base["p50_ms"] - 1), 2)


def _time(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return 1000 * (time.perf_counter() - t), out


Runner = Callable[[str, Prompt], int]


def interleaved(
    runners: dict[str, Runner], prompts: list[Prompt], texts: dict[str, list[str]] | None = None
) -> dict[str, dict[str, Any]]:
    """Every runner on every prompt, round-robin (the order rotating from prompt to prompt, so
    none always runs first), after one warm-up each. A runner returns the length of what it
    produced (characters)."""
    ms: dict[str, list[float]] = {k: [] for k in runners}
    chars: dict[str, list[int]] = {k: [] for k in runners}
    for name, run in runners.items():
        run(texts[name][0] if texts else prompts[0].prefix, prompts[0])
    names = list(runners)
    for i, p in enumerate(prompts):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            run = runners[name]
            prefix = texts[name][i] if texts else p.prefix
            t0 = time.perf_counter()
            n = run(prefix, p)
            ms[name].append(1000 * (time.perf_counter() - t0))
            chars[name].append(n)
    return {
        k: {**_summary(v), "mean_output_chars": round(statistics.mean(chars[k]), 2)}
        for k, v in ms.items()
    }


def decoder(
    model: Any,
    tokenizer: Any,
    cfg: GenerationConfig,
    per_token_ms: list[float] | None = None,
    before: bool = False,
) -> Runner:
    """What `Session.complete` runs under the lock: generate, then post-process. A cold prompt
    every time (nothing reused), with the decoder's buffers kept, as in the server. `before`:
    the decode path before the static-KV decoder (the transformers forward computing every
    position's logits; give it a row-major `model`)."""
    cache = PromptCache()
    if before:
        cache.decoder = TransformersDecoder(model, all_logits=True)  # reused: kinds match
        cfg = replace(cfg, decoder="transformers")

    def run(prefix: str, prompt: Prompt) -> int:
        cache.forget()
        t = CompletionTimings()
        raw = generate(model, tokenizer, prefix, cfg, cache=cache, timings=t)
        postprocess(raw, prompt, cfg.single_line)
        if per_token_ms is not None and t.new_tokens:
            per_token_ms.append(1000 * t.decode / t.new_tokens)
        return len(raw)

    return run


def rss_mb(pid: int | str = "self") -> dict[str, float]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = round(int(value.split()[0]) / 1024, 1)
    return {"rss_mb": out.get("VmRSS", 0.0), "peak_rss_mb": out.get("VmHWM", 0.0)}


def _mb(n_bytes: int) -> float:
    return round(n_bytes / 2**20, 2)


# -- the served session -------------------------------------------------------------------


def started_session(spec: str | None, root: Path, device: str) -> tuple[Session, float]:
    """A session over `root` with its first adapter installed, and the seconds that took."""
    config = ServerConfig(model=spec, watch=False, lora_mode="merged", device=device)
    torch.set_num_threads(config.torch_threads())
    t0 = time.perf_counter()
    session = Session([root], config, resolve_models(spec, None), QuietEvents())
    session.start()
    session.ready.result()
    head = _git(root, "rev-parse", "HEAD")
    while session.status()["adapter"]["commit"] != head:
        if session.last_error:
            raise RuntimeError(session.last_error)
        time.sleep(0.05)
    return session, time.perf_counter() - t0


def typing_along(session: Session, picks: list[tuple[Path, Prompt]]) -> dict[str, Any]:
    """At each cursor, the next characters of the real text typed one at a time, a completion
    after every keystroke (the completion cache cleared, so the model runs): what reusing the
    prompt's keys and values buys over a cold prompt."""
    ms: list[float] = []
    reused: list[int] = []
    for _, p in picks:
        typed = p.suffix.split("\n", 1)[0][:TYPED_CHARS]
        for i in range(len(typed) + 1):
            prompt = Prompt(p.prefix + typed[:i], p.suffix[i:])
            session.cache.clear()
            t0 = time.perf_counter()
            res = session.complete(prompt, lambda: False)
            t = 1000 * (time.perf_counter() - t0)
            if i > 0:  # the first keystroke at a cursor is a cold prompt
                ms.append(t)
                reused.append(res.timings.reused_tokens if res.timings else 0)
    return {**_summary(ms), "reused_tokens_mean": round(statistics.mean(reused), 1)}


def retrieval_comparison(
    session: Session, root: Path, prompts: list[Prompt], budget: int
) -> dict[str, Any]:
    """The base model with bm25s-retrieved chunks in the prompt (`benchmark.retrieval`, as in
    the quality benchmark) vs the adapter alone, both within `budget` prompt tokens."""
    gen, base = session.generation, session.encoder
    assert gen is not None and base is not None
    tok = base.tokenizer
    files = [(str(f.relative_to(root)), f.read_bytes()) for f in sorted(root.rglob("*.py"))]
    retriever = ChunkRetriever(chunk_files(files, ChunkerConfig()).chunks)

    def ids(text: str) -> list[int]:
        return list(tok(text, add_special_tokens=False, verbose=False)["input_ids"])

    cfg = replace(session.config.generation(), max_prompt_tokens=budget, window_step=1)
    query_ms, extra = [], []
    rag_texts = []
    for p in prompts:
        t0 = time.perf_counter()
        rag = rag_prompt(
            p.prefix, retriever, ids, tok.decode, budget, RETRIEVAL_TOP_K, RETRIEVAL_TOKENS
        )
        query_ms.append(1000 * (time.perf_counter() - t0))
        rag_texts.append(rag.text)
        extra.append(len(ids(rag.text)) - min(budget, len(ids(p.prefix))))
    timed = interleaved(
        {
            "adapter_merged_plain": decoder(gen.model, tok, cfg),
            "base_with_retrieval": decoder(base.model, tok, cfg),
        },
        prompts,
        texts={
            "adapter_merged_plain": [p.prefix for p in prompts],
            "base_with_retrieval": rag_texts,
        },
    )
    return {
        **timed,
        "retrieval_query_ms": _summary(query_ms),
        "extra_prompt_tokens_mean": round(statistics.mean(extra), 1),
        "latency_ratio_retrieval_over_adapter": round(
            timed["base_with_retrieval"]["p50_ms"] / timed["adapter_merged_plain"]["p50_ms"], 3
        ),
        "note": "latency only; quality is the quality benchmark's job",
    }


def effective_prompt_budget(model: Any, cfg: GenerationConfig) -> int:
    """The prompt tokens `generate_completion` keeps (the model's positions limit it)."""
    max_pos = getattr(model.config, "max_position_embeddings", None)
    limit = cfg.max_prompt_tokens
    return min(limit, int(max_pos) - cfg.max_new_tokens) if max_pos else limit


# -- in process -----------------------------------------------------------------------------


def in_process(spec: str | None, root: Path, n: int, device: str) -> dict[str, Any]:
    rss_before = rss_mb()["rss_mb"]
    session, first_adapter_s = started_session(spec, root, device)
    st = session.status()
    gen, base = session.generation, session.encoder
    assert gen is not None and base is not None
    tok = base.tokenizer
    head = _git(root, "rev-parse", "HEAD")
    weights = load_peft_adapter(st["adapter"]["path"])
    peft = GenerationModel(base, weights, "peft")
    peft.install(weights, commit=head)

    picks = cursors(root, n)
    prompts = [p for _, p in picks]
    single = session.config.generation()
    row_major = copy.deepcopy(base.model)  # the base model as the path before ran it
    set_linear_layout(row_major, "row")

    def through_session(prefix: str, prompt: Prompt) -> int:
        session.cache.clear()  # time the model, not the cache
        session.prompt_cache.forget()  # a cold prompt, like the other runners
        return len(session.complete(prompt, lambda: False).text)

    runners = {
        "before_base": decoder(row_major, tok, single, before=True),
        "base": decoder(base.model, tok, single),
        "adapter_merged": decoder(gen.model, tok, single),
        "adapter_peft": decoder(peft.model, tok, single),
        "session_complete": through_session,  # the server's path: merged adapter + bookkeeping
    }
    single_line = interleaved(runners, prompts)
    typing = typing_along(session, picks[: max(4, n // 8)])

    fixed_cfg = GenerationConfig(max_new_tokens=16, single_line=False)
    per_token: dict[str, list[float]] = {
        "before_base": [],
        "base": [],
        "adapter_merged": [],
        "adapter_peft": [],
    }
    fixed = interleaved(
        {
            "before_base": decoder(row_major, tok, fixed_cfg, per_token["before_base"], True),
            "base": decoder(base.model, tok, fixed_cfg, per_token["base"]),
            "adapter_merged": decoder(gen.model, tok, fixed_cfg, per_token["adapter_merged"]),
            "adapter_peft": decoder(peft.model, tok, fixed_cfg, per_token["adapter_peft"]),
        },
        prompts[: max(10, n // 2)],
    )
    decode_ms = {k: _median(v) for k, v in per_token.items()}

    # typing along a shown suggestion: the cache answers without the model
    shown = session.complete(prompts[0], lambda: False).text
    typed = Prompt(prompts[0].prefix + shown[:1], prompts[0].suffix)
    typed_ms = [_time(lambda: session.cached(typed))[0] for _ in range(50)] if shown else []

    budget = effective_prompt_budget(gen.model, single)
    retrieval = retrieval_comparison(session, root, prompts, budget)

    # swap: the same adapter installed again, both ways, and an update after a new commit
    swaps: dict[str, list[dict[str, float]]] = {"merged": [], "peft": []}
    for _ in range(10):
        gen.install(weights, commit=head)
        swaps["merged"].append(dict(gen.swap_seconds))
        peft.install(weights, commit=head)
        swaps["peft"].append(dict(peft.swap_seconds))
    read_ms = [_time(lambda: load_peft_adapter(st["adapter"]["path"]))[0] for _ in range(10)]
    (root / "evo_state" / "added.py").write_text("def added_helper(x):\n    return x * 3\n")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "add a helper")
    commit_ms, _ = _time(lambda: session._run_update(False))

    params = sum(p.numel() * p.element_size() for p in base.model.parameters())
    targets = sum(
        base.model.get_submodule(p).weight.numel()
        * base.model.get_submodule(p).weight.element_size()
        for p in weights.tensors
    )
    lora = sum((a.numel() + b.numel()) * a.element_size() for a, b in weights.tensors.values())
    session.close()
    # per decoded token: single-line outputs differ in length once the adapter changes them
    merged_over = round(
        100 * ((decode_ms["adapter_merged"] or math.nan) / (decode_ms["base"] or math.nan) - 1), 2
    )
    served = single_line["session_complete"]
    swap_locked = _summary([1000 * s["locked"] for s in swaps["merged"]])
    return {
        "model": st["model"]["description"],
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "startup_to_first_adapter_s": round(first_adapter_s, 3),
        "single_line": {
            **single_line,
            "speedup_over_before_p50": _ratio(single_line["before_base"], single_line["base"]),
            "overhead_pct": {
                "merged": _overhead(single_line["adapter_merged"], single_line["base"]),
                "peft": _overhead(single_line["adapter_peft"], single_line["base"]),
            },
        },
        "typing_along_model_ms": typing,
        "fixed_16_tokens": {
            **fixed,
            "decode_ms_per_token": decode_ms,
            "adapter_overhead_pct_per_token_merged": merged_over,
            "speedup_over_before_p50": _ratio(fixed["before_base"], fixed["base"]),
            "overhead_pct": {
                "merged": _overhead(fixed["adapter_merged"], fixed["base"]),
                "peft": _overhead(fixed["adapter_peft"], fixed["base"]),
            },
        },
        "typed_along_cache_ms": _summary(typed_ms) if typed_ms else None,
        "retrieval": retrieval,
        "swap": {
            "merged_prepare_ms": _summary([1000 * s["prepare"] for s in swaps["merged"]]),
            "merged_locked_ms": swap_locked,
            "peft_locked_ms": _summary([1000 * s["locked"] for s in swaps["peft"]]),
            "read_adapter_dir_ms": _summary(read_ms),
            "new_commit_update_and_swap_ms": round(commit_ms, 1),
        },
        "memory": {
            **rss_mb(),
            "rss_growth_mb": round(rss_mb()["rss_mb"] - rss_before, 1),
            "base_weights_mb": _mb(params),
            "two_full_instances_mb": _mb(2 * params),
            "shared_twin_merged_mb": _mb(params + targets),
            "shared_twin_peft_mb": _mb(params + lora),
        },
        "meets": {
            "single_line_p50": served["p50_ms"] <= TARGETS["single_line_p50_ms"],
            "single_line_p95": served["p95_ms"] <= TARGETS["single_line_p95_ms"],
            "decode_ms_per_token": (decode_ms["base"] or math.inf)
            <= TARGETS["decode_ms_per_token"],
            "adapter_overhead_merged": merged_over <= TARGETS["adapter_overhead_pct_merged"],
            "swap_locked": swap_locked["p50_ms"] <= TARGETS["swap_locked_ms"],
        },
    }


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
        variant: {k: _median(v) for k, v in values.items()} for variant, values in stages.items()
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
            k: _median([s[k] for s in swaps]) for k in ("prepare", "wait", "locked")
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


# -- end to end over stdio ------------------------------------------------------------------


async def _end_to_end(spec: str | None, root: Path, n: int) -> dict[str, Any]:
    """One server from start: `initialize`, a completion at once (served by the base model
    while the first adapter is built), the first adapter-backed completion, then `n` timed
    requests."""
    from lsprotocol import types
    from pygls.lsp.client import LanguageClient

    cmd = [sys.executable, "-m", "repo2lora", "serve", "--stdio"]
    if spec:
        cmd += ["--model", spec]
    client = LanguageClient("lsp-latency", "1")
    picks = cursors(root, n + 2)

    def request(i: int) -> types.InlineCompletionParams:
        f, p = picks[i]
        line = p.prefix.count("\n")
        col = len(p.line_prefix.encode("utf-16-le")) // 2
        return types.InlineCompletionParams(
            context=types.InlineCompletionContext(types.InlineCompletionTriggerKind.Invoked),
            text_document=types.TextDocumentIdentifier(f.as_uri()),
            position=types.Position(line, col),
        )

    async def adapter_version() -> int:
        st = await client.protocol.send_request_async("repo2lora/status", {})
        return int(st.adapter.version)

    t0 = time.perf_counter()
    await client.start_io(*cmd)
    assert client._server is not None
    pid = client._server.pid
    try:
        await client.initialize_async(
            types.InitializeParams(capabilities=types.ClientCapabilities(), root_uri=root.as_uri())
        )
        initialize_s = time.perf_counter() - t0
        client.initialized(types.InitializedParams())
        await client.text_document_inline_completion_async(request(0))
        first_s = time.perf_counter() - t0
        first_version = await adapter_version()
        head = _git(root, "rev-parse", "HEAD")
        while True:
            st = await client.protocol.send_request_async("repo2lora/status", {})
            if st.adapter.commit == head and not st.update.running:
                break
            await asyncio.sleep(0.02)
        await client.text_document_inline_completion_async(request(1))
        first_adapter_s = time.perf_counter() - t0
        ms = []
        for i in range(2, n + 2):
            t = time.perf_counter()
            await client.text_document_inline_completion_async(request(i))
            ms.append(1000 * (time.perf_counter() - t))
        memory = rss_mb(pid)
        await client.shutdown_async(None)
        client.exit(None)
    finally:
        await client.stop()
    stderr = b""
    if client._server.stderr is not None:
        with contextlib.suppress(asyncio.TimeoutError):
            stderr = await asyncio.wait_for(client._server.stderr.read(), 5)
    return {
        "requests": n,
        **_summary(ms),
        "start_to_initialize_s": round(initialize_s, 3),
        "start_to_first_completion_s": round(first_s, 3),
        "first_completion_adapter_version": first_version,  # 0: the base model served it
        "start_to_first_adapter_completion_s": round(first_adapter_s, 3),
        "server": memory,
        "stderr_lines": stderr.decode(errors="replace").splitlines()[:20],  # [] in normal use
    }


def end_to_end(spec: str | None, root: Path, n: int) -> dict[str, Any]:
    """A first start (no state: the first adapter is built from scratch), then a restart after
    a new commit (chunk vectors cached, the last adapter stored: served at once, the new
    commit's adapter one update step later)."""
    cold = asyncio.run(_end_to_end(spec, root, n))
    (root / "added_after_start.py").write_text("def added_helper(x):\n    return x * 3\n")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "a commit between two starts")
    warm = asyncio.run(_end_to_end(spec, root, n))
    keep = (
        "stderr_lines",
        "start_to_initialize_s",
        "start_to_first_completion_s",
        "first_completion_adapter_version",
        "start_to_first_adapter_completion_s",
        "server",
    )
    lines = sum(len(f.read_text().splitlines()) for f in root.rglob("*.py"))
    return {**cold, "repository_python_lines": lines, "restart": {k: warm[k] for k in keep}}


# -- main -----------------------------------------------------------------------------------


def projection_qwen_1_5b() -> dict[str, Any]:
    """What the two designs cost for Qwen2.5-Coder-1.5B (architecture numbers from its config,
    counted on the meta device: nothing is downloaded), rank 8 on q_proj and v_proj."""
    from transformers import AutoModelForCausalLM, Qwen2Config

    cfg = Qwen2Config(
        vocab_size=151936,
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    params = sum(p.numel() for p in model.parameters())
    targets = sum(
        m.weight.numel() for n, m in model.named_modules() if n.endswith(("q_proj", "v_proj"))
    )
    lora = sum(
        8 * (m.in_features + m.out_features)
        for n, m in model.named_modules()
        if n.endswith(("q_proj", "v_proj"))
    )
    out = {"parameters": params, "lora_target_parameters": targets}
    for dtype, size in (("fp32", 4), ("bf16", 2)):
        out[dtype] = {
            "two_full_instances_gb": round(2 * params * size / 2**30, 2),
            "shared_twin_merged_gb": round((params + targets) * size / 2**30, 2),
            "shared_twin_peft_gb": round((params + lora) * size / 2**30, 2),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument(
        "--models", default=None, help="default: tiny-random,default (--profile: default)"
    )
    ap.add_argument("--requests", type=int, default=40, help="cursors timed in process")
    ap.add_argument("--e2e", type=int, default=10, help="requests timed over stdio (0: none)")
    ap.add_argument("--profile", action="store_true", help="only where a completion's time goes")
    ap.add_argument(
        "--startup",
        action="store_true",
        help="only where the server's start goes: the light start against --no-light-start",
    )
    ap.add_argument("--startup-runs", type=int, default=5, help="starts of each variant")
    ap.add_argument("--device", default="cpu", help="where the in-process model runs (cuda)")
    ap.add_argument(
        "--e2e-sources",
        help="comma-separated directories of Python code the server follows end to end "
        "(default: this project's repo_encoder and evo_state)",
    )
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args(argv)
    os.environ["HF_HUB_OFFLINE"] = "1"
    load_before = round(os.getloadavg()[0], 2)
    models = args.models or ("default" if args.profile else "tiny-random,default")
    sources = [Path(p).resolve() for p in args.e2e_sources.split(",")] if args.e2e_sources else None
    results: dict[str, Any] = {}
    if args.startup:
        from benchmark.lsp_startup import serving, stages, starts

        with tempfile.TemporaryDirectory(prefix="lsp-latency-") as tmp:
            root = make_repository(Path(tmp) / "repo")
            results["default"] = {
                "stages": stages(args.startup_runs),
                "serving": serving(root, args.requests),
                "starts": starts(root, root / "evo_state" / "store.py", args.startup_runs),
            }
        models = ""
    for spec in filter(None, models.split(",")):
        model = None if spec == "default" else spec
        with tempfile.TemporaryDirectory(prefix="lsp-latency-") as tmp:
            root = make_repository(Path(tmp) / "repo")
            if args.profile:
                results[spec] = profile(model, root, args.requests, args.device)
                continue
            results[spec] = {"in_process": in_process(model, root, args.requests, args.device)}
        if args.e2e > 0 and args.device == "cpu":  # the server runs on the CPU only
            with tempfile.TemporaryDirectory(prefix="lsp-latency-") as tmp:
                root = make_repository(Path(tmp) / "repo", sources)
                e2e = end_to_end(model, root, args.e2e)
            e2e["meets"] = {
                "single_line_p50": e2e["p50_ms"] <= TARGETS["single_line_p50_ms"],
                "single_line_p95": e2e["p95_ms"] <= TARGETS["single_line_p95_ms"],
                "start_to_first_completion": e2e["start_to_first_completion_s"]
                <= TARGETS["start_to_first_completion_s"],
            }
            results[spec]["end_to_end_stdio"] = e2e
    mode = " --profile" if args.profile else " --startup" if args.startup else ""
    report: dict[str, Any] = {
        "benchmark": "lsp_latency" + mode,
        "targets": TARGETS,
        "machine": machine_info(load_before),
        "models": results,
    }
    if not (args.profile or args.startup):
        report["projection_qwen2.5-coder-1.5b"] = projection_qwen_1_5b()
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
