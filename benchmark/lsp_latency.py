"""Latency of the language server's completions, with the repository adapter vs the base
model, on CPU, and what serving costs: adapter swap time and memory. Prints one JSON object;
never fails on a missed target.

In process, through the functions the server runs (`Session`, `GenerationModel`,
`generate_completion` + `postprocess`): single-line completions at cursors in real source files,
base / merged adapter / PEFT adapter interleaved so machine load hits all alike; a fixed-length
decode (same tokens for all) for the pure compute overhead; a retrieval prompt (BM25 top chunks
prepended) for its extra tokens and latency. End to end: the real `repo2lora serve --stdio`
driven by a pygls client for a few requests, with its RSS.

    python -m benchmark.lsp_latency [--models tiny-random,default] [--requests 60] [--e2e 10]
"""

from __future__ import annotations

import argparse
import asyncio
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
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmark.speed.scaffold import machine_info
from lsp_server.config import ServerConfig
from lsp_server.generation_model import GenerationModel
from lsp_server.prompt import Prompt, postprocess, prompt_at
from lsp_server.session import QuietEvents, Session, resolve_models
from repo2lora.adapters.peft_dir import load_peft_adapter
from repo2lora.generation import GenerationConfig, generate_completion
from repo_encoder.chunker import ChunkerConfig, chunk_files

SEED = 7
TARGET_P50_MS = 100.0
TARGET_OVERHEAD_PCT = 5.0
RETRIEVAL_TOKENS = 256
SOURCE_PACKAGES = ("repo_encoder", "evo_state")  # real Python code for the served repository
_CURSOR = re.compile(r"(return |= )")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


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


def make_repository(root: Path) -> Path:
    """A git repository holding copies of this project's own source packages."""
    project = Path(__file__).resolve().parent.parent
    for pkg in SOURCE_PACKAGES:
        shutil.copytree(project / pkg, root / pkg, ignore=shutil.ignore_patterns("__pycache__"))
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


# -- retrieval baseline ---------------------------------------------------------------------


class Bm25:
    """BM25 over the repository's chunks (identifier tokens): the retrieval baseline's index."""

    def __init__(self, texts: list[str], k1: float = 1.2, b: float = 0.75) -> None:
        self.texts = texts
        self.docs = [Counter(_WORD.findall(t)) for t in texts]
        self.avg = statistics.mean(sum(d.values()) for d in self.docs) if self.docs else 1.0
        df: Counter[str] = Counter()
        for d in self.docs:
            df.update(d.keys())
        n = len(self.docs)
        self.idf = {w: math.log(1 + (n - c + 0.5) / (c + 0.5)) for w, c in df.items()}
        self.k1, self.b = k1, b

    def top(self, query: str, k: int) -> list[str]:
        q = set(_WORD.findall(query))
        scores = []
        for i, d in enumerate(self.docs):
            length = sum(d.values())
            s = sum(
                self.idf.get(w, 0.0)
                * d[w]
                * (self.k1 + 1)
                / (d[w] + self.k1 * (1 - self.b + self.b * length / self.avg))
                for w in q
                if w in d
            )
            scores.append((s, i))
        return [self.texts[i] for s, i in sorted(scores, reverse=True)[:k] if s > 0]


def retrieval_prompt(index: Bm25, prompt: Prompt, tokenizer: Any, budget: int) -> str:
    """The retrieval baseline's prompt: the best chunks for the text before the cursor, filling
    `budget` tokens (the last one cut to fit), placed before the prefix."""
    context, left = [], budget
    for chunk in index.top(prompt.prefix[-2000:], 8):
        ids = tokenizer(chunk, add_special_tokens=False)["input_ids"]
        context.append(tokenizer.decode(ids[:left]))
        left -= min(left, len(ids))
        if left == 0:
            break
    return "\n\n".join(context) + "\n\n" + prompt.prefix


# -- timing -------------------------------------------------------------------------------


def _summary(ms: list[float]) -> dict[str, float]:
    s = sorted(ms)
    return {
        "p50_ms": round(statistics.median(s), 2),
        "p95_ms": round(s[min(len(s) - 1, math.ceil(0.95 * len(s)) - 1)], 2),
        "mean_ms": round(statistics.mean(s), 2),
        "n": len(s),
    }


def _overhead(adapted: dict[str, float], base: dict[str, float]) -> float:
    return round(100 * (adapted["p50_ms"] / base["p50_ms"] - 1), 2)


