"""The background thread that keeps the repository's adapter current: change notices (a new
commit, a branch switch, a saved file) are coalesced and debounced into one update run at a
time; completions never wait for it."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError


class RepositoryFollower:
    """Runs `run_update(force)` on its own thread after `debounce_s` of quiet following the last
    `request`. Requests arriving during a run are coalesced into the next run. A `force` request
    (an explicit regenerate) skips the debounce and reinstalls the adapter even if unchanged."""

    def __init__(self, run_update: Callable[[bool], None], debounce_s: float) -> None:
        self._run_update = run_update
        self.debounce_s = debounce_s
        self._cond = threading.Condition()
        self._pending = 0  # requests not yet picked up by a run
        self._force = False
        self._urgent = False
        self._last_request = 0.0
        self._waiters: list[Future[None]] = []
        self._stopped = False
        self.running = False
        self.runs = 0
        self.last_reason = ""
        self._thread = threading.Thread(target=self._loop, name="repo2lora-update", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def pending(self) -> int:
        return self._pending

    def request(self, reason: str, force: bool = False, immediate: bool = False) -> Future[None]:
        """Ask for an update; the future is done when a run that began after this call ends.
        `immediate` skips the debounce (the first update, an explicit request)."""
        done: Future[None] = Future()
        with self._cond:
            self._pending += 1
            self._force = self._force or force
            self._urgent = self._urgent or force or immediate
            self._last_request = time.monotonic()
            self.last_reason = reason
            self._waiters.append(done)
            self._cond.notify_all()
        return done

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def _next_run(self) -> tuple[bool, list[Future[None]]] | None:
        with self._cond:
            while not self._stopped:
                if self._pending:
                    quiet = time.monotonic() - self._last_request
                    if self._urgent or quiet >= self.debounce_s:
                        break
                    self._cond.wait(self.debounce_s - quiet)
                else:
                    self._cond.wait()
            if self._stopped:
                for w in self._waiters:
                    w.cancel()
                return None
            force, waiters = self._force, self._waiters
            self._pending, self._force, self._urgent, self._waiters = 0, False, False, []
            self.running = True
            return force, waiters

    def _loop(self) -> None:
        while (job := self._next_run()) is not None:
            force, waiters = job
            error: Exception | None = None
            try:
                self._run_update(force)
            except Exception as exc:  # reported by run_update; the waiters get it too
                error = exc
            finally:
                self.running = False
                self.runs += 1
            for w in waiters:
                with contextlib.suppress(InvalidStateError):  # a caller that stopped waiting
                    if error is None:
                        w.set_result(None)
                    else:
                        w.set_exception(error)
