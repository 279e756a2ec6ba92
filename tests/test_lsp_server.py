"""The real language server (`repo2lora serve --stdio --model tiny-random`) driven by pytest-lsp
over stdio, on a real git repository in a temporary directory. One server serves the module;
each test states what it needs from it and waits on `repo2lora/status` with a deadline."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
import pytest_lsp
from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams, JsonRpcRequestCancelled
from pygls.protocol.json_rpc import JsonRPCRequestMessage
from pytest_lsp import ClientServerConfig, LanguageClient

from tests.cli import ENV
from tests.gitrepo import SAMPLE_V1, GitRepo

pytestmark = pytest.mark.asyncio(loop_scope="module")

SERVER = [sys.executable, "-m", "repo2lora", "serve", "--stdio", "--model", "tiny-random"]
DEADLINE_S = 60.0
USE_PY = (
    "from pkg.geometry import Vector, area_of_circle\n\n\n"
    "def total_area(radii):\n    return sum(area_of_circle(r) for r in radii)\n\n\n"
    "def longest(vectors):\n    first = "
)
USE_PY_TAIL = "\n\n\nLIMIT = 10\n"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> GitRepo:
    """The served repository (one commit), and a file outside it that a symlink points to."""
    base = tmp_path_factory.mktemp("lsp")
    repo = GitRepo(base / "project")
    repo.commit(SAMPLE_V1, "v1")
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.py").write_text("PASSWORD = 'hunter2'\n")
    (repo.root / "leak.py").symlink_to(outside / "secret.py")
    return repo


@pytest_lsp.fixture(
    scope="module", config=ClientServerConfig(server_command=SERVER, server_env=ENV)
)
async def client(lsp_client: LanguageClient, workspace: GitRepo) -> Any:
    caps = types.ClientCapabilities(
        window=types.WindowClientCapabilities(work_done_progress=True),
        text_document=types.TextDocumentClientCapabilities(
            inline_completion=types.InlineCompletionClientCapabilities(),
            completion=types.CompletionClientCapabilities(),
        ),
    )
    result = await lsp_client.initialize_session(
        types.InitializeParams(
            capabilities=caps,
            root_uri=workspace.root.as_uri(),
            initialization_options={"updateDebounceMs": 100, "debounceMs": 0},
        )
    )
    lsp_client.init_result = result  # type: ignore[attr-defined]
    yield
    await lsp_client.shutdown_session()


def plain(value: Any) -> Any:
    """pygls gives untyped results as namedtuples; tests read them as JSON."""
    if hasattr(value, "_asdict"):
        return {k: plain(v) for k, v in value._asdict().items()}
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


async def status(client: LanguageClient) -> dict[str, Any]:
    result: dict[str, Any] = plain(await client.protocol.send_request_async("repo2lora/status", {}))
    return result


async def wait_status(
    client: LanguageClient, what: str, ok: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        st = await status(client)
        if ok(st):
            return st
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {DEADLINE_S}s; last status: {st}")
        await asyncio.sleep(0.05)


def settled(st: dict[str, Any]) -> bool:
    """The first update is done and the adapter is HEAD's."""
    return (
        st["update"]["runs"] >= 1
        and not st["update"]["running"]
        and st["adapter"]["commit"] == st["head"]
    )


def open_doc(client: LanguageClient, repo: GitRepo, rel: str, text: str) -> str:
    uri = (repo.root / rel).as_uri()
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(types.TextDocumentItem(uri, "python", 1, text))
    )
    return uri


def end_of(text: str) -> types.Position:
    lines = text.split("\n")
    return types.Position(len(lines) - 1, len(lines[-1]))


def inline_params(uri: str, pos: types.Position) -> types.InlineCompletionParams:
    return types.InlineCompletionParams(
        context=types.InlineCompletionContext(types.InlineCompletionTriggerKind.Automatic),
        text_document=types.TextDocumentIdentifier(uri),
        position=pos,
    )


async def inline(
    client: LanguageClient, uri: str, pos: types.Position
) -> types.InlineCompletionList:
    result = await client.text_document_inline_completion_async(inline_params(uri, pos))
    assert isinstance(result, types.InlineCompletionList), result
    return result


def send_inline(
    client: LanguageClient, uri: str, pos: types.Position, msg_id: str
) -> asyncio.Future[Any]:
    """Send now (so a following `$/cancelRequest` is behind it on the wire) and await later."""
    sent = client.protocol.send_request(
        types.TEXT_DOCUMENT_INLINE_COMPLETION, inline_params(uri, pos), msg_id=msg_id
    )
    return asyncio.wrap_future(sent)


