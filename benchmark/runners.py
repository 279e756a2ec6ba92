"""The runners: how each benchmarked method produces its results on one repository's tasks
(`STATIC_RUNNERS`, `EVO_RUNNERS`, keyed by method name), over what they share (`Evaluator`:
the base model, one adapter slot that generated adapters are hot-swapped into, the shared
LoRA, retrieval and scoring). Methods differ only in the model they run and the prompt they
give it."""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from benchmark import methods as m
from benchmark.config import IN_REPO, BenchConfig
from benchmark.leakage import WithTestsHistory, leak_free
from benchmark.prepare import PreparedRepo
from benchmark.retrieval import ChunkRetriever, rag_prompt
from benchmark.train import Trained, examples_of, is_train, lora_config, train_lora
from benchmark.walk import StateWalk, StaticWalk
from evo_state.store import Store
from repo2lora.hypernet.name_memory import NameInput, NameProbe
from repo2lora.hypernet.protocol import Generator, SnapshotInput
from repo2lora.models.loading import LoadedModel
from repo2lora.snapshot import RepoContext, SnapshotEncoding, encode_snapshot
from repo2lora.tasks.miner import AssertionTask
from repo2lora.training.baselines import load_lora_baseline
from repo_encoder.chunk import Chunk
from repo_encoder.names import NameIndex

Results = list[m.MethodResult]
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass
class EvalTask:
    """A task as one track evaluates it: in a split, and on the walk at a commit."""

    task: AssertionTask
    split: str
    step: int = -1  # commit index in the walk (evo); -1 static
    commit: str = ""


class Evaluator:
    """What every runner shares over one track: the base model, one adapter slot that
    generated adapters are hot-swapped into, the shared LoRA, and scoring."""

    def __init__(
        self,
        base: LoadedModel,
        cfg: BenchConfig,
        trained: Trained,
        out: Path,
        tick: Callable[[], None],
    ) -> None:
        self.base = base
        self.cfg = cfg
        self.trained = trained
        self.out = out
        self.tick = tick
        self.slot = m.AdapterSlot(base)
        self.names_slot = m.AdapterSlot(base)  # its adapters also hold the LM head
        self._probe: NameProbe | None = None
        self._shared: dict[str, Any] = {}
        tok = base.tokenizer
        self.token_ids: Callable[[str], list[int]] = lambda s: tok(s, add_special_tokens=False)[
            "input_ids"
        ]
        self.decode: Callable[[list[int]], str] = lambda ids: tok.decode(ids)

    def seen_prompt(self, prefix: str) -> str:
        ids = self.token_ids(prefix)
        budget = self.cfg.eval.prompt_tokens
        return prefix if len(ids) <= budget else self.decode(ids[len(ids) - budget :])

    def shared_model(self, track: str) -> Any:
        if track not in self._shared:
            self._shared.clear()
            self._shared[track] = load_lora_baseline(self.base, self.trained.shared[track])
        return self._shared[track]

    def run(
        self,
        model: Any,
        prompts: list[str],
        targets: list[str],
        extra_seconds: list[float] | None = None,
        retrieved: list[int] | None = None,
    ) -> Results:
        return m.run_model(
            model,
            self.base.tokenizer,
            prompts,
            targets,
            self.cfg.eval,
            extra_seconds=extra_seconds,
            retrieved_tokens=retrieved,
            on_task=self.tick,
        )

    def rag(self, chunks: list[Chunk], tasks: list[EvalTask]) -> Results:
        retriever = ChunkRetriever(chunks)
        prompts, secs, retrieved = [], [], []
        for et in tasks:
            t = time.perf_counter()
            rp = rag_prompt(
                et.task.prefix,
                retriever,
                self.token_ids,
                self.decode,
                self.cfg.eval.prompt_tokens,
                self.cfg.rag_top_k,
                self.cfg.rag_max_tokens,
            )
            secs.append(time.perf_counter() - t)
            prompts.append(rp.text)
            retrieved.append(rp.retrieved_tokens)
        return self.run(self.base.model, prompts, [et.task.target for et in tasks], secs, retrieved)

    def adapted(
        self, net: Generator | None, state: Callable[[], torch.Tensor]
    ) -> tuple[Any, float]:
        """The slot's model with the adapter generated from `state()`, and the seconds it took
        to make the state, generate the LoRA and swap it in."""
        assert net is not None
        t = time.perf_counter()
        with torch.no_grad():
            weights = m.generate_adapter(net, state())
        model = self.slot.load(weights)
        return model, time.perf_counter() - t

    def name_input(self, net: Generator, names: NameIndex, chunks: list[Chunk]) -> NameInput:
        """What the names memory reads of `names` and of the `chunks`' texts (where the code
        uses them; a memory without `names_contexts` ignores them), through one probe of the
        base model kept for the whole track (names and states read once)."""
        if self._probe is None:
            self._probe = net.name_probe(self.base.model, self.base.tokenizer)
        assert self._probe is not None  # only a generator that reads names is asked
        return NameInput(names.names(), self._probe, [c.text for c in chunks])

    def per_repo_lora(self, r: PreparedRepo, split: str) -> tuple[Any, dict[str, Any]]:
        assert r.static is not None
        own = [t for t in r.static.tasks if is_train(t, self.cfg)] if split == IN_REPO else []
        d = self.out / "models" / "static" / m.PER_REPO_LORA / r.label
        cost = train_lora(
            self.base,
            examples_of(own, r.label),
            d,
            lora_config(self.cfg, self.cfg.per_repo_steps),
            source_texts=[c.text for c in r.static.chunks],
        )
        return load_lora_baseline(self.base, d), cost

    def record(self, r: PreparedRepo, track: str, et: EvalTask) -> dict[str, Any]:
        t = et.task
        seen = self.seen_prompt(t.prefix)
        names = self.names_at(r, track, et.step)
        rec: dict[str, Any] = {
            "task_id": t.task_id,
            "repo": r.label,
            "track": track,
            "split": et.split,
            "step": et.step,
            "commit": et.commit or t.commit,
            "path": t.path,
            "test": t.test_qualname,
            "line": t.line,
            "target": t.target,
            "target_kind": t.target_kind,
            "form": t.form,
            "target_in_prompt": t.target in seen,
            "target_in_training": t.target in self.trained.train_targets.get(track, set()),
            "after_rename": None,
            "renamed_target": None,
            "names_target": names_target(t.target, names),
            "names_unseen": names_unseen(t.target, names, seen),
            "methods": {},
        }
        if track == "evo" and r.evo is not None and r.evo.renames is not None:
            steps = [s for s in r.evo.renames if s <= et.step]
            rec["after_rename"] = bool(steps)
            rec["renamed_target"] = any(t.target in r.evo.renames[s] for s in steps)
        return rec

    @staticmethod
    def names_at(r: PreparedRepo, track: str, step: int) -> NameIndex | None:
        """The names the repository defines where a task is scored (None: not read)."""
        if track == "static":
            return r.static.names if r.static is not None else None
        steps = r.evo.data.encoding.names if r.evo is not None else []
        return steps[step] if 0 <= step < len(steps) else None