def _time(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return 1000 * (time.perf_counter() - t), out


def interleaved(
    runners: dict[str, Callable[[str, Prompt], Any]],
    prompts: list[Prompt],
    texts: dict[str, list[str]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Every runner on every prompt, round-robin, after one warm-up each. A runner returns
    the length of what it produced (characters)."""
    ms: dict[str, list[float]] = {k: [] for k in runners}
    chars: dict[str, list[int]] = {k: [] for k in runners}
    for name, run in runners.items():
        run(texts[name][0] if texts else prompts[0].prefix, prompts[0])
    for i, p in enumerate(prompts):
        for name, run in runners.items():
            prefix = texts[name][i] if texts else p.prefix
            t0 = time.perf_counter()
            n = run(prefix, p)
            t = 1000 * (time.perf_counter() - t0)
            ms[name].append(t)
            chars[name].append(n)
    return {
        k: {**_summary(v), "mean_output_chars": round(statistics.mean(chars[k]), 2)}
        for k, v in ms.items()
    }


def decoder(model: Any, tokenizer: Any, cfg: GenerationConfig) -> Callable[[str, Prompt], int]:
    """What `Session.complete` runs under the lock: generate, then post-process."""

    def run(prefix: str, prompt: Prompt) -> int:
        raw = generate_completion(model, tokenizer, prefix, cfg)
        postprocess(raw, prompt, cfg.single_line)
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


# -- in process -----------------------------------------------------------------------------


def in_process(spec: str | None, root: Path, n: int) -> dict[str, Any]:
    config = ServerConfig(model=spec, watch=False, lora_mode="merged")
    torch.set_num_threads(config.torch_threads())
    rss_before = rss_mb()["rss_mb"]
    t0 = time.perf_counter()
    session = Session([root], config, resolve_models(spec, None), QuietEvents())
    session.start()
    session.ready.result()
    head = _git(root, "rev-parse", "HEAD")
    while session.status()["adapter"]["commit"] != head:
        if session.last_error:
            raise RuntimeError(session.last_error)
        time.sleep(0.05)
    first_adapter_s = time.perf_counter() - t0
    st = session.status()
    gen, base = session.generation, session.encoder
    assert gen is not None and base is not None
    tok = base.tokenizer
    weights = load_peft_adapter(st["adapter"]["path"])
    peft = GenerationModel(base, weights, "peft")
    peft.install(weights, commit=head)

    picks = cursors(root, n)
    prompts = [p for _, p in picks]
    single = session.config.generation()

    def through_session(prefix: str, prompt: Prompt) -> int:
        session.cache.clear()  # time the model, not the cache
        return len(session.complete(prompt, lambda: False).text)

    runners = {
        "base": decoder(base.model, tok, single),
        "adapter_merged": decoder(gen.model, tok, single),
        "adapter_peft": decoder(peft.model, tok, single),
        "session_complete": through_session,  # the server's path: merged adapter + bookkeeping
    }
    single_line = interleaved(runners, prompts)
    fixed_cfg = GenerationConfig(max_new_tokens=16, single_line=False)
    fixed = interleaved(
        {
            "base": decoder(base.model, tok, fixed_cfg),
            "adapter_merged": decoder(gen.model, tok, fixed_cfg),
            "adapter_peft": decoder(peft.model, tok, fixed_cfg),
        },
        prompts[: max(10, n // 2)],
    )
    # typing along a shown suggestion: the cache answers without the model
    shown = session.complete(prompts[0], lambda: False).text
    typed = Prompt(prompts[0].prefix + shown[:1], prompts[0].suffix)
    typed_ms = [_time(lambda: session.cached(typed))[0] for _ in range(50)] if shown else []

    # retrieval: BM25 chunks before a prefix cut to leave room for them, vs the adapter alone
    files = [(str(f.relative_to(root)), f.read_bytes()) for f in sorted(root.rglob("*.py"))]
    index = Bm25([c.text for c in chunk_files(files, ChunkerConfig()).chunks])
    budget = single.max_prompt_tokens - RETRIEVAL_TOKENS
    cut = [Prompt(tok.decode(tok(p.prefix)["input_ids"][-budget:]), p.suffix) for p in prompts]
    with_retrieval = [retrieval_prompt(index, p, tok, RETRIEVAL_TOKENS) for p in cut]
    extra = [
        len(tok(r)["input_ids"]) - len(tok(p.prefix)["input_ids"])
        for r, p in zip(with_retrieval, cut, strict=True)
    ]
    retrieval = interleaved(
        {
            "adapter_merged_plain": decoder(gen.model, tok, single),
            "base_with_retrieval": decoder(base.model, tok, single),
        },
        cut,
        texts={
            "adapter_merged_plain": [p.prefix for p in cut],
            "base_with_retrieval": with_retrieval,
        },
    )

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
    b50 = single_line["base"]["p50_ms"]
    return {
        "model": st["model"]["description"],
        "torch_threads": torch.get_num_threads(),
        "startup_to_first_adapter_s": round(first_adapter_s, 3),
        "single_line": {
            **single_line,
            "overhead_pct": {
                "merged": _overhead(single_line["adapter_merged"], single_line["base"]),
                "peft": _overhead(single_line["adapter_peft"], single_line["base"]),
            },
        },
        "fixed_16_tokens": {
            **fixed,
            "overhead_pct": {
                "merged": _overhead(fixed["adapter_merged"], fixed["base"]),
                "peft": _overhead(fixed["adapter_peft"], fixed["base"]),
            },
        },
        "typed_along_cache_ms": _summary(typed_ms) if typed_ms else None,
        "retrieval": {
            **retrieval,
            "extra_prompt_tokens_mean": round(statistics.mean(extra), 1),
            "latency_ratio_retrieval_over_adapter": round(
                retrieval["base_with_retrieval"]["p50_ms"]
                / retrieval["adapter_merged_plain"]["p50_ms"],
                3,
            ),
            "note": "quality is not compared: the models here are untrained",
        },
        "swap": {
            "merged_prepare_ms": _summary([1000 * s["prepare"] for s in swaps["merged"]]),
            "merged_locked_ms": _summary([1000 * s["locked"] for s in swaps["merged"]]),
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
            "p50_le_100ms_merged": single_line["adapter_merged"]["p50_ms"] <= TARGET_P50_MS,
            "overhead_le_5pct_merged": _overhead(single_line["adapter_merged"], single_line["base"])
            <= TARGET_OVERHEAD_PCT,
            "overhead_le_5pct_peft": _overhead(single_line["adapter_peft"], single_line["base"])
            <= TARGET_OVERHEAD_PCT,
            "base_p50_ms": b50,
        },
    }


# -- end to end over stdio ------------------------------------------------------------------


async def _end_to_end(spec: str | None, root: Path, n: int) -> dict[str, Any]:
    from lsprotocol import types
    from pygls.lsp.client import LanguageClient

    cmd = [sys.executable, "-m", "repo2lora", "serve", "--stdio"]
    if spec:
        cmd += ["--model", spec]
    client = LanguageClient("lsp-latency", "1")
    t0 = time.perf_counter()
    await client.start_io(*cmd)
    assert client._server is not None
    pid = client._server.pid
    try:
        await client.initialize_async(
            types.InitializeParams(capabilities=types.ClientCapabilities(), root_uri=root.as_uri())
        )
        client.initialized(types.InitializedParams())
        head = _git(root, "rev-parse", "HEAD")
        while True:
            st = await client.protocol.send_request_async("repo2lora/status", {})
            if st.adapter.commit == head and not st.update.running:
                break
            await asyncio.sleep(0.05)
        ready_s = time.perf_counter() - t0
        ms = []
        for f, p in cursors(root, n + 1):
            uri = f.as_uri()
            line = p.prefix.count("\n")
            col = len(p.line_prefix.encode("utf-16-le")) // 2
            params = types.InlineCompletionParams(
                context=types.InlineCompletionContext(types.InlineCompletionTriggerKind.Invoked),
                text_document=types.TextDocumentIdentifier(uri),
                position=types.Position(line, col),
            )
            t = time.perf_counter()
            await client.text_document_inline_completion_async(params)
            ms.append(1000 * (time.perf_counter() - t))
        memory = rss_mb(pid)
        await client.shutdown_async(None)
        client.exit(None)
    finally:
        await client.stop()
    return {
        "requests": n,
        **_summary(ms[1:]),  # the first pays for reading the file from disk and warm-up
        "startup_to_first_adapter_s": round(ready_s, 3),
        "server": memory,
    }


def end_to_end(spec: str | None, root: Path, n: int) -> dict[str, Any]:
    return asyncio.run(_end_to_end(spec, root, n))


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
    ap.add_argument("--models", default="tiny-random,default")
    ap.add_argument("--requests", type=int, default=60, help="cursors timed in process")
    ap.add_argument("--e2e", type=int, default=10, help="requests timed over stdio")
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args(argv)
    os.environ["HF_HUB_OFFLINE"] = "1"
    load_before = round(os.getloadavg()[0], 2)
    results: dict[str, Any] = {}
    for spec in args.models.split(","):
        model = None if spec == "default" else spec
        with tempfile.TemporaryDirectory(prefix="lsp-latency-") as tmp:
            root = make_repository(Path(tmp) / "repo")
            inproc = in_process(model, root, args.requests)
        with tempfile.TemporaryDirectory(prefix="lsp-latency-") as tmp:
            root = make_repository(Path(tmp) / "repo")
            e2e = end_to_end(model, root, args.e2e)
        results[spec] = {"in_process": inproc, "end_to_end_stdio": e2e}
    report = {
        "benchmark": "lsp_latency",
        "targets": {"p50_ms": TARGET_P50_MS, "adapter_overhead_pct": TARGET_OVERHEAD_PCT},
        "machine": machine_info(load_before),
        "models": results,
        "projection_qwen2.5-coder-1.5b": projection_qwen_1_5b(),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
