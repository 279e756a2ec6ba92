"""End to end over stdio: the real `repo2lora serve --stdio` driven by a pygls client, a first
start and a restart after a new commit, and the server's memory."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from pathlib import Path
from typing import Any

from benchmark.lsp_latency.workload import cursors, git_in, rss_mb, summary_ms

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
        head = git_in(root, "rev-parse", "HEAD")
        while True:
            st = await client.protocol.send_request_async("repo2lora/status", {})
            if st.adapter.commit == head and not st.update.running:
                break
            await asyncio.sleep(0.02)
        await client.text_document_inline_completion_async(request(1))
        first_adapter_s = time.perf_counter() - t0
        ms, model_ms, tokens = [], [], []
        for i in range(2, n + 2):
            t = time.perf_counter()
            await client.text_document_inline_completion_async(request(i))
            ms.append(1000 * (time.perf_counter() - t))
            # what of the round trip was the model's (the server's own clock), untimed
            st = await client.protocol.send_request_async("repo2lora/status", {})
            model_ms.append(1000 * float(st.completions.last_model_seconds))
            tokens.append(int(st.completions.last_prompt_tokens))
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
        **summary_ms(ms),
        # the same requests' model time inside the server, and what the rest cost (protocol,
        # scheduling, reading the file, building the prompt)
        "server_model_ms": summary_ms(model_ms),
        "outside_model_ms": summary_ms([a - b for a, b in zip(ms, model_ms, strict=True)]),
        "prompt_tokens_mean": round(sum(tokens) / max(1, len(tokens)), 1),
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
    git_in(root, "add", "-A")
    git_in(root, "commit", "-q", "-m", "a commit between two starts")
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