async def test_initialize_runs_the_update_in_the_background_with_progress(
    client: LanguageClient, workspace: GitRepo
) -> None:
    caps = client.init_result.capabilities  # type: ignore[attr-defined]
    assert caps.inline_completion_provider is not None
    assert caps.completion_provider is not None
    assert caps.text_document_sync.change == types.TextDocumentSyncKind.Incremental
    assert {"repo2lora.regenerate", "repo2lora.status"} <= set(
        caps.execute_command_provider.commands
    )
    st = await wait_status(client, "first adapter", settled)
    assert st["head"] == workspace.git("rev-parse", "HEAD")
    assert st["adapter"]["version"] >= 1 and st["adapter"]["up_to_date"]
    assert st["model"]["spec"] == "tiny-random" and st["model"]["ready"]
    assert Path(st["adapter"]["path"]).is_dir()
    deadline = time.monotonic() + DEADLINE_S

    def kinds() -> list[list[str]]:  # pytest-lsp keeps begin/report/end values per token
        return [[getattr(v, "kind", "") for v in vs] for vs in client.progress_reports.values()]

    while not any(k[:1] == ["begin"] and k[-1] == "end" for k in kinds()):
        assert time.monotonic() < deadline, client.progress_reports
        await asyncio.sleep(0.05)


async def test_inline_completion_sees_only_the_document_before_the_cursor(
    client: LanguageClient, workspace: GitRepo
) -> None:
    await wait_status(client, "first adapter", settled)
    uri = open_doc(client, workspace, "pkg/use.py", USE_PY + USE_PY_TAIL)
    pos = end_of(USE_PY)
    result = await inline(client, uri, pos)
    assert len(result.items) == 1 and result.items[0].insert_text
    assert result.items[0].range == types.Range(pos, pos)
    st = await status(client)
    # the byte tokenizer gives one token per byte: the prompt is exactly the text before the
    # cursor, with no repository text and nothing from after the cursor
    assert st["completions"]["last_prompt_chars"] == len(USE_PY)
    assert st["completions"]["last_prompt_tokens"] == len(USE_PY.encode())

    listed = await client.text_document_completion_async(
        types.CompletionParams(types.TextDocumentIdentifier(uri), pos)
    )
    assert isinstance(listed, types.CompletionList)
    for item in listed.items:  # the item replaces the word being typed ("" here)
        assert item.text_edit is not None and item.text_edit.new_text == item.label


async def test_typing_along_a_suggestion_is_served_from_the_cache(
    client: LanguageClient, workspace: GitRepo
) -> None:
    await wait_status(client, "first adapter", settled)
    text = USE_PY.replace("first = ", "long = ")
    uri = open_doc(client, workspace, "pkg/typing.py", text + USE_PY_TAIL)
    pos = end_of(text)
    shown = (await inline(client, uri, pos)).items[0].insert_text
    assert isinstance(shown, str) and len(shown) >= 2
    before = (await status(client))["completions"]

    again = (await inline(client, uri, pos)).items[0].insert_text
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            types.VersionedTextDocumentIdentifier(version=2, uri=uri),
            [types.TextDocumentContentChangePartial(types.Range(pos, pos), shown[0])],
        )
    )
    typed = types.Position(pos.line, pos.character + len(shown[0].encode("utf-16-le")) // 2)
    rest = (await inline(client, uri, typed)).items[0].insert_text
    after = (await status(client))["completions"]
    assert again == shown
    assert rest == shown[1:]
    assert after["model_runs"] == before["model_runs"]
    assert after["cache_hits"] == before["cache_hits"] + 1
    assert after["typed_along_hits"] == before["typed_along_hits"] + 1


async def test_cancel_request_stops_a_completion_between_decoding_steps(
    client: LanguageClient, workspace: GitRepo
) -> None:
    await wait_status(client, "first adapter", settled)
    settings = {"repo2lora": {"maxNewTokens": 4000, "singleLine": False}}
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings))
    try:
        text = USE_PY.replace("first = ", "best = ")
        uri = open_doc(client, workspace, "pkg/long.py", text)
        before = (await status(client))["completions"]
        msg_id = f"long-{uuid.uuid4().hex[:8]}"
        request = send_inline(client, uri, end_of(text), msg_id)
        await wait_status(client, "a completion in flight", lambda s: s["completions"]["in_flight"])
        client.cancel_request(types.CancelParams(id=msg_id))
        with pytest.raises(JsonRpcRequestCancelled):
            await asyncio.wait_for(request, DEADLINE_S)
        after = await wait_status(
            client, "the generation to stop", lambda s: not s["completions"]["in_flight"]
        )
        assert after["completions"]["cancelled"] == before["cancelled"] + 1
    finally:
        settings = {"repo2lora": {"maxNewTokens": 48, "singleLine": True}}
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings))


async def test_fifty_rapid_requests_with_cancellations_leave_the_server_alive(
    client: LanguageClient, workspace: GitRepo
) -> None:
    await wait_status(client, "first adapter", settled)
    text = "\n".join(f"value_{i} = compute({i}, " for i in range(50))
    uri = open_doc(client, workspace, "pkg/rapid.py", text)
    requests = []
    for i in range(50):
        msg_id = f"rapid-{uuid.uuid4().hex[:8]}-{i}"
        pos = types.Position(i, len(f"value_{i} = compute({i}, "))
        requests.append(send_inline(client, uri, pos, msg_id))
        if i % 2:
            client.cancel_request(types.CancelParams(id=msg_id))
    results = await asyncio.wait_for(asyncio.gather(*requests, return_exceptions=True), DEADLINE_S)
    for r in results:
        assert isinstance(r, types.InlineCompletionList | JsonRpcRequestCancelled), r
    assert sum(isinstance(r, JsonRpcRequestCancelled) for r in results) >= 1
    assert (await status(client))["model"]["ready"]
    assert isinstance(await inline(client, uri, end_of(text)), types.InlineCompletionList)


