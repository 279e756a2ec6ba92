"""The pygls 2 language server: each handler translates one LSP message into a call on the
workspace's session and back. Protocol plumbing lives here (thread-safe sends from background
threads, work-done progress, error responses); everything else lives in the session. Nothing
here imports torch, transformers or peft: `initialize` is answered before they load
(`lsp_server.fast_start`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import cattrs
from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams, JsonRpcServerNotInitialized
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol
from pygls.protocol.json_rpc import JsonRPCNotification
from pygls.uris import to_fs_path
from pygls.workspace import TextDocument

from lsp_server.config import ServerConfig, apply_options
from lsp_server.fast_start import FastStartSession, light_start_dir
from lsp_server.prompt import Prompt, prompt_at
from lsp_server.scheduling import DocumentRequests
from lsp_server.session_api import Level, WorkspaceSession
from lsp_server.workspace_files import inside_workspace, read_workspace_file, uri_path
from repo2lora import __version__
from repo_encoder.errors import UserError

if TYPE_CHECKING:
    from lsp_server.session import ServingModels

STATUS_REQUEST = "repo2lora/status"
ADAPTER_CHANGED = "repo2lora/adapterChanged"
REGENERATE_COMMAND = "repo2lora.regenerate"
STATUS_COMMAND = "repo2lora.status"
_PROGRESS_CREATE_TIMEOUT_S = 10.0
_REQUEST_FAILED = -32803  # LSP's RequestFailed

logger = logging.getLogger(__name__)


class RequestFailed(JsonRpcException):
    CODE = _REQUEST_FAILED
    MESSAGE = "Request Failed"


_REFUSALS = (JsonRpcInvalidParams, RequestFailed, JsonRpcServerNotInitialized)


class _ExpectedProtocolNoise(logging.Filter):
    """Drops pygls' stderr tracebacks for what is answered on purpose: a refused document, a
    malformed request (answered with InvalidParams by `Repo2LoraProtocol`), a cancel for a
    request already answered."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, _REFUSALS):
            return False
        msg = record.getMessage()
        return not (
            msg.startswith(("Unable to deserialize message", "Cancel notification for unknown"))
            or "jsonrpc='answered'" in msg
        )


class Repo2LoraProtocol(LanguageServerProtocol):
    """pygls logs a request whose params do not match the LSP types and never answers it; this
    answers it with InvalidParams, so a client is never left waiting."""

    def structure_message(self, data: dict[str, Any]) -> Any:
        try:
            return super().structure_message(data)
        except JsonRpcException as exc:
            if not ("id" in data and "method" in data):
                raise
            cause = exc.__cause__
            detail = (
                "; ".join(cattrs.transform_error(cause))
                if isinstance(cause, cattrs.BaseValidationError)
                else str(cause or exc)
            )
            error = JsonRpcInvalidParams(f"invalid params for {data['method']}: {detail}")
            self._send_response(data["id"], error=error.to_response_error())
            # handle_message skips a message of another JSON-RPC version: it is answered already
            return JsonRPCNotification(method=data["method"], jsonrpc="answered", params=None)


