"""The server's first seconds (`lsp_server.fast_start`), driven over stdio as an editor does: a
Llama-family model directory is served by the light model before transformers has loaded it,
with the text the full model gives; then the full session takes over and the repository's
adapter is swapped in. Which models start light is decided from a few small files."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from lsprotocol import types
from pygls.lsp.client import LanguageClient

from lsp_server.config import ServerConfig
from lsp_server.fast_start import YieldingImports, light_start_dir
from repo2lora.models import describe_base_model, embedded, load_base_model
from tests.cli import ENV
from tests.gitrepo import SAMPLE_V1, GitRepo

DEADLINE_S = 120.0


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama as a model directory (config.json, safetensors, tokenizer.json)."""
    where = tmp_path_factory.mktemp("model")
    loaded = load_base_model(describe_base_model("tiny-random"))
    loaded.model.save_pretrained(str(where))
    loaded.tokenizer.save_pretrained(str(where))
    return where


async def _started(model_dir: Path, root: Path) -> AsyncIterator[LanguageClient]:
    client = LanguageClient("fast-start-test", "1")
    await client.start_io(
        sys.executable, "-m", "repo2lora", "serve", "--stdio", "--model", str(model_dir), env=ENV
    )
    try:
        await client.initialize_async(
            types.InitializeParams(
                capabilities=types.ClientCapabilities(),
                root_uri=root.as_uri(),
                initialization_options={"updateDebounceMs": 100, "debounceMs": 0},
            )
        )
        client.initialized(types.InitializedParams())
        yield client
        await client.shutdown_async(None)
        client.exit(None)
    finally:
        await client.stop()


def _plain(value: Any) -> Any:
    if hasattr(value, "_asdict"):
        return {k: _plain(v) for k, v in value._asdict().items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


async def _status(client: LanguageClient) -> dict[str, Any]:
    return dict(_plain(await client.protocol.send_request_async("repo2lora/status", {})))


async def _complete(client: LanguageClient, path: Path, line: int, col: int) -> str:
    res = await client.text_document_inline_completion_async(
        types.InlineCompletionParams(
            context=types.InlineCompletionContext(types.InlineCompletionTriggerKind.Invoked),
            text_document=types.TextDocumentIdentifier(path.as_uri()),
            position=types.Position(line, col),
        )
    )
    assert isinstance(res, types.InlineCompletionList)
    return str(res.items[0].insert_text) if res.items else ""


async def _until(client: LanguageClient, done: Any) -> dict[str, Any]:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        st = await _status(client)
        if done(st):
            return st
        assert time.monotonic() < deadline, json.dumps(st)[:2000]
        await asyncio.sleep(0.05)


@pytest.mark.asyncio
async def test_the_light_model_answers_first_with_the_full_models_text(
    model_dir: Path, tmp_path: Path
) -> None:
    """No repository (no adapter): before and after the switch, the base model's completion
    at the same cursor is the same text."""
    folder = tmp_path / "plain"
    folder.mkdir()
    source = folder / "use.py"
    source.write_text("def area(r):\n    return 3.14 * r * r\n\n\ndef total(xs):\n    return ")
    async for client in _started(model_dir, folder):
        first = await _complete(client, source, 5, 11)
        st = await _status(client)
        assert st["start"]["light"] and st["start"]["light_completions"]["model_runs"] == 1
        st = await _until(client, lambda s: s["start"]["serving"] == "session")
        seconds = st["start"]["seconds"]
        assert seconds["first_light_answer"] < seconds["switched"]  # served before the swap
        assert st["model"]["ready"] and st["adapter"]["version"] == 0
        again = await _complete(client, source, 5, 11)  # the session's cache is its own
        st = await _status(client)
        assert st["completions"]["model_runs"] == 1
        assert st["start"]["light_completions"]["model_runs"] == 1
        assert again == first


@pytest.mark.asyncio
async def test_the_full_session_takes_over_and_swaps_the_adapter_in(
    model_dir: Path, tmp_path: Path
) -> None:
    repo = GitRepo(tmp_path / "repo")
    head = repo.commit(SAMPLE_V1, "v1")
    source = repo.root / "pkg" / "geometry.py"
    async for client in _started(model_dir, repo.root):
        await _complete(client, source, 6, 11)
        st = await _until(
            client,
            lambda s: s["start"]["serving"] == "session" and s["adapter"]["commit"] == head,
        )
        assert st["adapter"]["version"] >= 1 and st["adapter"]["source"] == "update"
        assert st["start"]["light_completions"]["model_runs"] == 1
        await _complete(client, source, 7, 4)
        st = await _status(client)
        assert st["completions"]["model_runs"] == 1  # the adapter-backed model answered
        assert st["start"]["light_completions"]["model_runs"] == 1


def test_which_models_start_light(model_dir: Path, tmp_path: Path) -> None:
    assert light_start_dir(ServerConfig()) == embedded.DEFAULT_DIR.resolve()
    assert light_start_dir(ServerConfig(model=str(model_dir))) == model_dir.resolve()
    # resolved through transformers before serving, as before: their errors come from there
    assert light_start_dir(ServerConfig(model="tiny-random")) is None
    assert light_start_dir(ServerConfig(model=str(tmp_path / "missing"))) is None
    assert light_start_dir(ServerConfig(model=str(model_dir), light_start=False)) is None
    assert light_start_dir(ServerConfig(model=str(model_dir), decoder="transformers")) is None
    other = tmp_path / "gpt2"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    assert light_start_dir(ServerConfig(model=str(other))) is None
    # the shipped hypernetwork was made for the embedded default, not for the tiny model
    shipped = str(embedded.DEFAULT_DIR / "hypernets" / "evo")
    assert light_start_dir(ServerConfig(hypernet=shipped)) == embedded.DEFAULT_DIR.resolve()
    assert light_start_dir(ServerConfig(model=str(model_dir), hypernet=shipped)) is None


def test_background_imports_wait_while_a_completion_is_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The start thread's imports pause between modules while `busy()`, within their budget;
    no other thread's import waits."""
    for name in ("waits_a", "waits_b", "waits_c"):
        (tmp_path / f"{name}.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    busy_until = time.monotonic() + 0.3
    with YieldingImports(lambda: time.monotonic() < busy_until, budget_s=5.0) as imports:
        done: list[float] = []
        other = threading.Thread(target=lambda: (__import__("waits_a"), done.append(1.0)))
        other.start()
        other.join(5)
        assert done and imports.paused_s == 0.0  # another thread: not paused
        t0 = time.monotonic()
        __import__("waits_b")
        assert time.monotonic() - t0 >= 0.25 and imports.paused_s >= 0.25
    with YieldingImports(lambda: True, budget_s=0.1) as capped:  # busy for ever: the budget
        __import__("waits_c")
    assert 0.1 <= capped.paused_s < 1.0
    assert capped not in sys.meta_path