async def test_a_new_commit_is_noticed_and_swapped_in(
    client: LanguageClient, workspace: GitRepo
) -> None:
    st = await wait_status(client, "first adapter", settled)
    changed = client.protocol.wait_for_notification_async("repo2lora/adapterChanged")
    sha = workspace.commit(
        {"pkg/shapes.py": "def perimeter_of_square(side):\n    return 4 * side\n"}, "square"
    )
    # completions are answered while the update runs
    uri = open_doc(client, workspace, "pkg/during.py", "import pkg\n\nvalue = ")
    assert isinstance(
        await asyncio.wait_for(inline(client, uri, types.Position(2, 8)), DEADLINE_S),
        types.InlineCompletionList,
    )
    new = await wait_status(
        client, "the new commit's adapter", lambda s: s["head"] == sha and settled(s)
    )
    assert new["adapter"]["commit"] == sha
    assert new["adapter"]["version"] > st["adapter"]["version"]
    note = plain(await asyncio.wait_for(changed, DEADLINE_S))
    assert note["adapter"]["version"] > st["adapter"]["version"]


async def test_a_saved_uncommitted_edit_is_folded_in(
    client: LanguageClient, workspace: GitRepo
) -> None:
    st = await wait_status(client, "first adapter", settled)
    path = workspace.root / "pkg" / "geometry.py"
    path.write_text(path.read_text() + "\n\ndef diagonal(v):\n    return v.norm() * 2\n")
    new = await wait_status(
        client,
        "the work tree's adapter",
        lambda s: s["adapter"]["worktree"] and s["adapter"]["version"] > st["adapter"]["version"],
    )
    assert new["adapter"]["commit"] == workspace.git("rev-parse", "HEAD")
    assert new["update"]["last"]["worktree_chunks"] >= 1


async def test_execute_command_regenerate_reinstalls_the_adapter(
    client: LanguageClient, workspace: GitRepo
) -> None:
    st = await wait_status(client, "first adapter", settled)
    result = plain(
        await client.workspace_execute_command_async(
            types.ExecuteCommandParams(command="repo2lora.regenerate")
        )
    )
    assert result["adapter"]["version"] > st["adapter"]["version"]
    assert result["adapter"]["source"] == "regenerate"
    assert result["adapter"]["commit"] == workspace.git("rev-parse", "HEAD")
    shown = plain(
        await client.workspace_execute_command_async(
            types.ExecuteCommandParams(command="repo2lora.status")
        )
    )
    assert shown["adapter"]["version"] == result["adapter"]["version"]


async def test_documents_outside_the_workspace_are_refused(
    client: LanguageClient, workspace: GitRepo
) -> None:
    secret = workspace.root.parent / "outside" / "secret.py"
    link = workspace.root / "leak.py"
    for uri in (secret.as_uri(), link.as_uri(), (workspace.root / ".." / "outside").as_uri()):
        with pytest.raises(JsonRpcInvalidParams, match="outside the workspace"):
            await inline(client, uri, types.Position(0, 3))
    # refused even when the editor opened it: the rule is about the path, not who read it
    open_doc(client, workspace, "leak.py", "PASSWORD = 'hunter2'\n")
    with pytest.raises(JsonRpcInvalidParams, match="outside the workspace"):
        await inline(client, link.as_uri(), types.Position(0, 3))
    # a workspace file the editor has not opened is read from disk
    on_disk = (workspace.root / "pkg" / "geometry.py").as_uri()
    assert isinstance(
        await inline(client, on_disk, types.Position(5, 4)), types.InlineCompletionList
    )
    with pytest.raises(JsonRpcInvalidParams, match="not open"):
        await inline(client, (workspace.root / "pkg" / "missing.py").as_uri(), types.Position(0, 0))


async def test_malformed_params_get_an_error_response(
    client: LanguageClient, workspace: GitRepo
) -> None:
    msg_id = f"bad-{uuid.uuid4().hex[:8]}"
    answer: Future[Any] = Future()
    client.protocol._request_futures[msg_id] = answer
    client.protocol._send_data(
        JsonRPCRequestMessage(
            id=msg_id,
            method=types.TEXT_DOCUMENT_INLINE_COMPLETION,
            jsonrpc="2.0",
            params={"textDocument": {"uri": 7}, "position": "here"},
        )
    )
    with pytest.raises(JsonRpcException) as err:
        await asyncio.wait_for(asyncio.wrap_future(answer), DEADLINE_S)
    assert err.value.code == JsonRpcInvalidParams.CODE
    with pytest.raises(JsonRpcException):
        await client.protocol.send_request_async("repo2lora/noSuchRequest", {})
    assert (await status(client))["model"]["ready"]
