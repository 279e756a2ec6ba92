"""The states along the evolution track's walk, advanced lazily one commit diff at a time, so
each commit's tasks are scored with the state after that commit: the evolving state
(`StateWalk`) and the static state of every commit at the cost of its diff (`StaticWalk`)."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from repo2lora.hypernet.pool_sums import PoolSums, apply_diff, set_encoder_of, state_of, sums_of
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


class StaticWalk:
    """The static state of every commit of a walk, each at the cost of its diff: the encoder's
    pooling sums of the start snapshot moved by each commit's chunk diff (`pool_sums`, what
    `update --static-every-commit` runs), equal to a fresh snapshot's state. `members(t)`: the
    chunk vectors of commit t, read only when a removal needs them."""

    def __init__(
        self,
        net: Generator,
        start_vectors: Callable[[], torch.Tensor],
        diff: Callable[[int], DiffInput],
        members: Callable[[int], torch.Tensor],
    ) -> None:
        self.net, self.start_vectors, self.diff, self.members = net, start_vectors, diff, members
        self.sums: PoolSums | None = None
        self.at = 0

    def state(self, step: int) -> torch.Tensor:
        """The static state after commit `step` (0: the start snapshot); steps never go back."""
        enc = set_encoder_of(self.net)
        if self.sums is None:
            self.sums = sums_of(enc, self.start_vectors())
        if step < self.at:
            raise ValueError(f"the walk is at commit {self.at}; it cannot go back to {step}")
        while self.at < step:
            self.at += 1
            brought_in, taken_out, _ = self.diff(self.at)
            members = functools.partial(self.members, self.at)
            self.sums = apply_diff(enc, self.sums, brought_in, taken_out, members)
        return state_of(enc, self.sums)
