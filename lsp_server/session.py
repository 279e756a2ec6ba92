"""One workspace being served, with no protocol in sight: the models, the adapter the
completions run with, the background updates that keep it current, the cache, and the status an
editor shows. The pygls layer (`lsp_server.server`) only translates messages to these calls;
the benchmark and the tests call them directly."""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import git
import torch

from evo_state.store import open_store
from lsp_server.cache import CompletionCache
from lsp_server.config import RUNTIME_OPTIONS, ServerConfig, apply_options
from lsp_server.follower import RepositoryFollower
from lsp_server.generation_model import GenerationModel
from lsp_server.prompt import Prompt, postprocess
from lsp_server.session_api import CompletionResult, Level, SessionEvents
from lsp_server.session_api import QuietEvents as QuietEvents  # where tests import it from
from lsp_server.watcher import ChangeKind, RepositoryWatcher
from repo2lora.adapters.peft_dir import adapter_fingerprint, load_peft_adapter
from repo2lora.decoding import prepare_for_decoding
from repo2lora.generation import Cancelled, CompletionTimings, PromptCache, generate_completion
from repo2lora.hypernet.checkpoint import LoadedHypernet, load_history_hypernet
from repo2lora.hypernet.name_memory import NameProbe
from repo2lora.models.loading import (
    BaseModelInfo,
    LoadedModel,
    describe_base_model,
    load_base_model,
)
from repo2lora.progress import ProgressFn
from repo2lora.snapshot import CodeTexts, SnapshotConfig
from repo2lora.update import UpdateConfig, UpdateResult, followed_kind, update_repository
from repo_encoder.errors import UserError

_PROGRESS_EVERY_S = 0.2
_STAGE_LABELS = {"chunk": "chunking files", "encode": "encoding chunks", "update": "commits"}


@dataclass(frozen=True)
class ServingModels:
    """The base model and hypernetwork, resolved (not yet loaded) before serving starts, so a
    bad `--model` or `--hypernet` is reported before any protocol traffic."""

    info: BaseModelInfo
    hyper: LoadedHypernet


def resolve_models(
    model: str | None, hypernet: str | None, target_modules: tuple[str, ...] | None = None
) -> ServingModels:
    info = describe_base_model(model)
    hyper = load_history_hypernet(hypernet, info, target_modules)
    return ServingModels(info, hyper)


@dataclass
class CompletionStats:
    """Counters an editor (and a test) can read from the status."""

    requests: int = 0
    model_runs: int = 0
    cache_hits: int = 0
    typed_along_hits: int = 0
    cancelled: int = 0  # stopped between decoding steps
    skipped: int = 0  # cancelled or superseded before the model ran
    in_flight: int = 0
    last_prompt_chars: int = 0
    last_prompt_tokens: int = 0
    last_reused_tokens: int = 0  # prompt tokens whose keys and values the last request reused
    last_model_seconds: float = 0.0
    last_decode_ms_per_token: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def bump(self, name: str, by: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + by)

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}


@dataclass
class UpdateRecord:
    target: str
    steps: int
    seconds: float
    worktree_chunks: int
    finished_at: float


def _head(repo_root: Path | None) -> str | None:
    if repo_root is None:
        return None
    try:
        return git.Repo(repo_root).head.commit.hexsha
    except (ValueError, git.GitError):  # unborn HEAD, a repository being rewritten
        return None


def _failure(ready: Future[None]) -> str | None:
    """Why loading the models failed, in one line; None while loading or after it worked."""
    if not ready.done():
        return None
    exc = ready.exception()
    return None if exc is None else f"{type(exc).__name__}: {exc}".splitlines()[0]