class LspEvents:
    """Session events sent to the client. Background threads call these; every send is moved
    onto the event loop, and progress goes through one queue so begin/report/end stay ordered
    behind the `window/workDoneProgress/create` round trip."""

    def __init__(
        self, server: Repo2LoraServer, loop: asyncio.AbstractEventLoop, progress: bool
    ) -> None:
        self.server = server
        self.loop = loop
        self.progress_enabled = progress
        self._queue: asyncio.Queue[tuple[str, str, int | None]] = asyncio.Queue()
        self._task = loop.create_task(self._send_progress()) if progress else None

    def _call(self, fn: Any, *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: the server is exiting
            self.loop.call_soon_threadsafe(fn, *args)

    def log(self, level: Level, message: str) -> None:
        params = types.LogMessageParams(type=types.MessageType(int(level)), message=message)
        self._call(self.server.window_log_message, params)

    def show(self, level: Level, message: str) -> None:
        params = types.ShowMessageParams(type=types.MessageType(int(level)), message=message)
        self._call(self.server.window_show_message, params)

    def progress_begin(self, title: str) -> None:
        if self.progress_enabled:
            self._call(self._queue.put_nowait, ("begin", title, 0))

    def progress_report(self, message: str, percentage: int | None) -> None:
        if self.progress_enabled:
            self._call(self._queue.put_nowait, ("report", message, percentage))

    def progress_end(self, message: str) -> None:
        if self.progress_enabled:
            self._call(self._queue.put_nowait, ("end", message, None))

    def adapter_changed(self, status: dict[str, Any]) -> None:
        self._call(self.server.protocol.notify, ADAPTER_CHANGED, status)

    async def _send_progress(self) -> None:
        progress = self.server.work_done_progress
        token: str | None = None
        while True:
            kind, text, pct = await self._queue.get()
            if kind == "begin":
                token = f"repo2lora-update-{uuid.uuid4().hex[:12]}"
                try:
                    await asyncio.wait_for(progress.create_async(token), _PROGRESS_CREATE_TIMEOUT_S)
                except Exception:  # the client refused or never answered: no progress bar
                    token = None
                    continue
                progress.begin(token, types.WorkDoneProgressBegin(title=text, percentage=0))
            elif token is None:
                continue
            elif kind == "report":
                progress.report(token, types.WorkDoneProgressReport(message=text, percentage=pct))
            else:
                progress.end(token, types.WorkDoneProgressEnd(message=text))
                token = None


class Repo2LoraServer(LanguageServer):
    """`models`: resolved before serving, or None when `light_dir` (`light_start_dir`) is
    served first and they are resolved in the background."""

    def __init__(
        self, config: ServerConfig, models: ServingModels | None, light_dir: Path | None = None
    ) -> None:
        super().__init__("repo2lora", __version__, protocol_cls=Repo2LoraProtocol)
        self.config = config
        self.models = models
        self.light_dir = light_dir
        self.session: WorkspaceSession | None = None
        # one generation at a time: on a CPU, parallel decoding only slows every request down
        self.generate_pool = ThreadPoolExecutor(1, thread_name_prefix="repo2lora-generate")
        self.requests = DocumentRequests(self.generate_pool)

    def report_server_error(self, error: Exception, source: Any) -> None:
        """Failures go to the client's log (window/logMessage), never to a popup."""
        refused = isinstance(error, _REFUSALS)
        kind = types.MessageType.Warning if refused else types.MessageType.Error
        with contextlib.suppress(Exception):
            self.window_log_message(
                types.LogMessageParams(type=kind, message=f"repo2lora: {error}")
            )

    # -- the glue the handlers share ------------------------------------------------------

    def start_session(self, params: types.InitializeParams) -> None:
        config, problems = apply_options(self.config, params.initialization_options)
        roots = [Path(p) for p in self._workspace_roots(params)]
        caps = params.capabilities.window
        progress = bool(caps and caps.work_done_progress)
        events = LspEvents(self, asyncio.get_running_loop(), progress)
        for p in problems:
            events.log(Level.WARNING, f"repo2lora: {p}")
        session = FastStartSession(roots, config, events, self.models, self.light_dir)
        self.session = session
        # after this handler's answer is written: importing torch holds the GIL for long C calls
        asyncio.get_running_loop().call_soon(session.start)

    def _workspace_roots(self, params: types.InitializeParams) -> list[str]:
        uris = [f.uri for f in params.workspace_folders or []]
        if params.root_uri:
            uris.insert(0, params.root_uri)
        paths = [to_fs_path(u) for u in uris] + ([params.root_path] if params.root_path else [])
        return list(dict.fromkeys(p for p in paths if p))

    def require_session(self) -> WorkspaceSession:
        if self.session is None:
            raise JsonRpcServerNotInitialized("the server is not initialized yet")
        return self.session

    def prompt_for(self, uri: str, position: types.Position) -> Prompt:
        """The prompt at `position`, from the open document or a workspace file; a document
        outside the workspace (symlinks resolved) is refused before anything is read."""
        session = self.require_session()
        try:
            if uri_path(uri) is not None:
                inside_workspace(session.roots, uri)
            doc = self.workspace.text_documents.get(unquote(uri))
            if doc is None:
                text = read_workspace_file(session.roots, uri)
                doc = TextDocument(uri, text, position_codec=self.workspace.position_codec)
            return prompt_at(doc.source, doc.offset_at_position(position))
        except UserError as exc:
            raise JsonRpcInvalidParams(str(exc)) from None

    async def completion_at(
        self, uri: str, position: types.Position, kind: str, invoked: bool
    ) -> tuple[Prompt, str]:
        """The prompt at the cursor and the completion to show there ("" for none)."""
        session = self.require_session()
        prompt = self.prompt_for(uri, position)
        hit = session.cached(prompt)
        if hit is not None:
            return prompt, hit.text
        debounce = 0.0 if invoked else session.config.debounce_ms / 1000
        try:
            res = await self.requests.run(
                f"{kind} {uri}", lambda stop: session.complete(prompt, stop), debounce
            )
        except UserError as exc:  # the model could not be loaded
            raise RequestFailed(str(exc)) from None
        return prompt, res.text if res is not None else ""


def build_server(
    config: ServerConfig, models: ServingModels | None, light_dir: Path | None = None
) -> Repo2LoraServer:
    server = Repo2LoraServer(config, models, light_dir)

    @server.feature(types.INITIALIZE)
    def initialize(ls: Repo2LoraServer, params: types.InitializeParams) -> None:
        ls.start_session(params)

    @server.feature(types.SHUTDOWN)
    def shutdown(ls: Repo2LoraServer, params: None) -> None:
        if ls.session is not None:
            ls.session.close()

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls: Repo2LoraServer, params: types.DidSaveTextDocumentParams) -> None:
        session = ls.require_session()
        with contextlib.suppress(UserError):  # a file outside the workspace changes nothing
            session.file_saved(str(inside_workspace(session.roots, params.text_document.uri)))

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    def did_change_configuration(
        ls: Repo2LoraServer, params: types.DidChangeConfigurationParams
    ) -> None:
        settings = params.settings
        if isinstance(settings, dict) and "repo2lora" in settings:
            for problem in ls.require_session().configure(settings["repo2lora"]):
                ls.window_log_message(
                    types.LogMessageParams(type=types.MessageType.Warning, message=problem)
                )

    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(
        ls: Repo2LoraServer, params: types.InlineCompletionParams
    ) -> types.InlineCompletionList:
        invoked = params.context.trigger_kind == types.InlineCompletionTriggerKind.Invoked
        _, text = await ls.completion_at(
            params.text_document.uri, params.position, "inline", invoked
        )
        here = types.Range(params.position, params.position)
        items = [types.InlineCompletionItem(insert_text=text, range=here)] if text else []
        return types.InlineCompletionList(items=items)

    @server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions())
    async def completion(
        ls: Repo2LoraServer, params: types.CompletionParams
    ) -> types.CompletionList:
        uri, pos = params.text_document.uri, params.position
        invoked = params.context is None or (
            params.context.trigger_kind == types.CompletionTriggerKind.Invoked
        )
        prompt, text = await ls.completion_at(uri, pos, "completion", invoked)
        if not text or "\n" in text:
            return types.CompletionList(is_incomplete=True, items=[])
        # the item replaces the word being typed, so the client's filtering keeps it
        word = prompt.word
        start = types.Position(pos.line, max(0, pos.character - len(word)))
        item = types.CompletionItem(
            label=word + text,
            kind=types.CompletionItemKind.Text,
            detail="repo2lora",
            filter_text=word + text,
            sort_text="0",
            text_edit=types.TextEdit(types.Range(start, pos), word + text),
        )
        return types.CompletionList(is_incomplete=True, items=[item])

    @server.feature(STATUS_REQUEST)
    def status(ls: Repo2LoraServer, params: Any) -> dict[str, Any]:
        return ls.require_session().status()

    @server.command(STATUS_COMMAND)
    def status_command(ls: Repo2LoraServer, *args: Any) -> dict[str, Any]:
        return ls.require_session().status()

    @server.command(REGENERATE_COMMAND)
    async def regenerate(ls: Repo2LoraServer, *args: Any) -> dict[str, Any]:
        session = ls.require_session()
        try:
            await asyncio.wrap_future(session.regenerate())
        except UserError as exc:
            raise RequestFailed(str(exc)) from None
        except Exception as exc:
            raise RequestFailed(f"regenerating the adapter failed: {exc}") from None
        return session.status()

    return server


