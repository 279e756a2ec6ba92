"""The first seconds of a server: `initialize` is answered before torch, transformers or peft
are imported, the base model's completions are served by the light loader
(`repo2lora.models.light_llama`: torch, safetensors and tokenizers only) as soon as it has read
the model, and the full `Session` (transformers, peft, the hypernetwork, the adapter, the
repository follower) is built in the background; once its models are loaded it serves
everything, through the same adapter lock and hot swap as ever.

Why: on the project's 2-core machine, importing transformers and peft (which pull in
torch._dynamo, torch.distributed, sympy and scipy) took 5-8 s of a 7 s start, and the light
model needs none of it. Its logits equal the transformers model's bit for bit, so the tokens
served before and after the switch are the same. Models the light loader does not reproduce
(presets, hub ids, GPT-2 and other architectures, half precision, rope scaling) start as
before: resolved before serving, completions once transformers has loaded them."""

from __future__ import annotations

import importlib.abc
import sys
import threading
import time
import traceback
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lsp_server.cache import CompletionCache
from lsp_server.config import RUNTIME_OPTIONS, ServerConfig, apply_options
from lsp_server.prompt import Prompt, postprocess
from lsp_server.session_api import CompletionResult, Level, SessionEvents
from repo2lora.generation import Cancelled, CompletionTimings, PromptCache, generate_completion
from repo2lora.prompt_tokens import PromptTokenizer
from repo_encoder.errors import UserError

if TYPE_CHECKING:
    from collections.abc import Callable

    from lsp_server.session import ServingModels, Session
    from repo2lora.models.light_config import LightConfig

# beyond this much of float32 weights, a second (light) copy during the start would double a
# big model's peak memory for a few seconds' head start: such a model starts as before
LIGHT_START_MAX_BYTES = 2 << 30
# the generators the server can follow history with: the evolving state of code2lora-evo and
# -names, the static state at every commit of code2lora-static
_FOLLOWING = ("code2lora-evo", "code2lora-names", "code2lora-static")
# While the background imports run (seconds of Python bytecode holding the GIL), a thread that
# gives the GIL up in every torch op (a completion: thousands per request) or in every write (the
# event loop) waits up to the switch interval to get it back: 5 ms by default. At 0.1 ms it waits
# little and the imports barely slow down.
START_SWITCH_INTERVAL_S = 1e-4
# Some imports hold the GIL in one C call (loading a shared library) for up to a second, which no
# switch interval shortens: `YieldingImports` pauses the background imports between modules
# while a completion runs and for this long after it (the event loop writes the answer)...
_ANSWER_GRACE_S = 0.05
# ...but never for longer than this in all: a user typing without pause must still get the
# adapter-backed model
_IMPORT_PAUSE_BUDGET_S = 10.0


def light_start_dir(config: ServerConfig) -> Path | None:
    """The model directory the light start serves from, or None when the models must be
    resolved through transformers before serving: a preset, a hub id, a path that is not a
    model directory (its error is then reported as before, ahead of any protocol traffic), a
    hypernetwork made for another model or generator, or a model the light loader would not
    reproduce. Reads a few small files only."""
    from repo2lora.models import embedded
    from repo2lora.models.light_config import LightModelError, checkpoint_bytes, read_light_config

    if not config.light_start or config.device != "cpu" or config.decoder == "transformers":
        return None
    if config.target_modules is not None:  # checked against the architecture by transformers
        return None
    spec = config.model
    if spec is None or spec == "default":
        if not embedded.is_installed():
            return None
        embedded.verify()  # a damaged default fails here, as it did before serving
        model_dir = embedded.DEFAULT_DIR
    else:
        model_dir = Path(spec).expanduser()
        if not (model_dir / "config.json").is_file():
            return None
    try:
        cfg = read_light_config(model_dir)
        if checkpoint_bytes(model_dir) > LIGHT_START_MAX_BYTES:
            return None
    except LightModelError:
        return None
    if config.hypernet is not None and not _hypernet_fits(Path(config.hypernet), cfg):
        return None
    return model_dir.resolve()


