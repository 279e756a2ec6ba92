"""Where the language server's start goes, and the time from `repo2lora serve` to its first
completion: the light start (`lsp_server.fast_start`) against the start through transformers
(`--no-light-start`), interleaved run by run so machine load hits both alike. Run through
`python -m benchmark.lsp_latency --startup [--startup-runs 5]`; prints JSON.

- `stages`: one fresh interpreter walks the start path step by step (the protocol layer's
  imports, torch, the light model, its first completion; then the session's imports, that is
  transformers and peft, the models' resolution and the full model's load), seconds each, and
  the `-X importtime` modules that cost most.
- `serving`: in process, single-line completions at the same cursors, interleaved: the
  transformers model with the prompt tokenised whole at every request (before), and piece by
  piece (`repo2lora.prompt_tokens`, what the session runs now), and the light model that serves
  a start (it must not be slower); the text must be the same.
- `starts`: the real server over stdio, from process start to `initialize` answered, to the
  first completion, and to the switch onto the full session (`repo2lora/status`'s `start`), per
  variant; the first completion's text must be the same both ways."""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

_STAGES_SCRIPT = r"""
import json, sys, time
t = [time.perf_counter()]
def mark(): t.append(time.perf_counter())
import lsp_server.server; mark()
import torch; torch.set_num_threads(1); mark()
from repo2lora.decoding import prepare_for_decoding
from repo2lora.models import embedded
from repo2lora.models.light_llama import load_light_model, load_light_tokenizer
embedded.verify()
model = load_light_model(embedded.DEFAULT_DIR); prepare_for_decoding(model)
tok = load_light_tokenizer(embedded.DEFAULT_DIR); mark()
from repo2lora.generation import GenerationConfig, generate_completion
text = open(sys.argv[1]).read()
generate_completion(model, tok, text[: len(text) // 2], GenerationConfig()); mark()
import lsp_server.session; mark()
models = lsp_server.session.resolve_models(None, None); mark()
from repo2lora.models import load_base_model
prepare_for_decoding(load_base_model(models.info).model); mark()
names = ["protocol_imports", "torch_import", "light_model_load", "light_first_completion",
         "session_imports_transformers_peft", "resolve_models_hypernet", "full_model_load"]
print(json.dumps({n: round(b - a, 3) for n, a, b in zip(names, t, t[1:])}))
"""


def stages(runs: int) -> dict[str, Any]:
    """Median seconds of each start stage over `runs` fresh interpreters, and the modules
    whose import cost most (cumulative, one run)."""
    sample = str(Path(__file__).resolve().parent.parent / "lsp_server" / "session.py")
    per_run = []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", _STAGES_SCRIPT, sample],
            capture_output=True,
            text=True,
            check=True,
        )
        per_run.append(json.loads(out.stdout.strip().splitlines()[-1]))
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    interpreter = time.perf_counter() - t
    prof = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", _STAGES_SCRIPT, sample],
        capture_output=True,
        text=True,
        check=True,
    )
    costs = []
    for line in prof.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            name = parts[2].rstrip()
            depth = (len(name) - len(name.lstrip())) // 2
            costs.append((int(parts[1]) / 1e6, depth, name.strip()))
    top = sorted((c for c in costs if c[1] <= 1), reverse=True)[:15]
    return {
        "runs": runs,
        "interpreter_start_s": round(interpreter, 3),
        "median_s": {k: round(statistics.median(r[k] for r in per_run), 3) for k in per_run[0]},
        "per_run_s": per_run,
        "importtime_top_cumulative_s": {f"{'  ' * d}{n}": round(s, 3) for s, d, n in top},
    }