def target_names(target: str, defined: set[str]) -> set[str]:
    """The identifiers in `target` that are among the `defined` names."""
    return {word for word in _WORD.findall(target) if word in defined}


def names_target(target: str, names: NameIndex | None) -> bool | None:
    """Whether a target holds an identifier the repository defines (None: names not read)."""
    if names is None:
        return None
    return bool(target_names(target, {n.name for n in names.names()}))


def names_unseen(target: str, names: NameIndex | None, prompt: str) -> bool | None:
    """Whether a target holds a name the repository defines that the prompt the model sees
    does not show (no identifier of the prompt is that name): what only an adapter that knows
    the repository's names can supply (None: names not read)."""
    if names is None:
        return None
    held = target_names(target, {n.name for n in names.names()})
    return bool(held - set(_WORD.findall(prompt)))


def fill(records: list[dict[str, Any]], name: str, results: Results) -> None:
    for rec, res in zip(records, results, strict=True):
        rec["methods"][name] = res.to_json()


# --- the static track: one runner per method --------------------------------------------------


class StaticRepoRun:
    """One repository's static-track tasks, what each setting of the leakage rule lets the
    encoder and the retriever see, and the adapter costs its methods record."""

    def __init__(self, ev: Evaluator, r: PreparedRepo, tasks: list[EvalTask]) -> None:
        assert r.static is not None
        self.ev, self.repo, self.tasks = ev, r, tasks
        self.prompts = [et.task.prefix for et in tasks]
        self.targets = [et.task.target for et in tasks]
        self.adapters: dict[str, Any] = {}
        self.seen = {
            m.RAG: (r.static.chunks, r.static.vectors),
            m.STATIC: (r.static.chunks, r.static.vectors),
        }
        if r.static.with_tests is not None:
            visible = leak_free(*r.static.with_tests, [et.task for et in tasks])
            self.seen[m.RAG_WITH_TESTS] = self.seen[m.STATIC_WITH_TESTS] = visible

    def scored(self, model: Any) -> Results:
        return self.ev.run(model, self.prompts, self.targets)


def _static_constant(run: StaticRepoRun, name: str) -> Results:
    return m.constant_results(run.ev.trained.constant["static"], run.targets)


def _static_base(run: StaticRepoRun, name: str) -> Results:
    return run.scored(run.ev.base.model)


def _static_rag(run: StaticRepoRun, name: str) -> Results:
    return run.ev.rag(run.seen[name][0], run.tasks)


