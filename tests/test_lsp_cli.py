"""`repo2lora serve` as a user starts it: bad arguments fail before any protocol traffic, and
`--tcp` serves a client over a socket."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lsprotocol import types
from pygls.lsp.client import LanguageClient

from tests.cli import ENV, run_cli
from tests.gitrepo import SAMPLE_V1, GitRepo


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tcp", "localhost"], "is not HOST:PORT"),
        (["--model", "/nonexistent/model-dir"], "model directory not found"),
        (["--tcp", "127.0.0.1:1", "--stdio"], "not allowed with argument"),
    ],
)
def test_bad_arguments_fail_before_serving(args: list[str], message: str) -> None:
    proc = run_cli("serve", *args, timeout=120)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert proc.stdout == ""  # nothing that a client could mistake for a message


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.asyncio
async def test_serve_over_tcp(tmp_path: Path) -> None:
    repo = GitRepo(tmp_path / "repo")
    repo.commit(SAMPLE_V1, "v1")
    port = _free_port()
    cmd = [sys.executable, "-m", "repo2lora", "serve", "--tcp", f"127.0.0.1:{port}"]
    server = subprocess.Popen(
        [*cmd, "--model", "tiny-random"], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    client = LanguageClient("tcp-test", "1")
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                await client.start_tcp("127.0.0.1", port)
                break
            except OSError:
                assert server.poll() is None, server.stderr.read() if server.stderr else ""
                assert time.monotonic() < deadline, "the server never listened"
                await asyncio.sleep(0.1)
        await client.initialize_async(
            types.InitializeParams(
                capabilities=types.ClientCapabilities(), root_uri=repo.root.as_uri()
            )
        )
        client.initialized(types.InitializedParams())
        while True:
            st = await client.protocol.send_request_async("repo2lora/status", {})
            if st.adapter.commit == repo.git("rev-parse", "HEAD"):
                break
            assert time.monotonic() < deadline, st
            await asyncio.sleep(0.05)
        uri = (repo.root / "pkg" / "geometry.py").as_uri()
        params = types.InlineCompletionParams(
            context=types.InlineCompletionContext(types.InlineCompletionTriggerKind.Invoked),
            text_document=types.TextDocumentIdentifier(uri),
            position=types.Position(6, 11),
        )
        result = await client.text_document_inline_completion_async(params)
        assert isinstance(result, types.InlineCompletionList)
        await client.shutdown_async(None)
        client.exit(None)
        assert server.wait(timeout=30) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        await client.stop()