def forbid_network() -> None:
    """The server never downloads: a hub id works only if it is in the local cache."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ[var] = "1"
    constants = sys.modules.get("huggingface_hub.constants")  # else it reads the env at import
    if constants is not None:
        constants.HF_HUB_OFFLINE = True  # type: ignore[attr-defined]


def serve(config: ServerConfig, tcp: tuple[str, int] | None = None) -> int:
    """Check the models (a bad --model fails here, before any LSP traffic), then serve over
    stdio (default) or TCP until the client exits. A model the light start serves
    (`light_start_dir`) is resolved in the background; any other before serving."""
    forbid_network()
    # watchdog re-registers a watch when a folder it just saw (an adapter being written) is
    # renamed, and says so on stderr each time; nothing is lost
    warnings.filterwarnings("ignore", "Callback with id", RuntimeWarning, "watchdog")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("pygls.protocol.json_rpc").addFilter(_ExpectedProtocolNoise())
    light_dir = light_start_dir(config)
    models = None
    if light_dir is None:
        import torch

        from lsp_server.session import resolve_models

        torch.set_num_threads(config.torch_threads())
        models = resolve_models(config.model, config.hypernet, config.target_modules)
    server = build_server(config, models, light_dir)
    if tcp is not None:
        server.start_tcp(*tcp)
        return _exit_status(server)
    # the protocol owns the real stdout; anything else printing (a library, a C extension)
    # lands on stderr instead of corrupting the message stream
    proto_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    server.start_io(sys.stdin.buffer, proto_out)
    return _exit_status(server)


def _exit_status(server: Repo2LoraServer) -> int:
    """0 after a `shutdown` request, 1 when the client vanished or exited without one (LSP)."""
    return 0 if server.protocol._shutdown else 1