def _hypernet_fits(ckpt: Path, cfg: LightConfig) -> bool:
    """Whether `--hypernet` is a checkpoint the server can follow history with for this model,
    read from its card (the checks `load_hypernet` makes again, with their messages, when it
    does not fit)."""
    import hashlib
    import json

    try:
        card = json.loads((ckpt.expanduser() / "hypernet.json").read_text())
    except (OSError, ValueError):
        return False
    fields = json.dumps(cfg.identity_fields(), sort_keys=True).encode()
    identity = hashlib.sha256(fields).hexdigest()[:16]
    return (
        isinstance(card, dict)
        and card.get("generator") in _FOLLOWING
        and card.get("base_model", {}).get("identity") == identity
        and (ckpt.expanduser() / "hypernet.safetensors").is_file()
    )


class YieldingImports(importlib.abc.MetaPathFinder):
    """On `sys.meta_path` while one thread (the start's) imports transformers and peft: before
    each module that thread imports, it waits while `busy()` says a completion is being served
    (within a total budget). It finds nothing itself: the normal finders load every module."""

    def __init__(self, busy: Callable[[], bool], budget_s: float = _IMPORT_PAUSE_BUDGET_S) -> None:
        self._thread = threading.get_ident()
        self._busy = busy
        self._budget_s = budget_s
        self.paused_s = 0.0

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> None:
        if threading.get_ident() != self._thread:
            return None
        t0 = time.monotonic()
        while self._busy() and self.paused_s + (time.monotonic() - t0) < self._budget_s:
            time.sleep(0.002)
        self.paused_s += time.monotonic() - t0
        return None

    def __enter__(self) -> YieldingImports:
        sys.meta_path.insert(0, self)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.meta_path.remove(self)


class _LightServing:
    """The light model and what serving it needs: its own prompt cache (keys and values of
    the last request, reused while the user types on) and its own completion cache."""

    def __init__(self, model: Any, tokenizer: Any, cache_size: int) -> None:
        self.model = model
        self.tokenizer = PromptTokenizer(tokenizer)
        self.lock = threading.Lock()
        self.prompt_cache = PromptCache()
        self.cache = CompletionCache(cache_size)

    def complete(
        self, prompt: Prompt, should_stop: Callable[[], bool], config: ServerConfig
    ) -> CompletionResult:
        """As `Session.complete` with no adapter (version 0): the same generation and
        post-processing, so the same text."""
        cfg = config.generation()
        timings = CompletionTimings()
        with self.lock:
            if should_stop():
                raise Cancelled()
            raw = generate_completion(
                self.model,
                self.tokenizer,
                prompt.prefix,
                cfg,
                should_stop,
                cache=self.prompt_cache,
                cache_key=0,
                timings=timings,
            )
        t1 = time.perf_counter()
        text = postprocess(raw, prompt, cfg.single_line)
        timings.postprocess = time.perf_counter() - t1
        self.cache.put(prompt, 0, text)
        return CompletionResult(text, 0, "model", timings)


