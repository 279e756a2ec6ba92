"""Latency in process, through the functions the server runs: a started `Session`, the
base model against merged and PEFT adapters interleaved, typing along at a cursor, adapter
swaps, and a retrieval prompt in the same token budget."""

from __future__ import annotations

import copy
import math
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from benchmark.lsp_latency.workload import (
    RETRIEVAL_TOKENS,
    RETRIEVAL_TOP_K,
    TARGETS,
    TYPED_CHARS,
    cursors,
    decoder,
    git_in,
    interleaved,
    median_of,
    megabytes,
    overhead_pct,
    rss_mb,
    speedup,
    summary_ms,
    timed_ms,
)
from benchmark.retrieval import ChunkRetriever, rag_prompt
from lsp_server.config import ServerConfig
from lsp_server.events import QuietEvents
from lsp_server.generation_model import GenerationModel
from lsp_server.prompt import Prompt
from lsp_server.session import Session, resolve_models
from repo2lora.adapters.peft_dir import load_peft_adapter
from repo2lora.decoding import set_linear_layout
from repo2lora.generation import GenerationConfig
from repo_encoder.chunker import ChunkerConfig, chunk_files

# -- the served session -------------------------------------------------------------------


def started_session(spec: str | None, root: Path, device: str) -> tuple[Session, float]:
    """A session over `root` with its first adapter installed, and the seconds that took."""
    config = ServerConfig(model=spec, watch=False, lora_mode="merged", device=device)
    torch.set_num_threads(config.torch_threads())
    t0 = time.perf_counter()
    session = Session([root], config, resolve_models(spec, None), QuietEvents())
    session.start()
    session.ready.result()
    head = git_in(root, "rev-parse", "HEAD")
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
    return {**summary_ms(ms), "reused_tokens_mean": round(statistics.mean(reused), 1)}


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
        "retrieval_query_ms": summary_ms(query_ms),
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
    head = git_in(root, "rev-parse", "HEAD")
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
    decode_ms = {k: median_of(v) for k, v in per_token.items()}

    # typing along a shown suggestion: the cache answers without the model
    shown = session.complete(prompts[0], lambda: False).text
    typed = Prompt(prompts[0].prefix + shown[:1], prompts[0].suffix)
    typed_ms = [timed_ms(lambda: session.cached(typed))[0] for _ in range(50)] if shown else []

    budget = effective_prompt_budget(gen.model, single)
    retrieval = retrieval_comparison(session, root, prompts, budget)

    # swap: the same adapter installed again, both ways, and an update after a new commit
    swaps: dict[str, list[dict[str, float]]] = {"merged": [], "peft": []}
    for _ in range(10):
        gen.install(weights, commit=head)
        swaps["merged"].append(dict(gen.swap_seconds))
        peft.install(weights, commit=head)
        swaps["peft"].append(dict(peft.swap_seconds))
    read_ms = [timed_ms(lambda: load_peft_adapter(st["adapter"]["path"]))[0] for _ in range(10)]
    (root / "evo_state" / "added.py").write_text("def added_helper(x):\n    return x * 3\n")
    git_in(root, "add", "-A")
    git_in(root, "commit", "-q", "-m", "add a helper")
    commit_ms, _ = timed_ms(lambda: session._run_update(False))

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
    swap_locked = summary_ms([1000 * s["locked"] for s in swaps["merged"]])
    return {
        "model": st["model"]["description"],
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "startup_to_first_adapter_s": round(first_adapter_s, 3),
        "single_line": {
            **single_line,
            "speedup_over_before_p50": speedup(single_line["before_base"], single_line["base"]),
            "overhead_pct": {
                "merged": overhead_pct(single_line["adapter_merged"], single_line["base"]),
                "peft": overhead_pct(single_line["adapter_peft"], single_line["base"]),
            },
        },
        "typing_along_model_ms": typing,
        "fixed_16_tokens": {
            **fixed,
            "decode_ms_per_token": decode_ms,
            "adapter_overhead_pct_per_token_merged": merged_over,
            "speedup_over_before_p50": speedup(fixed["before_base"], fixed["base"]),
            "overhead_pct": {
                "merged": overhead_pct(fixed["adapter_merged"], fixed["base"]),
                "peft": overhead_pct(fixed["adapter_peft"], fixed["base"]),
            },
        },
        "typed_along_cache_ms": summary_ms(typed_ms) if typed_ms else None,
        "retrieval": retrieval,
        "swap": {
            "merged_prepare_ms": summary_ms([1000 * s["prepare"] for s in swaps["merged"]]),
            "merged_locked_ms": swap_locked,
            "peft_locked_ms": summary_ms([1000 * s["locked"] for s in swaps["peft"]]),
            "read_adapter_dir_ms": summary_ms(read_ms),
            "new_commit_update_and_swap_ms": round(commit_ms, 1),
        },
        "memory": {
            **rss_mb(),
            "rss_growth_mb": round(rss_mb()["rss_mb"] - rss_before, 1),
            "base_weights_mb": megabytes(params),
            "two_full_instances_mb": megabytes(2 * params),
            "shared_twin_merged_mb": megabytes(params + targets),
            "shared_twin_peft_mb": megabytes(params + lora),
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