def _static_shared_lora(run: StaticRepoRun, name: str) -> Results:
    return run.scored(run.ev.shared_model("static"))


def _static_per_repo_lora(run: StaticRepoRun, name: str) -> Results:
    model, run.adapters[name] = run.ev.per_repo_lora(run.repo, run.tasks[0].split)
    return run.scored(model)


def _static_generated(run: StaticRepoRun, name: str) -> Results:
    """The static hypernetwork's adapter of what the setting lets the encoder see."""
    net = run.ev.trained.static_net
    assert net is not None
    seen = SnapshotInput(vectors=run.seen[name][1])
    model, seconds = run.ev.adapted(net, functools.partial(net.encode_snapshot, seen))
    run.adapters[name] = {"adapter_seconds": seconds}
    return run.scored(model)


def _static_names(run: StaticRepoRun, name: str) -> Results:
    """Code2LoRA-Names: the snapshot's state and the names it defines."""
    net, snap = run.ev.trained.names_net, run.repo.static
    assert net is not None and snap is not None
    t = time.perf_counter()
    with torch.no_grad():
        state = net.encode_snapshot(SnapshotInput(vectors=snap.vectors))
        weights = net.generate(state, run.ev.name_input(net, snap.names, snap.chunks))
    model = run.ev.names_slot.load(weights.detached())
    run.adapters[name] = {"adapter_seconds": time.perf_counter() - t}
    return run.scored(model)


def _static_snapshot_generator(run: StaticRepoRun, name: str) -> Results:
    """SHINE or DnD: an adapter made from the snapshot without a vector state."""
    gen = run.ev.trained.snapshot_nets[name]
    snap = run.repo.static
    assert snap is not None
    t = time.perf_counter()
    weights = m.stateless_adapter(gen, run.ev.base, snap.chunks, snap.vectors)
    model = run.ev.slot.load(weights)
    run.adapters[name] = {"adapter_seconds": time.perf_counter() - t}
    return run.scored(model)


STATIC_RUNNERS: dict[str, Callable[[StaticRepoRun, str], Results]] = {
    m.CONSTANT: _static_constant,
    m.BASE: _static_base,
    m.RAG: _static_rag,
    m.RAG_WITH_TESTS: _static_rag,
    m.SHARED_LORA: _static_shared_lora,
    m.PER_REPO_LORA: _static_per_repo_lora,
    m.STATIC: _static_generated,
    m.STATIC_WITH_TESTS: _static_generated,
    m.NAMES: _static_names,
    m.SHINE: _static_snapshot_generator,
    m.DND: _static_snapshot_generator,
}


# --- the evolution track: one runner per method -----------------------------------------------


@dataclass
class EvoStep:
    """The tasks one commit of the walk added, and the fresh snapshot of that commit (read
    when a method needs it)."""

    step: int
    group: list[EvalTask]
    snap: SnapshotEncoding | None
    prompts: list[str] = field(init=False)
    targets: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.prompts = [et.task.prefix for et in self.group]
        self.targets = [et.task.target for et in self.group]


class EvoRepoRun:
    """One repository's walk: the evolving states (in both settings of the leakage rule), the
    stale snapshot's state, and the adapter seconds each method spends."""

    def __init__(
        self,
        ev: Evaluator,
        r: PreparedRepo,
        tasks: list[EvalTask],
        names: list[str],
        ctx: RepoContext,
        store: Store,
    ) -> None:
        assert r.evo is not None
        self.ev, self.names, self.ctx, self.store = ev, names, ctx, store
        self.enc = enc = r.evo.data.encoding
        self.costs: dict[str, list[float]] = {}
        self.walks: dict[str, StateWalk] = {}
        self.history: WithTestsHistory | None = None
        if {m.EVO_WITH_TESTS, m.RAG_WITH_TESTS} & set(names):
            evaluated = [et.task for et in tasks]
            self.history = WithTestsHistory(r.source.path, enc.commits, evaluated, store, ev.base)
        evo_net = ev.trained.evo_net
        self.evo_static_walk: StaticWalk | None = None
        if evo_net is not None:
            # the evolving state: h_0 once, then advanced one commit diff at a time
            self.walks[m.EVO] = StateWalk(evo_net, lambda: enc.vectors, lambda t: enc.diffs[t - 1])
            # its snapshot state at every commit, moved exactly by each diff
            self.evo_static_walk = StaticWalk(
                evo_net, lambda: enc.vectors, lambda t: enc.diffs[t - 1], self.commit_vectors
            )
            if self.history is not None and m.EVO_WITH_TESTS in names:
                self.walks[m.EVO_WITH_TESTS] = self.history.walk(evo_net)
        static_net = ev.trained.static_net
        self.static_walk: StaticWalk | None = None
        if static_net is not None:
            # the static state of every commit, each at the cost of its diff
            self.static_walk = StaticWalk(
                static_net, lambda: enc.vectors, lambda t: enc.diffs[t - 1], self.commit_vectors
            )

    def commit_vectors(self, step: int) -> torch.Tensor:
        """The chunk vectors of a fresh snapshot of the walk's commit `step` (cached)."""
        commit = self.ctx.repo.commit(self.enc.commits[step])
        return encode_snapshot(self.ctx, self.store, commit).encoded.vectors

    def at_step(self, step: int, group: list[EvalTask]) -> EvoStep:
        snap = None
        if m.RAG in self.names:
            commit = self.ctx.repo.commit(self.enc.commits[step])
            snap = encode_snapshot(self.ctx, self.store, commit)
        return EvoStep(step, group, snap)

    def adapted(self, name: str, net: Generator | None, state: Callable[[], torch.Tensor]) -> Any:
        model, seconds = self.ev.adapted(net, state)
        self.costs.setdefault(name, []).append(seconds)
        return model

    @functools.cached_property
    def stale_state(self) -> torch.Tensor:
        """The static adapter's state of the walk's start snapshot."""
        net = self.ev.trained.static_net
        assert net is not None
        return net.encode_snapshot(SnapshotInput(vectors=self.enc.vectors))

    def scored(self, at: EvoStep, model: Any) -> Results:
        return self.ev.run(model, at.prompts, at.targets)