class FastStartSession:
    """What the server talks to from `initialize` on (a `WorkspaceSession`): the light model
    serves completions until the full `Session`'s models are loaded; from then on every call
    goes to the session. Threads: `repo2lora-start` (the light model, then the imports and the
    session), the caller's generation thread (`complete`)."""

    def __init__(
        self,
        roots: list[Path],
        config: ServerConfig,
        events: SessionEvents,
        models: ServingModels | None = None,
        light_dir: Path | None = None,
    ) -> None:
        self.roots = [Path(p).resolve() for p in roots]
        self.events = events
        self._config = config
        self._models = models  # resolved before serving, or None: resolved in the background
        self._light_dir = light_dir
        self._cond = threading.Condition()
        self._light: _LightServing | None = None
        self._light_state = "loading" if light_dir is not None else "off"
        self._session: Session | None = None
        self._switched = False  # the session's models are loaded: it serves everything
        self._failed: str | None = None  # resolving the models failed: why
        self._closed = False
        self._t0 = time.monotonic()
        self.timeline: dict[str, float] = {}  # seconds from the session's creation
        self.light_completions = {"requests": 0, "model_runs": 0, "cache_hits": 0}
        self._serving_light = 0  # light completions running or waiting for the model now
        self._busy_until = 0.0  # monotonic: a completion is on its way, or its answer is

    # -- start -----------------------------------------------------------------------------

    def start(self) -> None:
        threading.Thread(target=self._start_quickly, name="repo2lora-start", daemon=True).start()

    def _start_quickly(self) -> None:
        before = sys.getswitchinterval()
        sys.setswitchinterval(min(before, START_SWITCH_INTERVAL_S))
        try:
            self._start()
        except Exception as exc:  # torch itself failed to load: nothing can serve
            with self._cond:
                self._light_state = "off"
            self._fail(exc)
        finally:
            sys.setswitchinterval(before)

    def _since_start(self) -> float:
        return round(time.monotonic() - self._t0, 3)

    def _mark(self, what: str) -> None:
        self.timeline[what] = self._since_start()

    def _start(self) -> None:
        import torch

        torch.set_num_threads(self._config.torch_threads())
        self._mark("torch_imported")
        if self._light_dir is not None:
            self._load_light(self._light_dir)
        try:
            with YieldingImports(self._light_busy) as imports:
                from lsp_server.session import Session, resolve_models

            self._mark("session_imported")
            self.timeline["imports_paused_for_completions"] = round(imports.paused_s, 3)
            cfg = self._config
            models = self._models or resolve_models(cfg.model, cfg.hypernet, cfg.target_modules)
            with self._cond:
                session = Session(self.roots, self._config, models, self.events)
                self._session = session
                self._cond.notify_all()
            if self._closed:
                return
            session.start()
            self._mark("session_started")
        except Exception as exc:
            self._fail(exc)
            return
        try:
            session.ready.result()
        except Exception:  # the session reports it; the light model (if any) keeps serving
            return
        with self._cond:
            self._switched = True
            self._light = None  # its weights are freed once a running completion ends
            self._cond.notify_all()
        self._mark("switched")

    def _load_light(self, model_dir: Path) -> None:
        from repo2lora.decoding import prepare_for_decoding
        from repo2lora.models.light_llama import load_light_model, load_light_tokenizer

        try:
            model = load_light_model(model_dir)
            prepare_for_decoding(model)
            light = _LightServing(model, load_light_tokenizer(model_dir), self._config.cache_size)
        except Exception as exc:  # anything unexpected: start as before, say why in the log
            self.events.log(
                Level.LOG, f"repo2lora: the light start is off ({exc}); waiting for transformers"
            )
            with self._cond:
                self._light_state = "off"
                self._cond.notify_all()
            return
        with self._cond:
            self._light, self._light_state = light, "ready"
            self._cond.notify_all()
        self._mark("light_ready")

    def _fail(self, exc: BaseException) -> None:
        why = f"{type(exc).__name__}: {exc}".splitlines()[0]
        if isinstance(exc, UserError):
            self.events.show(Level.ERROR, f"repo2lora: {exc}")
            self.events.log(Level.ERROR, f"repo2lora: loading the models failed: {exc}")
        else:
            detail = "".join(traceback.format_exception(exc)).rstrip()
            self.events.log(Level.ERROR, f"repo2lora: loading the models failed: {detail}")
        with self._cond:
            self._failed = why
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            session = self._session
        if session is not None:
            session.close()

    # -- what the server calls -----------------------------------------------------------------

    @property
    def config(self) -> ServerConfig:
        session = self._session
        return session.config if session is not None else self._config

    def _serving(self) -> tuple[_LightServing | None, Session | None]:
        """Waits until something can serve a completion: the light model, or the session
        (which itself waits for its models), or a failure."""
        with self._cond:
            self._cond.wait_for(
                lambda: (
                    self._switched
                    or self._light is not None
                    or (
                        self._light_state == "off"
                        and (self._session is not None or self._failed is not None)
                    )
                )
            )
            return (None if self._switched else self._light), self._session

    def _light_busy(self) -> bool:
        """A light completion is coming (the cache missed), running, or has just ended (its
        answer is being written)."""
        return bool(self._serving_light) or time.monotonic() < self._busy_until

    def _count(self, what: str) -> None:
        with self._cond:
            self.light_completions[what] += 1

    def cached(self, prompt: Prompt) -> CompletionResult | None:
        session, light = self._session, self._light
        if session is not None and (self._switched or light is None):
            return session.cached(prompt)
        self._count("requests")
        hit = light.cache.lookup(prompt, 0) if light is not None else None
        if hit is None:  # `complete` follows, after the debounce
            debounce = self.config.debounce_ms / 1000
            self._busy_until = max(self._busy_until, time.monotonic() + debounce + _ANSWER_GRACE_S)
            return None
        self._count("cache_hits")
        return CompletionResult(hit.text, 0, "typed-along" if hit.typed_along else "cache")

    def complete(self, prompt: Prompt, should_stop: Callable[[], bool]) -> CompletionResult:
        with self._cond:
            self._serving_light += 1
        try:
            light, session = self._serving()
            if light is not None:
                self._count("model_runs")
                res = light.complete(prompt, should_stop, self.config)
                self.timeline.setdefault("first_light_answer", self._since_start())
                return res
        finally:
            with self._cond:
                self._serving_light -= 1
                self._busy_until = time.monotonic() + _ANSWER_GRACE_S
        if session is None:
            raise UserError(f"the models could not be loaded: {self._failed}")
        return session.complete(prompt, should_stop)

    def configure(self, options: Any) -> list[str]:
        with self._cond:
            if self._session is None:  # the session is created with these settings
                self._config, problems = apply_options(self._config, options, RUNTIME_OPTIONS)
                return problems
            session = self._session
        return session.configure(options)

    def file_saved(self, path: str) -> None:
        # before the session exists, its first update reads the work tree as it is then
        if self._session is not None:
            self._session.file_saved(path)

    def regenerate(self) -> Future[None]:
        session = self._session
        if session is not None:
            return session.regenerate()
        out: Future[None] = Future()

        def when_ready() -> None:
            with self._cond:
                self._cond.wait_for(lambda: self._session is not None or self._failed is not None)
            try:
                if self._session is None:
                    raise UserError(f"the models could not be loaded: {self._failed}")
                done = self._session.regenerate()
            except BaseException as exc:
                out.set_exception(exc)
                return
            done.add_done_callback(lambda f: _copy_outcome(f, out))

        threading.Thread(target=when_ready, name="repo2lora-regenerate", daemon=True).start()
        return out

    def status(self) -> dict[str, Any]:
        session = self._session
        st = session.status() if session is not None else self._early_status()
        st["start"] = {
            "light": self._light_dir is not None and self._light_state != "off",
            "serving": "session" if self._switched else self._light_state,
            "seconds": dict(self.timeline),
            "light_completions": dict(self.light_completions),
        }
        return st

    def _early_status(self) -> dict[str, Any]:
        """The status's shape before the session exists (its models are being resolved)."""
        cfg = self._config
        return {
            "workspace": [str(r) for r in self.roots],
            "repository": None,
            "head": None,
            "adapter": {
                "version": 0,
                "commit": None,
                "worktree": False,
                "source": "none",
                "path": None,
                "age_seconds": None,
                "up_to_date": False,
                "lora_mode": None,
                "swap_seconds": {},
            },
            "update": {
                "running": False,
                "pending": False,
                "pending_changes": 0,
                "runs": 0,
                "last": None,
                "last_error": None,
            },
            "model": {
                "ready": False,
                "error": self._failed,
                "spec": cfg.model or "default",
                "description": None,
                "untrained": None,
                "hypernet": None,
                "hypernet_untrained": None,
                "threads": cfg.torch_threads(),
            },
            "completions": {},
        }


def _copy_outcome(src: Future[None], dst: Future[None]) -> None:
    exc = src.exception()
    if exc is not None:
        dst.set_exception(exc)
    else:
        dst.set_result(None)
