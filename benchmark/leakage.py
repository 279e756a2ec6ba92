"""The leakage rule's `with-tests` setting in the benchmark: the encoder and the retriever may
see the repository's test code, minus every test function that holds an evaluated target (in
every snapshot and diff), and, on the walk, minus the test changes of the commit whose
assertions are evaluated. (`source-only`, the default, leaves test files out altogether.)"""

from __future__ import annotations

from pathlib import Path

import torch

from benchmark.walk import StateWalk
from evo_state.diff import ChunkDiff, commit_chunk_diff
from evo_state.store import Store
from repo2lora.hypernet.protocol import DiffInput, Generator
from repo2lora.models.loading import LoadedModel
from repo2lora.snapshot import SnapshotConfig, encode_snapshot
from repo2lora.tasks.datasets import repo_context
from repo2lora.tasks.miner import AssertionTask
from repo_encoder.chunk import Chunk
from repo_encoder.exclusion import ExclusionConfig, is_test_path

WITH_TESTS = SnapshotConfig(exclusion=ExclusionConfig(mode="with-tests"))


def held_functions(evaluated: list[AssertionTask]) -> set[tuple[str, str]]:
    """(file, qualified name) of every test function that holds an evaluated target."""
    return {(t.path, t.test_qualname) for t in evaluated}


def without_functions(
    chunks: list[Chunk], vectors: torch.Tensor, hidden: set[tuple[str, str]]
) -> tuple[list[Chunk], torch.Tensor]:
    """`chunks` and their `vectors` minus every chunk (all pieces of a split one) of the
    functions in `hidden`, matched by file and qualified name."""
    keep = [i for i, c in enumerate(chunks) if (c.path, c.qualname) not in hidden]
    return [chunks[i] for i in keep], vectors[keep]


def leak_free(
    chunks: list[Chunk], vectors: torch.Tensor, evaluated: list[AssertionTask]
) -> tuple[list[Chunk], torch.Tensor]:
    """The leakage rule for `with-tests`: drop every chunk of a test function that holds an
    evaluated target."""
    return without_functions(chunks, vectors, held_functions(evaluated))


def visible_diff(diff: ChunkDiff, held: set[tuple[str, str]], tests: bool) -> ChunkDiff:
    """`diff` without the chunks of held-out test functions (matched by file and qualified
    name) and, unless `tests`, without any test-file chunk."""

    def keep(c: Chunk) -> bool:
        if (c.path, c.qualname) in held:
            return False
        return tests or not is_test_path(c.path, WITH_TESTS.exclusion)

    return ChunkDiff(
        added=[c for c in diff.added if keep(c)],
        removed=[c for c in diff.removed if keep(c)],
        modified=[(o, n) for o, n in diff.modified if keep(o) and keep(n)],
        files=diff.files,
    )


class WithTestsHistory:
    """The leakage rule's `with-tests` setting on a walk over `commits`: the encoder and the
    retriever also see test code, minus every test function that holds an evaluated target (in
    every snapshot and diff), and minus all the test changes of the commit whose assertions are
    evaluated (the state carried on to later commits keeps that commit's other test changes)."""

    def __init__(
        self,
        path: Path,
        commits: list[str],
        evaluated: list[AssertionTask],
        store: Store,
        base: LoadedModel,
    ) -> None:
        self.ctx = repo_context(path, base, WITH_TESTS)
        self.commits, self.store = commits, store
        self.held = held_functions(evaluated)
        self._diffs: dict[int, ChunkDiff] = {}

    def diff(self, t: int) -> ChunkDiff:
        """Commit t's chunk diff (test files included), before anything is hidden."""
        if t not in self._diffs:
            c, cfg = self.commits, WITH_TESTS
            self._diffs[t] = commit_chunk_diff(
                self.ctx.repo, c[t - 1], c[t], cfg.exclusion, cfg.chunker
            )
        return self._diffs[t]

    def snapshot(self, t: int) -> tuple[list[Chunk], torch.Tensor]:
        """What the tasks of commit t may see of the snapshot after it: chunks and vectors."""
        snap = encode_snapshot(self.ctx, self.store, self.ctx.repo.commit(self.commits[t]))
        hidden = set(self.held)
        if t > 0:  # and the test functions commit t added or changed
            d = self.diff(t)
            hidden |= {
                (c.path, c.qualname)
                for c in d.added + [n for _, n in d.modified]
                if is_test_path(c.path, WITH_TESTS.exclusion)
            }
        return without_functions(snap.chunks, snap.encoded.vectors, hidden)

    def walk(self, net: Generator) -> StateWalk:
        """The evolving state under this setting."""

        def carried(t: int) -> DiffInput:
            return self.ctx.encode_diff(self.store, visible_diff(self.diff(t), self.held, True))

        def shown(t: int) -> DiffInput:
            return self.ctx.encode_diff(self.store, visible_diff(self.diff(t), self.held, False))

        return StateWalk(net, lambda: self.snapshot(0)[1], carried, shown)