def _evo_constant(run: EvoRepoRun, at: EvoStep, name: str) -> Results:
    return m.constant_results(run.ev.trained.constant["evo"], at.targets)


def _evo_base(run: EvoRepoRun, at: EvoStep, name: str) -> Results:
    return run.scored(at, run.ev.base.model)


def _evo_rag(run: EvoRepoRun, at: EvoStep, name: str) -> Results:
    assert at.snap is not None
    return run.ev.rag(at.snap.chunks, at.group)


def _evo_rag_with_tests(run: EvoRepoRun, at: EvoStep, name: str) -> Results:
    assert run.history is not None
    return run.ev.rag(run.history.snapshot(at.step)[0], at.group)


def _evo_shared_lora(run: EvoRepoRun, at: EvoStep, name: str) -> Results:
    return run.scored(at, run.ev.shared_model("evo"))


def _evo_stale_snapshot(run: EvoRepoRun, at: EvoStep, name: str) -> Results:
    """The static adapter of the walk's start snapshot, however far the walk has gone."""
    model = run.adapted(name, run.ev.trained.static_net, lambda: run.stale_state)
    return run.scored(at, model)


def _evo_static_every_commit(run: EvoRepoRun, at: EvoStep, name: str) -> Results:
    """The static adapter of this commit (a fresh snapshot's), its state moved from the last
    commit's at the cost of the diff."""
    net, walk = run.ev.trained.static_net, run.static_walk
    assert net is not None and walk is not None
    model = run.adapted(name, net, functools.partial(walk.state, at.step))
    return run.scored(at, model)


def _evo_at_commit(run: EvoRepoRun, at: EvoStep, name: str) -> Results:
    """The evolving network's snapshot state (its h_0) of this commit, moved from the last
    commit's at the cost of the diff: what `update --static-every-commit --hypernet EVO`
    follows."""
    net, walk = run.ev.trained.evo_net, run.evo_static_walk
    assert net is not None and walk is not None
    model = run.adapted(name, net, functools.partial(walk.state, at.step))
    return run.scored(at, model)


def _evo_at_start(run: EvoRepoRun, at: EvoStep, name: str) -> Results:
    """The evolving network's state h_0 at the walk's start."""
    model = run.adapted(name, run.ev.trained.evo_net, run.walks[m.EVO].start)
    return run.scored(at, model)


def _evo_evolved(run: EvoRepoRun, at: EvoStep, name: str) -> Results:
    """The evolving state after this commit (in either setting of the leakage rule)."""
    evolved = functools.partial(run.walks[name].state, at.step)
    model = run.adapted(name, run.ev.trained.evo_net, evolved)
    return run.scored(at, model)


EVO_RUNNERS: dict[str, Callable[[EvoRepoRun, EvoStep, str], Results]] = {
    m.CONSTANT: _evo_constant,
    m.BASE: _evo_base,
    m.RAG: _evo_rag,
    m.RAG_WITH_TESTS: _evo_rag_with_tests,
    m.SHARED_LORA: _evo_shared_lora,
    m.STATIC: _evo_stale_snapshot,
    m.STATIC_AT_COMMIT: _evo_static_every_commit,
    m.EVO_AT_START: _evo_at_start,
    m.EVO_AT_COMMIT: _evo_at_commit,
    m.EVO: _evo_evolved,
    m.EVO_WITH_TESTS: _evo_evolved,
}