class Session:
    """Serves one workspace. Threads: `repo2lora-load` (models, then the first update), the
    follower's `repo2lora-update` (every update run), watchdog's observer, and the caller's
    generation thread (`complete`). Locks: the generation model's (a whole generation, or the
    pointer swap of an install), the cache's, the counters'."""

    def __init__(
        self,
        roots: list[Path],
        config: ServerConfig,
        models: ServingModels,
        events: SessionEvents,
    ) -> None:
        self.roots = [Path(p).resolve() for p in roots]
        self.config = config
        self.models = models
        self.events = events
        self.cache = CompletionCache(config.cache_size)
        self.prompt_cache = PromptCache()  # used only under the generation lock
        self.stats = CompletionStats()
        self.ready: Future[None] = Future()
        self.encoder: LoadedModel | None = None
        self.name_probe: NameProbe | None = None
        self.code_texts = CodeTexts()  # what a names memory reads uses in, kept across updates
        self.generation: GenerationModel | None = None
        self.repo_root: Path | None = None
        self._git_dirs: list[Path] = []
        self._find_repository()
        self.follower = RepositoryFollower(self._run_update, config.update_debounce_ms / 1000)
        self.watcher: RepositoryWatcher | None = None
        self.last_update: UpdateRecord | None = None
        self.last_error: str | None = None
        self._shown: set[str] = set()

    # -- start and stop ---------------------------------------------------------------------

    def _find_repository(self) -> None:
        if not self.roots:
            self.events.show(
                Level.WARNING,
                "repo2lora: no workspace folder is open, so there is no repository to follow; "
                "completions use the base model",
            )
            return
        try:
            repo = git.Repo(self.roots[0], search_parent_directories=True)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            self.events.show(
                Level.WARNING,
                f"repo2lora: {self.roots[0]} is not inside a git repository; completions use "
                "the base model (run `git init` and commit to get a repository adapter)",
            )
            return
        if repo.bare or repo.working_tree_dir is None:
            self.events.show(Level.WARNING, f"repo2lora: {repo.git_dir} is a bare repository")
            return
        self.repo_root = Path(repo.working_tree_dir).resolve()
        self._git_dirs = [Path(repo.git_dir).resolve(), Path(repo.common_dir).resolve()]

    def start(self) -> None:
        """Load the models and start following the repository, in the background."""
        threading.Thread(target=self._start, name="repo2lora-load", daemon=True).start()

    def _start(self) -> None:
        try:
            self.encoder = load_base_model(self.models.info)
            if self.config.device != "cpu":  # before the twin: it shares these tensors
                self.encoder.model.to(self.config.device)
            prepare_for_decoding(self.encoder.model)  # the encoder shares the layout: no copy
            net = self.models.hyper.net
            # kept across updates: names read once are not read again (None: reads no names)
            self.name_probe = net.name_probe(self.encoder.model, self.encoder.tokenizer)
            with torch.no_grad():  # an adapter of the right shape; the slot starts neutral
                template = self.models.hyper.net.generate(
                    torch.zeros(self.models.hyper.net.cfg.state_dim)
                ).detached()
            self.generation = GenerationModel(self.encoder, template, self.config.lora_mode)
        except Exception as exc:
            # the report first: whoever waits on `ready` then finds it in the status
            self._report(exc, "loading the model failed")
            self.ready.set_exception(exc)
            return
        untrained = [
            name
            for name, flag in (
                (f"the base model ({self.models.info.spec})", self.models.info.untrained),
                ("the hypernetwork", self.models.hyper.untrained),
            )
            if flag
        ]
        if untrained:
            self._show_once(
                Level.WARNING,
                f"repo2lora: {' and '.join(untrained)} {'is' if len(untrained) == 1 else 'are'} "
                "untrained, so completions are noise; pass --model / --hypernet trained ones",
            )
        if self.repo_root is not None:
            self._install_stored_adapter()
        self.ready.set_result(None)
        if self.repo_root is None:
            return
        self.follower.start()
        if self.config.watch:  # before the first update, so no change during it is missed
            try:
                self.watcher = RepositoryWatcher(self.repo_root, self._git_dirs, self._on_change)
                self.watcher.start()
            except OSError as exc:  # inotify limits, a vanished folder
                self._report(exc, "watching the repository failed (use repo2lora.regenerate)")
        self.follower.request("start", immediate=True)

    def close(self) -> None:
        self.follower.stop()
        if self.watcher is not None:
            self.watcher.stop()

    def _install_stored_adapter(self) -> None:
        """Serve the last adapter this repository has while the update runs."""
        assert self.repo_root is not None and self.generation is not None
        head = _head(self.repo_root)
        key = self.models.hyper.key
        try:
            with open_store(self.repo_root) as store:
                rec = (
                    store.get_adapter(head, key, followed_kind(self.models.hyper)) if head else None
                )
                rec = rec or store.latest_adapter()
            if rec is None or rec.hypernet_key != key or not Path(rec.path).is_dir():
                return
            self.generation.install(
                load_peft_adapter(rec.path),
                commit=rec.commit,
                path=rec.path,
                fingerprint=adapter_fingerprint(rec.path),
                source="stored",
            )
        except (UserError, ValueError, OSError) as exc:
            self._report(exc, "the stored adapter could not be used; serving the base model")

    # -- updates ----------------------------------------------------------------------------

    def _on_change(self, kind: ChangeKind, path: str) -> None:
        if kind == "git" or self.config.follow_worktree:
            self.follower.request(f"{kind} change: {path}")

    def file_saved(self, path: str) -> None:
        if self.repo_root is not None and self.config.follow_worktree:
            self.follower.request(f"saved: {path}")

    def regenerate(self) -> Future[None]:
        """Run an update now and reinstall its adapter even if unchanged."""
        if self.repo_root is None:
            raise UserError(
                "the workspace is not inside a git repository with commits; nothing to regenerate"
            )
        return self.follower.request("regenerate", force=True)

    def _progress(self) -> ProgressFn:
        """Progress of update_repository as throttled work-done reports."""
        last_at, last_stage = 0.0, ""

        def report(stage: str, done: int, total: int) -> None:
            nonlocal last_at, last_stage
            now = time.monotonic()
            if stage == last_stage and now - last_at < _PROGRESS_EVERY_S and done < total:
                return
            last_at, last_stage = now, stage
            pct = int(100 * done / total) if total else None
            self.events.progress_report(f"{_STAGE_LABELS.get(stage, stage)} {done}/{total}", pct)

        return report

    def _update(self) -> UpdateResult:
        assert self.repo_root is not None
        return update_repository(
            self.repo_root,
            "HEAD",
            config=UpdateConfig(snapshot=SnapshotConfig()),
            worktree=self.config.follow_worktree,
            progress=self._progress(),
            loaded_model=self.encoder,  # the plain base model: encoding never sees an adapter
            loaded_hypernet=self.models.hyper,
            name_probe=self.name_probe,
            code_texts=self.code_texts,
        )

    def _run_update(self, force: bool) -> None:
        assert self.generation is not None
        t0 = time.perf_counter()
        self.events.progress_begin("repo2lora: updating the repository adapter")
        try:
            res = self._update()
            fp = adapter_fingerprint(res.adapter_path)
            wt = res.worktree
            wt_chunks = (wt.added + wt.removed + wt.modified) if wt is not None else 0
            now = self.generation.installed
            changed = fp != now.fingerprint or res.target != now.commit
            if force or changed:
                self.generation.install(
                    res.weights or load_peft_adapter(res.adapter_path),
                    commit=res.target,
                    worktree=wt_chunks > 0,
                    path=res.adapter_path,
                    fingerprint=fp,
                    source="regenerate" if force else "update",
                )
                self.cache.clear()  # entries of older versions can never be served again
            seconds = round(time.perf_counter() - t0, 4)
            self.last_update = UpdateRecord(
                res.target, len(res.steps), seconds, wt_chunks, time.time()
            )
            self.last_error = None
        except Exception as exc:
            self.last_error = str(exc)
            self._report(exc, "updating the adapter failed")
            self.events.progress_end(f"failed: {exc}")
            raise
        v = self.generation.installed
        self.events.progress_end(f"adapter {res.target[:12]} (version {v.version})")
        if force or changed:
            self.events.adapter_changed(self.status())

    # -- completions ------------------------------------------------------------------------

    def cached(self, prompt: Prompt) -> CompletionResult | None:
        """The cache's answer for `prompt` (exact, or typing along a shown completion)."""
        self.stats.bump("requests")
        if self.generation is None:
            return None
        version = self.generation.installed.version
        hit = self.cache.lookup(prompt, version)
        if hit is None:
            return None
        self.stats.bump("typed_along_hits" if hit.typed_along else "cache_hits")
        return CompletionResult(hit.text, version, "typed-along" if hit.typed_along else "cache")

    def complete(self, prompt: Prompt, should_stop: Callable[[], bool]) -> CompletionResult:
        """A completion at `prompt`, made with the current adapter. Blocks (call it on a worker
        thread); raises `Cancelled` when `should_stop()` turns true between decoding steps."""
        self.ready.result()
        gen = self.generation
        assert gen is not None
        hit = self.cache.lookup(prompt, gen.installed.version)  # an identical request just ran
        if hit is not None:
            self.stats.bump("typed_along_hits" if hit.typed_along else "cache_hits")
            src = "typed-along" if hit.typed_along else "cache"
            return CompletionResult(hit.text, gen.installed.version, src)
        if should_stop():
            self.stats.bump("skipped")
            raise Cancelled()
        cfg = self.config.generation()
        timings = CompletionTimings()
        self.stats.bump("in_flight")
        try:
            with gen.lock:
                version = gen.installed.version
                self.stats.bump("model_runs")
                t0 = time.perf_counter()
                raw = generate_completion(
                    gen.model,
                    gen.tokenizer,
                    prompt.prefix,
                    cfg,
                    should_stop,
                    cache=self.prompt_cache,
                    cache_key=version,  # a swapped adapter never reuses old keys and values
                    timings=timings,
                )
                seconds = time.perf_counter() - t0
        except Cancelled:
            self.stats.bump("cancelled")
            raise
        finally:
            self.stats.bump("in_flight", -1)
        t1 = time.perf_counter()
        text = postprocess(raw, prompt, cfg.single_line)
        timings.postprocess = time.perf_counter() - t1
        self.cache.put(prompt, version, text)
        with self.stats._lock:
            self.stats.last_prompt_chars = len(prompt.prefix)
            self.stats.last_prompt_tokens = timings.prompt_tokens
            self.stats.last_reused_tokens = timings.reused_tokens
            self.stats.last_model_seconds = round(seconds, 4)
            if timings.new_tokens:
                per_token = 1000 * timings.decode / timings.new_tokens
                self.stats.last_decode_ms_per_token = round(per_token, 3)
        return CompletionResult(text, version, "model", timings)

    def configure(self, options: Any) -> list[str]:
        """Apply the options that may change while serving; returns what was ignored."""
        self.config, problems = apply_options(self.config, options, RUNTIME_OPTIONS)
        return problems

    # -- status -----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        head = _head(self.repo_root)
        gen = self.generation
        a = gen.installed if gen is not None else None
        info, hyper = self.models.info, self.models.hyper
        last = self.last_update
        return {
            "workspace": [str(r) for r in self.roots],
            "repository": str(self.repo_root) if self.repo_root else None,
            "head": head,
            "adapter": {
                "version": a.version if a else 0,
                "commit": a.commit if a else None,
                "worktree": a.worktree if a else False,
                "source": a.source if a else "none",
                "path": a.path if a else None,
                "age_seconds": round(time.time() - a.installed_at, 3) if a and a.version else None,
                "up_to_date": bool(a and head and a.commit == head),
                "lora_mode": gen.mode if gen else None,
                "swap_seconds": {k: round(v, 6) for k, v in gen.swap_seconds.items()}
                if gen
                else {},
            },
            "update": {
                "running": self.follower.running,
                "pending": self.follower.pending > 0,  # an update is waiting to run
                "pending_changes": self.follower.pending,  # change notices it will cover
                "runs": self.follower.runs,
                # the state that follows history: "evo" (a GRU step per commit) or "static"
                # (the snapshot state at every commit)
                "follows": followed_kind(hyper),
                "last": last.__dict__ if last else None,
                "last_error": self.last_error,
            },
            "model": {
                "ready": self.ready.done() and self.ready.exception() is None,
                "error": _failure(self.ready),
                "spec": info.spec,
                "description": info.description,
                "untrained": info.untrained,
                "hypernet": hyper.description,
                "hypernet_untrained": hyper.untrained,
                "threads": torch.get_num_threads(),
            },
            "completions": self.stats.to_json(),
        }

    # -- reporting --------------------------------------------------------------------------

    def _show_once(self, level: Level, message: str) -> None:
        if message not in self._shown:
            self._shown.add(message)
            self.events.show(level, message)

    def _report(self, exc: BaseException, what: str) -> None:
        """A failure goes to the log; one the user must act on (a UserError: a damaged or
        read-only state, a mismatched checkpoint) is also shown, once per distinct message."""
        if isinstance(exc, UserError):
            self.events.log(Level.ERROR, f"repo2lora: {what}: {exc}")
            self._show_once(Level.ERROR, f"repo2lora: {exc}")
        else:
            detail = "".join(traceback.format_exception(exc)).rstrip()
            self.events.log(Level.ERROR, f"repo2lora: {what}: {detail}")
