"""The evolving state along the evolution track's walk, advanced lazily one commit diff at a
time, so each commit's tasks are scored with the state after that commit."""

from __future__ import annotations

from collections.abc import Callable

import torch

from repo2lora.hypernet.protocol import DiffInput, Generator, SnapshotInput, replay


class StateWalk:
    """An evolving state advanced lazily along a walk. `state(t)` is the state the tasks added
    by commit t are evaluated with: the carried state after commit t-1 stepped with `shown(t)`
    (default: the carried input, `carried(t)`, itself)."""

    def __init__(
        self,
        net: Generator,
        start_vectors: Callable[[], torch.Tensor],
        carried: Callable[[int], DiffInput],
        shown: Callable[[int], DiffInput] | None = None,
    ) -> None:
        self.net, self.start_vectors = net, start_vectors
        self.carried, self.shown = carried, shown
        self.h0: torch.Tensor | None = None
        self.h: torch.Tensor | None = None
        self.at = 0

    def start(self) -> torch.Tensor:
        if self.h0 is None:
            start = SnapshotInput(vectors=self.start_vectors())
            self.h0 = self.h = self.net.encode_snapshot(start)
        return self.h0

    def _advance(self, step: int) -> torch.Tensor:
        h = self.h if self.h is not None else self.start()
        todo = range(self.at + 1, step + 1)
        self.h = h = replay(self.net, h, (self.carried(t) for t in todo))
        self.at = max(self.at, step)
        return h

    def state(self, step: int) -> torch.Tensor:
        if self.shown is None:
            return self._advance(step)
        return self.net.step(self._advance(step - 1), *self.shown(step))