async def _one_start(root: Path, light: bool, prompt_file: Path, line: int, col: int) -> dict:
    from lsprotocol import types
    from pygls.lsp.client import LanguageClient

    cmd = [sys.executable, "-m", "repo2lora", "serve", "--stdio"]
    if not light:
        cmd.append("--no-light-start")
    client = LanguageClient("lsp-startup", "1")
    t0 = time.perf_counter()
    await client.start_io(*cmd)
    try:
        await client.initialize_async(
            types.InitializeParams(capabilities=types.ClientCapabilities(), root_uri=root.as_uri())
        )
        initialize_s = time.perf_counter() - t0
        client.initialized(types.InitializedParams())
        res = await client.text_document_inline_completion_async(
            types.InlineCompletionParams(
                context=types.InlineCompletionContext(types.InlineCompletionTriggerKind.Invoked),
                text_document=types.TextDocumentIdentifier(prompt_file.as_uri()),
                position=types.Position(line, col),
            )
        )
        first_s = time.perf_counter() - t0
        items = res.items if isinstance(res, types.InlineCompletionList) else list(res or [])
        text = str(items[0].insert_text) if items else ""
        while True:  # until the full session serves
            st = await client.protocol.send_request_async("repo2lora/status", {})
            if st.start.serving == "session":
                break
            await asyncio.sleep(0.05)
        switched_s = time.perf_counter() - t0
        await client.shutdown_async(None)
        client.exit(None)
    finally:
        await client.stop()
    return {
        "initialize_s": round(initialize_s, 3),
        "first_completion_s": round(first_s, 3),
        "full_session_s": round(switched_s, 3),
        "first_text": text,
    }


def starts(root: Path, prompt_file: Path, runs: int) -> dict[str, Any]:
    """`runs` starts of each variant, interleaved; medians and every run."""
    text = prompt_file.read_text()
    cut = text.index("return ", len(text) // 2) + len("return ")
    line = text[:cut].count("\n")
    col = cut - (text.rfind("\n", 0, cut) + 1)
    per: dict[str, list[dict[str, Any]]] = {"light_start": [], "no_light_start": []}
    for _ in range(runs):
        for name, light in (("light_start", True), ("no_light_start", False)):
            per[name].append(asyncio.run(_one_start(root, light, prompt_file, line, col)))
    out: dict[str, Any] = {}
    for name, rs in per.items():
        keys = ("initialize_s", "first_completion_s", "full_session_s")
        out[name] = {
            "median_s": {k: round(statistics.median(r[k] for r in rs), 3) for k in keys},
            "runs": [{k: r[k] for k in keys} for r in rs],
        }
    texts = {r["first_text"] for rs in per.values() for r in rs}
    out["same_first_completion"] = len(texts) == 1
    out["first_completion_text"] = sorted(texts)
    light, slow = (out[n]["median_s"]["first_completion_s"] for n in per)
    out["first_completion_speedup"] = round(slow / light, 2) if light else None
    return out


def serving(root: Path, n: int) -> dict[str, Any]:
    """Single-line completions at `n` cursors, light model and transformers model interleaved,
    each with its own prompt cache, as the server runs them; milliseconds."""
    import torch

    from benchmark.lsp_latency.workload import cursors, summary_ms
    from lsp_server.config import ServerConfig
    from lsp_server.prompt import postprocess
    from repo2lora.decoding import prepare_for_decoding
    from repo2lora.generation import CompletionTimings, PromptCache, generate_completion
    from repo2lora.models import describe_base_model, embedded, load_base_model
    from repo2lora.models.light_llama import load_light_model, load_light_tokenizer
    from repo2lora.prompt_tokens import PromptTokenizer

    torch.set_num_threads(1)
    full = load_base_model(describe_base_model(None))
    light = load_light_model(embedded.DEFAULT_DIR)
    for m in (full.model, light):
        prepare_for_decoding(m)
    light_tok = PromptTokenizer(load_light_tokenizer(embedded.DEFAULT_DIR))
    variants = {
        "transformers_model_whole_prompt_tokenised": (full.model, full.tokenizer, PromptCache()),
        "transformers_model": (full.model, PromptTokenizer(full.tokenizer), PromptCache()),
        "light_model": (light, light_tok, PromptCache()),
    }
    cfg = ServerConfig().generation()
    ms: dict[str, list[float]] = {k: [] for k in variants}
    tokenize_ms: dict[str, list[float]] = {k: [] for k in variants}
    same = 0
    for _, prompt in cursors(root, n):
        texts = set()
        for name, (model, tok, cache) in variants.items():
            timings = CompletionTimings()
            t = time.perf_counter()
            raw = generate_completion(
                model, tok, prompt.prefix, cfg, cache=cache, cache_key=0, timings=timings
            )
            texts.add(postprocess(raw, prompt, cfg.single_line))
            ms[name].append(1000 * (time.perf_counter() - t))
            tokenize_ms[name].append(1000 * timings.tokenize)
        same += len(texts) == 1
    out: dict[str, Any] = {k: summary_ms(v) for k, v in ms.items()}
    for k, v in tokenize_ms.items():
        out[k]["tokenize_p50_ms"] = round(statistics.median(v), 3)
    out["same_text"] = f"{same}/{n}"
    return out
