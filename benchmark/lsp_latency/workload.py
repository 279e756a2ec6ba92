"""What the latency benchmark measures and how it times it: the served repository (real
Python code in a fresh git repository) and the cursors in it, interleaved timing of several
runners, the decode runner `Session.complete` runs, and memory readings."""

from __future__ import annotations

import math
import os
import random
import re
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from lsp_server.prompt import Prompt, postprocess, prompt_at
from repo2lora.decoding import DecoderKind, TransformersDecoder, WeightLayout
from repo2lora.generation import CompletionTimings, GenerationConfig, PromptCache
from repo2lora.generation import generate_completion as generate

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


def git_in(root: Path, *args: str) -> str:
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
    project = Path(__file__).resolve().parents[2]  # benchmark/lsp_latency/workload.py
    for src in sources or [project / pkg for pkg in SOURCE_PACKAGES]:
        shutil.copytree(src, root / src.name, ignore=shutil.ignore_patterns("__pycache__"))
    git_in(root, "init", "-q", "-b", "main")
    git_in(root, "add", "-A")
    git_in(root, "commit", "-q", "-m", "sources")
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


def summary_ms(ms: list[float]) -> dict[str, float]:
    s = sorted(ms)
    return {
        "p50_ms": round(statistics.median(s), 2),
        "p95_ms": round(s[min(len(s) - 1, math.ceil(0.95 * len(s)) - 1)], 2),
        "mean_ms": round(statistics.mean(s), 2),
        "n": len(s),
    }


def median_of(xs: list[float], digits: int = 3) -> float | None:
    return round(statistics.median(xs), digits) if xs else None


def speedup(before: dict[str, float], after: dict[str, float]) -> float:
    return round(before["p50_ms"] / after["p50_ms"], 2)


def overhead_pct(adapted: dict[str, float], base: dict[str, float]) -> float:
    return round(100 * (adapted["p50_ms"] / base["p50_ms"] - 1), 2)


def timed_ms(fn: Callable[[], Any]) -> tuple[float, Any]:
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
        k: {**summary_ms(v), "mean_output_chars": round(statistics.mean(chars[k]), 2)}
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


def megabytes(n_bytes: int) -> float:
    return round(n_bytes / 2**20, 2)
