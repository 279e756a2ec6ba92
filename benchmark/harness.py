"""Runs the RepoPeftBench-style benchmark end to end: repositories (a generated synthetic suite
or local git repositories) -> assertion tasks and encoder input -> cross-repo and in-repo
splits -> the hypernetworks and LoRA baselines trained on the training split -> every method
scored on the same tasks -> a report (JSON, Markdown, PNG).

Tracks
* static: the snapshot of HEAD. Repositories are split train/test (cross-repo); inside the
  training repositories, test functions are split train/test (in-repo, `in_repo_split`).
* evo: the first-parent walk of the last `max_commits` commits. A task is an assertion a
  commit adds; the evolving adapter is the state after that commit's source changes (test
  files never reach the encoder). The walk's start is the "snapshot" that per-commit decay is
  measured from. The tasks of the start commit train the state h_0 and are never evaluated.

Leakage rule: the encoder, the retrieval index and the per-repository LoRA see source files
only (the default `source-only` exclusion: test files never reach them); the prompt is the
miner's structured prefix, which never holds the evaluated test function past the target. The
`with-tests` rows (`rag+tests` on both tracks, `code2lora-static+tests`, and on the walk
`code2lora-evo+tests`) also see test code, minus every test function that holds an evaluated
target and, on the walk, minus the test changes of the commit whose assertions are evaluated.
Chunk vectors are cached in each repository's `.repo2lora/` store, as `repo2lora snapshot` does.

Every step is the library's own (`encode_snapshot`, `encode_repo`, `mine`, `train_hypernet`,
`train_lora_baseline`, `generate_completion`, hot swap); this module only wires them together.
Work is cached in the output directory: generated suites, trained models (the trainer's own
checkpoints) and each finished (track, repository) evaluation, so an interrupted run resumes.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import shutil
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import git
import torch

from benchmark import methods as m
from benchmark.datasets import RepoData, encode_repo, in_repo_split, repo_context
from benchmark.miner import AssertionTask, MinerConfig, mine
from benchmark.retrieval import ChunkRetriever, rag_prompt
from benchmark.synthetic import SyntheticRepo, generate_suite, load_repo
from evo_state.diff import ChunkDiff, commit_chunk_diff
from evo_state.store import Store, open_store
from repo2lora.adapters.targets import DEFAULT_TARGETS
from repo2lora.adapters.weights import LoraWeights
from repo2lora.hypernet.checkpoint import Generator, load_generator
from repo2lora.hypernet.dnd import DndGenerator
from repo2lora.hypernet.evo import EvoHypernet
from repo2lora.hypernet.shine import ShineGenerator, chunk_texts
from repo2lora.hypernet.static import StaticHypernet
from repo2lora.models.loading import LoadedModel, describe_base_model, load_base_model
from repo2lora.progress import ProgressFn, no_progress
from repo2lora.snapshot import DiffInput, SnapshotConfig, encode_snapshot
from repo2lora.training.baselines import (
    BASELINE_CARD,
    LoraTrainConfig,
    load_lora_baseline,
    train_lora_baseline,
)
from repo2lora.training.data import RepoEncoding, TaskExample
from repo2lora.training.dnd_trainer import CollectConfig, train_dnd
from repo2lora.training.hypernet_trainer import TrainConfig, train_hypernet
from repo2lora.training.loop import StepLog, TrainResult
from repo2lora.training.shine_trainer import train_shine
from repo_encoder.chunk import Chunk
from repo_encoder.errors import UserError
from repo_encoder.exclusion import ExclusionConfig, is_test_path
from repo_encoder.snapshot import resolve_commit

TRACKS = ("static", "evo")
WITH_TESTS = SnapshotConfig(exclusion=ExclusionConfig(mode="with-tests"))
IN_REPO = "in-repo"
CROSS_REPO = "cross-repo"
CONFIG_FILE = "bench-config.json"


@dataclass(frozen=True)
class BenchConfig:
    """Everything that decides a run's numbers (the output directory's cache is valid only for
    the same config). `suite` is ("ci",), ("synthetic",) or local repository paths."""

    suite: tuple[str, ...] = ("ci",)
    tracks: tuple[str, ...] = TRACKS
    methods: tuple[str, ...] = m.ALL_METHODS
    model: str | None = "tiny-random"
    seed: int = 0
    n_repos: int = 8  # synthetic suites only
    n_commits: int = 8
    test_repo_share: float = 0.25  # repositories held out entirely (cross-repo)
    # paths held out entirely (cross-repo), instead of a seeded `test_repo_share` of the suite:
    # the rest are the training repositories
    test_repos: tuple[str, ...] = ()
    in_repo_test_share: float = 0.5  # test functions held out inside training repositories
    eval: m.EvalConfig = field(default_factory=m.EvalConfig)
    max_commits: int = 30  # the evolution walk covers at most this many last commits
    max_eval_tasks: int | None = None  # per repository and track (a seeded subset)
    hypernet_steps: int = 300
    evo_steps: int = 300
    shine_steps: int = 150
    dnd_steps: int = 300
    dnd_collect_steps: int = 60  # per training repository: the LoRA checkpoints DnD imitates
    # where the evolving hypernetwork starts: "static" (the trained static hypernetwork's
    # encoder and head, trained further at `evo_init_lr_scale` x the learning rate) or "scratch"
    evo_init: str = "static"
    evo_init_lr_scale: float = TrainConfig.init_lr_scale
    hypernet_batch: int = 8
    hypernet_lr: float = 3e-3
    rank: int = 8
    lora_steps: int = 200
    per_repo_steps: int = 60
    lora_batch: int = 8
    lora_lr: float = 3e-3
    rag_top_k: int = 4
    rag_max_tokens: int = 128  # retrieval's share of the prompt budget
    # also score rag, code2lora-static and (on the walk) code2lora-evo with the test code visible
    with_tests: bool = True
    threads: int = 1  # torch CPU threads; one is fastest for small models on shared cores
    target_modules: tuple[str, ...] = DEFAULT_TARGETS  # what every LoRA method adapts

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def fingerprint(self) -> dict[str, Any]:
        """The fields a cached result depends on (not `threads`, `tracks` or `methods`:
        those select work, they do not change a finished repository's numbers)."""
        d = self.to_json()
        for k in ("threads", "tracks", "methods"):
            d.pop(k)
        return d


# Suite profiles: the sizes and training budgets `--suite NAME` stands for. `ci` is sized so
# that the whole run (both tracks, every method) takes a few minutes on 2 CPU cores with
# tiny-random; `synthetic` is a larger suite for a longer run.
PROFILES: dict[str, dict[str, Any]] = {
    "ci": dict(
        model="tiny-random",
        n_repos=8,
        n_commits=8,
        hypernet_steps=300,
        evo_steps=200,
        lora_steps=200,
    ),
    "synthetic": dict(
        model="tiny-random",
        n_repos=24,
        n_commits=12,
        hypernet_steps=1200,
        evo_steps=1200,
        lora_steps=800,
        per_repo_steps=200,
    ),
    # local repositories: the embedded default model unless --model is given
    "paths": dict(model=None, max_eval_tasks=200, eval=m.EvalConfig(prompt_tokens=512)),
}


def bench_config(suite: tuple[str, ...], **overrides: Any) -> BenchConfig:
    """The config for `suite` with its profile's defaults, then `overrides` (None = keep)."""
    profile = suite[0] if len(suite) == 1 and suite[0] in ("ci", "synthetic") else "paths"
    fields: dict[str, Any] = {"suite": suite, **PROFILES[profile]}
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return BenchConfig(**fields)


@dataclass(frozen=True)
class Skip:
    """A repository (or one track of it) left out, and why, in one sentence."""

    repo: str
    track: str  # "all", "static" or "evo"
    reason: str


@dataclass
class RepoSource:
    label: str
    path: Path
    manifest: SyntheticRepo | None = None


@dataclass
class StaticView:
    """HEAD: the chunks the encoder sees, their vectors, and the mined tasks."""

    commit: str
    chunks: list[Chunk]
    vectors: torch.Tensor  # [n, d]
    tasks: list[AssertionTask]
    # the `with-tests` snapshot (source and test code), before the evaluated tests are removed
    with_tests: tuple[list[Chunk], torch.Tensor] | None = None


@dataclass
class EvoView:
    """The walk: encoder input (snapshot at the start + one chunk diff per commit), the
    tasks each commit adds (by step, 1-based), the start commit's tasks (step 0), and the
    names each step renamed to (known only for synthetic repositories)."""

    data: RepoData
    start_tasks: list[AssertionTask]
    commits_total: int
    renames: dict[int, set[str]] | None


@dataclass
class PreparedRepo:
    source: RepoSource
    static: StaticView | None = None
    evo: EvoView | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.source.label


@dataclass
class Trained:
    """The models trained on the training split, and what training them cost."""

    static_net: StaticHypernet | None = None
    evo_net: EvoHypernet | None = None
    snapshot_nets: dict[str, ShineGenerator | DndGenerator] = field(default_factory=dict)
    shared: dict[str, Path] = field(default_factory=dict)  # track -> adapter dir
    constant: dict[str, str] = field(default_factory=dict)  # track -> most frequent target
    train_targets: dict[str, set[str]] = field(default_factory=dict)
    costs: dict[str, Any] = field(default_factory=dict)


# --- repositories -----------------------------------------------------------------------------


def resolve_sources(cfg: BenchConfig, out: Path) -> list[RepoSource]:
    """The repositories of the suite: generated (once) into `out`, or the given paths."""
    if cfg.suite in (("ci",), ("synthetic",)):
        suite_dir = out / f"suite-{cfg.suite[0]}"
        done = suite_dir / "done"
        if not done.exists():
            if suite_dir.exists():  # an interrupted generation: it is ours, start it again
                shutil.rmtree(suite_dir)
            generate_suite(suite_dir, cfg.n_repos, cfg.n_commits, cfg.seed)
            done.write_text("ok\n")
        repos = [load_repo(p) for p in sorted(suite_dir.glob("*.manifest.json"))]
        return [RepoSource(r.name, r.path, r) for r in repos]
    sources: list[RepoSource] = []
    seen: set[str] = set()
    for spec in cfg.suite + tuple(t for t in cfg.test_repos if t not in cfg.suite):
        path = Path(spec).expanduser().resolve()
        label = path.name or "repo"
        while label in seen:
            label = f"{label}-{hashlib.sha256(str(path).encode()).hexdigest()[:6]}"
        seen.add(label)
        manifest_path = path.parent / f"{path.name}.manifest.json"
        manifest = load_repo(manifest_path) if manifest_path.is_file() else None
        sources.append(RepoSource(label, path, manifest))
    return sources


def _renames_by_step(manifest: SyntheticRepo | None, walk: list[str]) -> dict[int, set[str]] | None:
    if manifest is None:
        return None
    by_sha = {c.sha: c for c in manifest.commits}
    out: dict[int, set[str]] = {}
    for step, sha in enumerate(walk):
        commit = by_sha.get(sha)
        names = {
            ch.new_name.rsplit(".", 1)[-1]
            for ch in (commit.changes if commit else ())
            if ch.kind == "rename" and ch.new_name
        }
        if names and step > 0:
            out[step] = names
    return out


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


class StateWalk:
    """An evolving state advanced lazily along a walk. `state(t)` is the state the tasks added
    by commit t are evaluated with: the carried state after commit t-1 stepped with `shown(t)`
    (default: the carried input, `carried(t)`, itself)."""

    def __init__(
        self,
        net: EvoHypernet,
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
            self.h0 = self.h = self.net.encode(self.start_vectors())
        return self.h0

    def _advance(self, step: int) -> torch.Tensor:
        h = self.h if self.h is not None else self.start()
        while self.at < step:
            self.at += 1
            h = self.net.step(h, *self.carried(self.at))
        self.h = h
        return h

    def state(self, step: int) -> torch.Tensor:
        if self.shown is None:
            return self._advance(step)
        return self.net.step(self._advance(step - 1), *self.shown(step))


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

    def walk(self, net: EvoHypernet) -> StateWalk:
        """The evolving state under this setting."""

        def carried(t: int) -> DiffInput:
            return self.ctx.encode_diff(self.store, visible_diff(self.diff(t), self.held, True))

        def shown(t: int) -> DiffInput:
            return self.ctx.encode_diff(self.store, visible_diff(self.diff(t), self.held, False))

        return StateWalk(net, lambda: self.snapshot(0)[1], carried, shown)


def prepare_repo(
    source: RepoSource, base: LoadedModel, cfg: BenchConfig
) -> tuple[PreparedRepo | None, list[Skip]]:
    """Read one repository for the configured tracks; bad input becomes a `Skip` line."""
    label = source.label
    try:
        ctx = repo_context(source.path, base)
        head = resolve_commit(ctx.repo, "HEAD")
    except UserError as exc:
        return None, [Skip(label, "all", str(exc))]
    prep = PreparedRepo(source)
    with open_store(ctx.root) as store:
        snap = encode_snapshot(ctx, store, head)
    mined = mine(ctx.repo, head, MinerConfig(), repo_name=label)
    test_files = mined.counts["test_files"]
    if not snap.files and not test_files:
        return None, [Skip(label, "all", "no Python files at HEAD")]
    if not mined.tasks:
        unparsable = mined.counts["skipped_syntax_error"]
        why = (
            "no test files (tests/**, test_*.py, *_test.py)"
            if not test_files
            else f"no assertion tasks in its {test_files} test files"
            + (f" ({unparsable} do not parse)" if unparsable else "")
        )
        return None, [Skip(label, "all", why)]
    if mined.counts["skipped_syntax_error"]:
        prep.notes.append(f"{mined.counts['skipped_syntax_error']} test files do not parse")
    if snap.skipped.get("fallback_syntax_error"):
        prep.notes.append(
            f"{snap.skipped['fallback_syntax_error']} source files do not parse "
            "(chunked by line windows)"
        )
    prep.static = StaticView(head.hexsha, snap.chunks, snap.encoded.vectors, mined.tasks)
    if cfg.with_tests and "static" in cfg.tracks and {m.RAG, m.STATIC} & set(cfg.methods):
        ctx_wt = repo_context(source.path, base, WITH_TESTS)
        with open_store(ctx_wt.root) as store:  # the chunk-vector cache is shared
            wt = encode_snapshot(ctx_wt, store, head)
        prep.static.with_tests = (wt.chunks, wt.encoded.vectors)

    skips: list[Skip] = []
    if "evo" in cfg.tracks:
        total = int(ctx.repo.git.rev_list("--first-parent", "--count", head.hexsha))
        if total < 2:
            skips.append(Skip(label, "evo", "one commit: no history to walk"))
            return prep, skips
        walk = min(total - 1, cfg.max_commits)
        if walk < total - 1:
            prep.notes.append(f"history of {total} commits: the walk covers the last {walk}")
        start = ctx.repo.commit(f"{head.hexsha}~{walk}")
        data = encode_repo(source.path, base, evolving_from=start.hexsha, name=label)
        if not data.evo_tasks:
            skips.append(Skip(label, "evo", f"its last {walk} commits add no assertions"))
            return prep, skips
        start_tasks = mine(ctx.repo, start, MinerConfig(), repo_name=label).tasks
        renames = _renames_by_step(source.manifest, data.encoding.commits)
        prep.evo = EvoView(data, start_tasks, total, renames)
    return prep, skips


def split_repos(labels: list[str], share: float, seed: int) -> dict[str, str]:
    """Cross-repo split: a seeded ranking of the repositories, the first `share` of them held
    out (at least one, and at least one left for training, when there are two or more)."""
    ranked = sorted(labels, key=lambda s: hashlib.sha256(f"{seed}:{s}".encode()).hexdigest())
    n_test = round(len(labels) * share)
    n_test = min(max(n_test, 1), len(labels) - 1) if len(labels) >= 2 else 0
    return {s: ("test" if i < n_test else "train") for i, s in enumerate(ranked)}


def _subset(tasks: list[Any], limit: int | None, seed: int, key: Callable[[Any], str]) -> list[Any]:
    if limit is None or len(tasks) <= limit:
        return tasks
    ranked = sorted(tasks, key=lambda t: hashlib.sha256(f"{seed}:{key(t)}".encode()).hexdigest())
    chosen = {id(t) for t in ranked[:limit]}
    return [t for t in tasks if id(t) in chosen]


# --- training ---------------------------------------------------------------------------------


def _as_json(value: Any) -> Any:
    """`value` as it reads back from JSON (tuples become lists), for comparing with a card."""
    return json.loads(json.dumps(value))


def _train_generator(
    base: LoadedModel,
    examples: list[TaskExample],
    out_dir: Path,
    tcfg: TrainConfig,
    progress: ProgressFn,
    train: Callable[[Callable[[StepLog], None]], TrainResult],
) -> tuple[Generator, dict[str, Any]]:
    """Run `train` (one of the library's trainers, given a step callback) unless `out_dir`
    already holds a finished run of the same config; load what it wrote."""
    stage = f"train {tcfg.generator}"
    card = out_dir / "hypernet.json"
    finished = False
    if card.is_file():
        training = json.loads(card.read_text()).get("training", {})
        finished = training.get("step") == tcfg.steps and training.get("config") == _as_json(
            asdict(tcfg)
        )
    cost: dict[str, Any] = {"steps": tcfg.steps, "examples": len(examples)}
    if finished:
        cost["cached"] = True
        if (out_dir / "bench-train.json").is_file():  # what training it cost, back then
            cost = {**json.loads((out_dir / "bench-train.json").read_text()), **cost}
    else:

        def on_step(s: StepLog) -> None:
            progress(stage, s.step, tcfg.steps)

        res = train(on_step)
        cost.update(seconds=res.seconds, final_loss=res.final_loss, tokens=res.tokens)
        (out_dir / "bench-train.json").write_text(json.dumps(cost, indent=2))
    progress(stage, tcfg.steps, tcfg.steps)
    net = load_generator(str(out_dir), base.info).net
    net.eval()
    cost["params"] = sum(p.numel() for p in net.parameters())
    return net, cost


def _train_hypernet(
    base: LoadedModel,
    encodings: dict[str, RepoEncoding],
    examples: list[TaskExample],
    out_dir: Path,
    tcfg: TrainConfig,
    progress: ProgressFn,
) -> tuple[StaticHypernet, dict[str, Any]]:
    net, cost = _train_generator(
        base,
        examples,
        out_dir,
        tcfg,
        progress,
        lambda on_step: train_hypernet(base, encodings, examples, out_dir, tcfg, on_step=on_step),
    )
    assert isinstance(net, StaticHypernet)
    return net, cost


def _train_lora(
    base: LoadedModel,
    examples: list[TaskExample],
    out_dir: Path,
    lcfg: LoraTrainConfig,
    source_texts: list[str] | None = None,
) -> dict[str, Any]:
    card = out_dir / BASELINE_CARD
    if card.is_file():
        saved = json.loads(card.read_text())
        if saved.get("config") == _as_json(asdict(lcfg)):
            return {**saved["result"], "cached": True}
    res = train_lora_baseline(base, examples, out_dir, lcfg, source_texts=source_texts)
    return asdict(res)


def _lora_config(cfg: BenchConfig, steps: int) -> LoraTrainConfig:
    return LoraTrainConfig(
        steps=steps,
        batch_size=cfg.lora_batch,
        lr=cfg.lora_lr,
        rank=cfg.rank,
        max_prompt_tokens=cfg.eval.prompt_tokens,
        max_target_tokens=cfg.eval.target_tokens,
        seed=cfg.seed,
        target_modules=cfg.target_modules,
    )


def _hypernet_config(cfg: BenchConfig, generator: str, steps: int) -> TrainConfig:
    return TrainConfig(
        generator=generator,
        steps=steps,
        batch_size=cfg.hypernet_batch,
        lr=cfg.hypernet_lr,
        max_prompt_tokens=cfg.eval.prompt_tokens,
        max_target_tokens=cfg.eval.target_tokens,
        # one commit per window: a training step costs one GRU step with gradient (the CI
        # budget); `repo2lora train` defaults to 16
        tbptt_window=1,
        checkpoint_every=max(1, steps // 4),
        eval_every=steps + 1,
        seed=cfg.seed,
        rank=cfg.rank,
        target_modules=cfg.target_modules,
    )


def _examples(tasks: list[AssertionTask], repo: str, step: int = -1) -> list[TaskExample]:
    return [TaskExample(repo, t.prefix, t.target, step, t.task_id) for t in tasks]


def _is_train(task: AssertionTask, cfg: BenchConfig) -> bool:
    return in_repo_split(task, cfg.in_repo_test_share, cfg.seed) == "train"


def static_training_examples(repos: list[PreparedRepo], cfg: BenchConfig) -> list[TaskExample]:
    """The in-repo training halves of the training repositories' HEAD tasks."""
    out: list[TaskExample] = []
    for r in repos:
        if r.static is not None:
            out += _examples([t for t in r.static.tasks if _is_train(t, cfg)], r.label)
    return out


def evo_training_examples(repos: list[PreparedRepo], cfg: BenchConfig) -> list[TaskExample]:
    """The in-repo training halves of the walk's tasks: the start commit's (step 0, for h_0)
    and those each commit adds (step i, for h_i)."""
    out: list[TaskExample] = []
    for r in repos:
        if r.evo is None:
            continue
        out += _examples([t for t in r.evo.start_tasks if _is_train(t, cfg)], r.label, step=0)
        out += [
            TaskExample(r.label, t.prefix, t.target, i, t.task_id)
            for i, t in r.evo.data.evo_tasks
            if _is_train(t, cfg)
        ]
    return out


def train_models(
    base: LoadedModel,
    train_repos: list[PreparedRepo],
    cfg: BenchConfig,
    out: Path,
    progress: ProgressFn,
) -> tuple[Trained, list[str]]:
    """Train what the requested methods need on the training split (cached in `out`)."""
    trained = Trained()
    notes: list[str] = []
    wants = set(cfg.methods)
    static_ex = static_training_examples(train_repos, cfg)
    evo_ex = evo_training_examples(train_repos, cfg)
    for track, examples in (("static", static_ex), ("evo", evo_ex)):
        trained.constant[track] = m.most_frequent([e.target for e in examples])
        trained.train_targets[track] = {e.target for e in examples}
    static_enc = {
        r.label: RepoEncoding(r.label, r.static.vectors, commits=[r.static.commit])
        for r in train_repos
        if r.static is not None
    }
    static_dir = out / "models" / "static" / m.STATIC
    if m.STATIC in wants:  # both tracks use it (the evolution track on stale snapshots)
        if static_ex:
            net, cost = _train_hypernet(
                base,
                static_enc,
                static_ex,
                static_dir,
                _hypernet_config(cfg, m.STATIC, cfg.hypernet_steps),
                progress,
            )
            trained.static_net, trained.costs[m.STATIC] = net, cost
        else:
            notes.append(f"{m.STATIC}: no training tasks, not trained")
    if m.EVO in wants and "evo" in cfg.tracks:
        if evo_ex:
            encodings = {r.label: r.evo.data.encoding for r in train_repos if r.evo is not None}
            tcfg = _hypernet_config(cfg, m.EVO, cfg.evo_steps)
            if cfg.evo_init != "scratch" and trained.static_net is not None:
                tcfg = replace(tcfg, init_from=str(static_dir), init_lr_scale=cfg.evo_init_lr_scale)
            net, cost = _train_hypernet(
                base, encodings, evo_ex, out / "models" / "evo" / m.EVO, tcfg, progress
            )
            assert isinstance(net, EvoHypernet)
            trained.evo_net, trained.costs[m.EVO] = net, cost
        else:
            notes.append(f"{m.EVO}: no training tasks in the training repositories' histories")
    for name in (m.SHINE, m.DND):
        if name not in wants or "static" not in cfg.tracks:
            continue
        if not static_ex:
            notes.append(f"{name}: no training tasks, not trained")
            continue
        gen, trained.costs[name] = _train_snapshot_generator(
            name, base, train_repos, static_enc, static_ex, cfg, out, progress
        )
        trained.snapshot_nets[name] = gen
    if m.SHARED_LORA in wants:
        for track, examples in (("static", static_ex), ("evo", evo_ex)):
            if track not in cfg.tracks:
                continue
            if not examples:
                notes.append(f"{m.SHARED_LORA} ({track}): no training tasks, not trained")
                continue
            stage = f"train {m.SHARED_LORA} ({track})"
            progress(stage, 0, 1)
            d = out / "models" / track / m.SHARED_LORA
            trained.costs[f"{m.SHARED_LORA}/{track}"] = _train_lora(
                base, examples, d, _lora_config(cfg, cfg.lora_steps)
            )
            trained.shared[track] = d
            progress(stage, 1, 1)
    return trained, notes


def _train_snapshot_generator(
    name: str,
    base: LoadedModel,
    train_repos: list[PreparedRepo],
    encodings: dict[str, RepoEncoding],
    examples: list[TaskExample],
    cfg: BenchConfig,
    out: Path,
    progress: ProgressFn,
) -> tuple[ShineGenerator | DndGenerator, dict[str, Any]]:
    """SHINE (on the training repositories' chunk texts) or DnD (on their chunk vectors, after
    collecting per-repository LoRA checkpoints), with the library's trainers."""
    d = out / "models" / "static" / name
    steps = cfg.shine_steps if name == m.SHINE else cfg.dnd_steps
    tcfg = _hypernet_config(cfg, name, steps)
    run: Callable[..., TrainResult]
    if name == m.SHINE:
        texts = {r.label: chunk_texts(r.static.chunks) for r in train_repos if r.static}
        run = functools.partial(train_shine, base, texts, examples, d, tcfg)
    else:
        keep = CollectConfig().keep
        collect = CollectConfig(
            lora=_lora_config(cfg, cfg.dnd_collect_steps),
            save_every=max(1, cfg.dnd_collect_steps // keep),
            keep=keep,
        )
        run = functools.partial(train_dnd, base, encodings, examples, d, tcfg, collect=collect)
    gen, cost = _train_generator(
        base, examples, d, tcfg, progress, lambda on_step: run(on_step=on_step)
    )
    assert isinstance(gen, ShineGenerator | DndGenerator)
    return gen, cost


# --- evaluation -------------------------------------------------------------------------------


@dataclass
class EvalTask:
    task: AssertionTask
    split: str
    step: int = -1  # commit index in the walk (evo); -1 static
    commit: str = ""


def track_methods(cfg: BenchConfig, trained: Trained, track: str) -> list[str]:
    """The methods (report rows) a track runs, in report order: what was asked for and could
    be trained. The evolution track adds the fresh-snapshot and start-state rows and has no
    per-repository LoRA (one training run per commit is the cost it is measured against)."""
    wants = cfg.methods
    out = [x for x in (m.CONSTANT, m.BASE, m.RAG) if x in wants]
    if cfg.with_tests and m.RAG in wants:
        out.append(m.RAG_WITH_TESTS)
    if m.SHARED_LORA in wants and track in trained.shared:
        out.append(m.SHARED_LORA)
    if track == "static":
        if m.PER_REPO_LORA in wants:
            out.append(m.PER_REPO_LORA)
        if m.STATIC in wants and trained.static_net is not None:
            out.append(m.STATIC)
            if cfg.with_tests:
                out.append(m.STATIC_WITH_TESTS)
        out += [x for x in (m.SHINE, m.DND) if x in wants and x in trained.snapshot_nets]
        return out
    if m.STATIC in wants and trained.static_net is not None:
        out += [m.STATIC, m.STATIC_AT_COMMIT]
    if m.EVO in wants and trained.evo_net is not None:
        out += [m.EVO_AT_START, m.EVO]
        if cfg.with_tests:
            out.append(m.EVO_WITH_TESTS)
    return out


class Evaluator:
    """Runs every method over one repository's tasks of one track and returns its records."""

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
        self._shared: dict[str, Any] = {}
        tok = base.tokenizer
        self.token_ids: Callable[[str], list[int]] = lambda s: tok(s, add_special_tokens=False)[
            "input_ids"
        ]
        self.decode: Callable[[list[int]], str] = lambda ids: tok.decode(ids)

    def _seen_prompt(self, prefix: str) -> str:
        ids = self.token_ids(prefix)
        budget = self.cfg.eval.prompt_tokens
        return prefix if len(ids) <= budget else self.decode(ids[len(ids) - budget :])

    def _shared_model(self, track: str) -> Any:
        if track not in self._shared:
            self._shared.clear()
            self._shared[track] = load_lora_baseline(self.base, self.trained.shared[track])
        return self._shared[track]

    def _run(
        self,
        model: Any,
        prompts: list[str],
        targets: list[str],
        extra_seconds: list[float] | None = None,
        retrieved: list[int] | None = None,
    ) -> list[m.MethodResult]:
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

    def _rag(self, chunks: list[Chunk], tasks: list[EvalTask]) -> list[m.MethodResult]:
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
        return self._run(
            self.base.model, prompts, [et.task.target for et in tasks], secs, retrieved
        )

    def _adapted(
        self, net: StaticHypernet | None, state: Callable[[], torch.Tensor]
    ) -> tuple[Any, float]:
        """The slot's model with the adapter generated from `state()`, and the seconds it took
        to make the state, generate the LoRA and swap it in."""
        assert net is not None
        t = time.perf_counter()
        with torch.no_grad():
            weights = m.generate_adapter(net, state())
        model = self.slot.load(weights)
        return model, time.perf_counter() - t

    def _record(self, r: PreparedRepo, track: str, et: EvalTask) -> dict[str, Any]:
        t = et.task
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
            "target_in_prompt": t.target in self._seen_prompt(t.prefix),
            "target_in_training": t.target in self.trained.train_targets.get(track, set()),
            "after_rename": None,
            "renamed_target": None,
            "methods": {},
        }
        if track == "evo" and r.evo is not None and r.evo.renames is not None:
            steps = [s for s in r.evo.renames if s <= et.step]
            rec["after_rename"] = bool(steps)
            rec["renamed_target"] = any(t.target in r.evo.renames[s] for s in steps)
        return rec

    def _fill(
        self, records: list[dict[str, Any]], name: str, results: list[m.MethodResult]
    ) -> None:
        for rec, res in zip(records, results, strict=True):
            rec["methods"][name] = res.to_json()

    def static_repo(self, r: PreparedRepo, tasks: list[EvalTask]) -> dict[str, Any]:
        assert r.static is not None
        records = [self._record(r, "static", et) for et in tasks]
        prompts = [et.task.prefix for et in tasks]
        targets = [et.task.target for et in tasks]
        extra: dict[str, Any] = {}
        # what each setting of the leakage rule lets the encoder and the retriever see
        seen = {
            m.RAG: (r.static.chunks, r.static.vectors),
            m.STATIC: (r.static.chunks, r.static.vectors),
        }
        if r.static.with_tests is not None:
            visible = leak_free(*r.static.with_tests, [et.task for et in tasks])
            seen[m.RAG_WITH_TESTS] = seen[m.STATIC_WITH_TESTS] = visible
        for name in track_methods(self.cfg, self.trained, "static"):
            if name == m.CONSTANT:
                self._fill(
                    records, name, m.constant_results(self.trained.constant["static"], targets)
                )
            elif name == m.BASE:
                self._fill(records, name, self._run(self.base.model, prompts, targets))
            elif name in (m.RAG, m.RAG_WITH_TESTS):
                self._fill(records, name, self._rag(seen[name][0], tasks))
            elif name == m.SHARED_LORA:
                self._fill(records, name, self._run(self._shared_model("static"), prompts, targets))
            elif name == m.PER_REPO_LORA:
                model, cost = self._per_repo_lora(r, tasks[0].split)
                extra[m.PER_REPO_LORA] = cost
                self._fill(records, name, self._run(model, prompts, targets))
            elif name in (m.STATIC, m.STATIC_WITH_TESTS):
                net = self.trained.static_net
                assert net is not None
                state = functools.partial(net.encode, seen[name][1])
                model, seconds = self._adapted(net, state)
                extra[name] = {"adapter_seconds": seconds}
                self._fill(records, name, self._run(model, prompts, targets))
            elif name in (m.SHINE, m.DND):
                gen = self.trained.snapshot_nets[name]
                t = time.perf_counter()
                weights = m.snapshot_adapter(gen, self.base, r.static.chunks, r.static.vectors)
                model = self.slot.load(weights)
                extra[name] = {"adapter_seconds": time.perf_counter() - t}
                self._fill(records, name, self._run(model, prompts, targets))
        return {"records": records, "adapters": extra}

    def _per_repo_lora(self, r: PreparedRepo, split: str) -> tuple[Any, dict[str, Any]]:
        assert r.static is not None
        own = [t for t in r.static.tasks if _is_train(t, self.cfg)] if split == IN_REPO else []
        d = self.out / "models" / "static" / m.PER_REPO_LORA / r.label
        cost = _train_lora(
            self.base,
            _examples(own, r.label),
            d,
            _lora_config(self.cfg, self.cfg.per_repo_steps),
            source_texts=[c.text for c in r.static.chunks],
        )
        return load_lora_baseline(self.base, d), cost

    def evo_repo(self, r: PreparedRepo, tasks: list[EvalTask]) -> dict[str, Any]:
        assert r.evo is not None
        enc = r.evo.data.encoding
        names = track_methods(self.cfg, self.trained, "evo")
        records = [self._record(r, "evo", et) for et in tasks]
        by_step: dict[int, list[int]] = {}
        for i, et in enumerate(tasks):
            by_step.setdefault(et.step, []).append(i)
        results: dict[str, list[m.MethodResult | None]] = {n: [None] * len(tasks) for n in names}
        costs: dict[str, list[float]] = {}
        static_net, evo_net = self.trained.static_net, self.trained.evo_net

        def adapted(
            name: str, net: StaticHypernet | None, state: Callable[[], torch.Tensor]
        ) -> Any:
            model, seconds = self._adapted(net, state)
            costs.setdefault(name, []).append(seconds)
            return model

        @functools.cache
        def stale_state() -> torch.Tensor:  # the static adapter of the walk's start snapshot
            assert static_net is not None
            return static_net.encode(enc.vectors)

        def fresh_state(vectors: torch.Tensor) -> torch.Tensor:
            assert static_net is not None
            return static_net.encode(vectors)

        ctx = repo_context(r.source.path, self.base)
        with open_store(ctx.root) as store:
            walks: dict[str, StateWalk] = {}
            history = None
            if {m.EVO_WITH_TESTS, m.RAG_WITH_TESTS} & set(names):
                evaluated = [et.task for et in tasks]
                history = WithTestsHistory(r.source.path, enc.commits, evaluated, store, self.base)
            if isinstance(evo_net, EvoHypernet):
                # the evolving state: h_0 once, then advanced one commit diff at a time
                walks[m.EVO] = StateWalk(evo_net, lambda: enc.vectors, lambda t: enc.diffs[t - 1])
                if history is not None and m.EVO_WITH_TESTS in names:
                    walks[m.EVO_WITH_TESTS] = history.walk(evo_net)
            for step in sorted(by_step):
                idx = by_step[step]
                group = [tasks[i] for i in idx]
                prompts = [et.task.prefix for et in group]
                targets = [et.task.target for et in group]
                snap = None
                if m.RAG in names or m.STATIC_AT_COMMIT in names:
                    snap = encode_snapshot(ctx, store, ctx.repo.commit(enc.commits[step]))
                for name in names:
                    res: list[m.MethodResult]
                    if name == m.CONSTANT:
                        res = m.constant_results(self.trained.constant["evo"], targets)
                    elif name == m.RAG:
                        assert snap is not None
                        res = self._rag(snap.chunks, group)
                    elif name == m.RAG_WITH_TESTS:
                        assert history is not None
                        res = self._rag(history.snapshot(step)[0], group)
                    else:
                        if name == m.BASE:
                            model = self.base.model
                        elif name == m.SHARED_LORA:
                            model = self._shared_model("evo")
                        elif name == m.STATIC:
                            model = adapted(name, static_net, stale_state)
                        elif name == m.STATIC_AT_COMMIT:
                            assert snap is not None
                            fresh = functools.partial(fresh_state, snap.encoded.vectors)
                            model = adapted(name, static_net, fresh)
                        elif name == m.EVO_AT_START:
                            model = adapted(name, evo_net, walks[m.EVO].start)
                        else:  # the evolving state after this commit (in either setting)
                            evolved = functools.partial(walks[name].state, step)
                            model = adapted(name, evo_net, evolved)
                        res = self._run(model, prompts, targets)
                    for i, one in zip(idx, res, strict=True):
                        results[name][i] = one
        for name in names:
            self._fill(records, name, [x for x in results[name] if x is not None])
        adapters = {
            k: {"adapter_seconds": sum(v) / len(v), "count": len(v)} for k, v in costs.items()
        }
        return {"records": records, "adapters": adapters}


def eval_tasks(r: PreparedRepo, track: str, split: str, cfg: BenchConfig) -> list[EvalTask]:
    """The tasks of `r` evaluated in `track`: all of a held-out repository's, the in-repo test
    half of a training repository's (a seeded subset when capped)."""
    tasks: list[EvalTask] = []
    held_out = split == CROSS_REPO
    if track == "static" and r.static is not None:
        tasks = [EvalTask(t, split) for t in r.static.tasks if held_out or not _is_train(t, cfg)]
    elif track == "evo" and r.evo is not None:
        commits = r.evo.data.encoding.commits
        tasks = [
            EvalTask(t, split, i, commits[i])
            for i, t in r.evo.data.evo_tasks
            if held_out or not _is_train(t, cfg)
        ]
    return _subset(tasks, cfg.max_eval_tasks, cfg.seed, lambda et: et.task.task_id)


@torch.no_grad()
def adapter_spread(
    trained: Trained, repos: list[PreparedRepo], base: LoadedModel
) -> dict[str, Any]:
    """How different the generated adapters of different repositories are: the mean pairwise
    cosine similarity of their states and of their flattened LoRA weights (static: the HEAD
    snapshot; evo: the state at the end of the walk). Near 1.0 means the hypernetwork makes
    one adapter for every repository, whatever it reads."""

    def mean_cosine(rows: list[torch.Tensor]) -> float:
        x = torch.nn.functional.normalize(torch.stack(rows), dim=1)
        sim = x @ x.T  # [n, n]
        n = sim.shape[0]
        return float((sim.sum() - sim.diagonal().sum()) / (n * (n - 1)))

    def spread(states: list[torch.Tensor] | None, adapters: list[LoraWeights]) -> dict[str, Any]:
        out: dict[str, Any] = {"repos": len(adapters)}
        if len(adapters) < 2:
            return out
        if states is not None:  # SHINE and DnD have no vector state
            out["state_cosine"] = mean_cosine(states)
        out["adapter_cosine"] = mean_cosine([w.flat() for w in adapters])
        return out

    result: dict[str, Any] = {}
    snaps = [r.static for r in repos if r.static is not None]
    if trained.static_net is not None:
        net = trained.static_net
        states = [net.encode(v.vectors) for v in snaps]
        result[m.STATIC] = spread(states, [m.generate_adapter(net, h) for h in states])
    if trained.evo_net is not None:
        evo = trained.evo_net
        finals = []
        for r in repos:
            if r.evo is None:
                continue
            enc = r.evo.data.encoding
            h = evo.encode(enc.vectors)
            for diff in enc.diffs:
                h = evo.step(h, *diff)
            finals.append(h)
        result[m.EVO] = spread(finals, [m.generate_adapter(evo, h) for h in finals])
    for name, gen in trained.snapshot_nets.items():
        made = [m.snapshot_adapter(gen, base, v.chunks, v.vectors) for v in snaps]
        result[name] = spread(None, made)
    return result


# --- the run ----------------------------------------------------------------------------------


def _versions() -> dict[str, str]:
    import importlib.metadata as md
    import platform

    out = {"python": platform.python_version()}
    for dist in ("repo2lora", "torch", "transformers", "peft", "bm25s", "rapidfuzz", "numpy"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def _source_revision() -> dict[str, Any]:
    """The git commit of the repo2lora source that ran (and whether it had local edits)."""
    try:
        repo = git.Repo(Path(__file__).resolve().parent.parent, search_parent_directories=False)
        return {"sha": repo.head.commit.hexsha, "dirty": repo.is_dirty(untracked_files=False)}
    except (git.InvalidGitRepositoryError, git.NoSuchPathError, ValueError):
        return {"sha": None, "dirty": None}


def _check_config(out: Path, cfg: BenchConfig) -> None:
    path = out / CONFIG_FILE
    if path.is_file():
        saved = json.loads(path.read_text())
        now = _as_json(cfg.fingerprint())
        if saved != now:
            changed = sorted(k for k in saved.keys() | now.keys() if saved.get(k) != now.get(k))
            raise UserError(
                f"{out} holds a benchmark run with other settings ({', '.join(changed)}); "
                "pass a new --out, or the same settings to resume it"
            )
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cfg.fingerprint(), indent=2, sort_keys=True) + "\n")


def evaluate_track(
    track: str,
    prepared: list[PreparedRepo],
    split_of: dict[str, str],
    trained: Trained,
    base: LoadedModel,
    cfg: BenchConfig,
    out: Path,
    progress: ProgressFn,
) -> dict[str, Any]:
    """Every method on every repository's tasks of `track`, by repository. A repository's
    results are written whole to `out/results/<track>/` when it finishes and reused by a later
    run that asks for the same methods."""
    plan = []
    for p in prepared:
        split = CROSS_REPO if split_of[p.label] == "test" else IN_REPO
        tasks = eval_tasks(p, track, split, cfg)
        if tasks:
            plan.append((p, split, tasks))
    names = track_methods(cfg, trained, track)
    n_gen = len([x for x in names if x != m.CONSTANT])  # one progress unit: one completion
    total = sum(len(t) for _, _, t in plan) * n_gen
    stage = f"evaluate {track}"
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        progress(stage, done, total)

    evaluator = Evaluator(base, cfg, trained, out, tick)
    progress(stage, 0, total)
    results: dict[str, Any] = {}
    for p, split, tasks in plan:
        cache = out / "results" / track / f"{p.label}.json"
        cached = json.loads(cache.read_text()) if cache.is_file() else None
        if cached is not None and cached.get("methods") == names:
            results[p.label] = cached
            done += len(tasks) * n_gen
            progress(stage, done, total)
            continue
        res = evaluator.static_repo(p, tasks) if track == "static" else evaluator.evo_repo(p, tasks)
        res.update(repo=p.label, track=track, split=split, methods=names)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps(res))
        tmp.replace(cache)
        results[p.label] = res
    progress(stage, total, total)
    return results


def run_bench(
    cfg: BenchConfig,
    out: Path,
    progress: ProgressFn = no_progress,
    log: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """Run the benchmark into `out` (resuming what a previous run with the same config left)
    and return the report (also written as bench.json, bench.md and plots/)."""
    from benchmark.report import build_report, write_report

    t_start = time.perf_counter()
    unknown = sorted(set(cfg.methods) - set(m.ALL_METHODS))
    if unknown:
        raise UserError(
            f"unknown methods {', '.join(unknown)}; choose from {', '.join(m.ALL_METHODS)}"
        )
    if not set(cfg.tracks) <= set(TRACKS):
        raise UserError(f"unknown track in {cfg.tracks}; choose static, evo or both")
    out = Path(out)
    _check_config(out, cfg)
    torch.set_num_threads(max(1, cfg.threads))
    torch.manual_seed(cfg.seed)
    base = load_base_model(describe_base_model(cfg.model))

    timings: dict[str, float] = {}
    t_stage = time.perf_counter()
    sources = resolve_sources(cfg, out)
    skips: list[Skip] = []
    prepared: list[PreparedRepo] = []
    failures: list[dict[str, str]] = []
    for i, source in enumerate(sources):
        progress("prepare repositories", i, len(sources))
        try:
            prep, repo_skips = prepare_repo(source, base, cfg)
        except Exception as exc:  # one broken repository must not end a long run
            prep, repo_skips = (
                None,
                [Skip(source.label, "all", f"failed: {type(exc).__name__}: {exc}")],
            )
            failures.append({"repo": source.label, "traceback": traceback.format_exc()})
        if prep is not None:
            prepared.append(prep)
            for note in prep.notes:
                log(f"{prep.label}: {note}")
        skips += repo_skips
        for s in repo_skips:
            log(f"skipped {s.repo} ({s.track}): {s.reason}")
    progress("prepare repositories", len(sources), len(sources))
    if not prepared:
        raise UserError("no usable repository in the suite (see the skipped lines above)")

    timings["prepare"] = time.perf_counter() - t_stage
    t_stage = time.perf_counter()
    if cfg.test_repos:
        held_out = {str(Path(t).expanduser().resolve()) for t in cfg.test_repos}
        split_of = {
            p.label: "test" if str(p.source.path.resolve()) in held_out else "train"
            for p in prepared
        }
    else:
        split_of = split_repos([p.label for p in prepared], cfg.test_repo_share, cfg.seed)
    train_repos = [p for p in prepared if split_of[p.label] == "train"]
    notes: list[str] = []
    if not any(v == "test" for v in split_of.values()):
        notes.append("one usable repository: no cross-repo split, in-repo only")
    trained, train_notes = train_models(base, train_repos, cfg, out, progress)
    notes += train_notes
    for n in notes:
        log(n)
    timings["train"] = time.perf_counter() - t_stage

    results: dict[str, dict[str, Any]] = {}
    for track in cfg.tracks:
        t_stage = time.perf_counter()
        results[track] = evaluate_track(
            track, prepared, split_of, trained, base, cfg, out, progress
        )
        timings[f"evaluate_{track}"] = time.perf_counter() - t_stage

    report = build_report(
        cfg=cfg,
        base=base,
        prepared=prepared,
        split_of=split_of,
        skips=skips,
        failures=failures,
        trained=trained,
        notes=notes,
        results=results,
        versions=_versions(),
        source=_source_revision(),
        wall_seconds=time.perf_counter() - t_start,
        timings=timings,
        spread=adapter_spread(trained, prepared, base),
    )
    write_report(report, out)
    return report


def replace_eval(cfg: BenchConfig, **changes: Any) -> BenchConfig:
    """`cfg` with some of its `EvalConfig` fields changed."""
    return dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, **changes))
