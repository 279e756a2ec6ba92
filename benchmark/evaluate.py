"""Evaluation: every method on every repository's tasks of a track, each method through its
runner (`benchmark.runners`), in report order. A finished repository's records are cached in
the output directory, so an interrupted run resumes."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmark import methods as m
from benchmark.config import CROSS_REPO, IN_REPO, BenchConfig
from benchmark.prepare import PreparedRepo
from benchmark.runners import (
    EVO_RUNNERS,
    STATIC_RUNNERS,
    EvalTask,
    Evaluator,
    EvoRepoRun,
    StaticRepoRun,
    fill,
)
from benchmark.train import Trained, is_train
from evo_state.store import open_store
from repo2lora.atomic import write_text_atomic
from repo2lora.models.loading import LoadedModel
from repo2lora.progress import ProgressFn
from repo2lora.tasks.datasets import repo_context


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
        if m.NAMES in wants and trained.names_net is not None:
            out.append(m.NAMES)
        out += [x for x in (m.SHINE, m.DND) if x in wants and x in trained.snapshot_nets]
        return out
    if m.STATIC in wants and trained.static_net is not None:
        out += [m.STATIC, m.STATIC_AT_COMMIT]
    if m.EVO in wants and trained.evo_net is not None:
        out += [m.EVO_AT_START, m.EVO_AT_COMMIT, m.EVO]
        if cfg.with_tests:
            out.append(m.EVO_WITH_TESTS)
    return out


def evaluate_static_repo(ev: Evaluator, r: PreparedRepo, tasks: list[EvalTask]) -> dict[str, Any]:
    """Every static-track method on one repository's tasks, each through its runner."""
    assert r.static is not None
    records = [ev.record(r, "static", et) for et in tasks]
    run = StaticRepoRun(ev, r, tasks)
    for name in track_methods(ev.cfg, ev.trained, "static"):
        fill(records, name, STATIC_RUNNERS[name](run, name))
    return {"records": records, "adapters": run.adapters}


def evaluate_evo_repo(ev: Evaluator, r: PreparedRepo, tasks: list[EvalTask]) -> dict[str, Any]:
    """Every evolution-track method on one repository's walk, commit by commit, each through
    its runner."""
    assert r.evo is not None
    names = track_methods(ev.cfg, ev.trained, "evo")
    records = [ev.record(r, "evo", et) for et in tasks]
    by_step: dict[int, list[int]] = {}
    for i, et in enumerate(tasks):
        by_step.setdefault(et.step, []).append(i)
    results: dict[str, list[m.MethodResult | None]] = {n: [None] * len(tasks) for n in names}
    ctx = repo_context(r.source.path, ev.base)
    with open_store(ctx.root) as store:
        run = EvoRepoRun(ev, r, tasks, names, ctx, store)
        for step in sorted(by_step):
            idx = by_step[step]
            at = run.at_step(step, [tasks[i] for i in idx])
            for name in names:
                for i, one in zip(idx, EVO_RUNNERS[name](run, at, name), strict=True):
                    results[name][i] = one
    for name in names:
        fill(records, name, [x for x in results[name] if x is not None])
    adapters = {
        k: {"adapter_seconds": sum(v) / len(v), "count": len(v)} for k, v in run.costs.items()
    }
    return {"records": records, "adapters": adapters}


# --- a track over every repository ------------------------------------------------------------


def eval_tasks(r: PreparedRepo, track: str, split: str, cfg: BenchConfig) -> list[EvalTask]:
    """The tasks of `r` evaluated in `track`: all of a held-out repository's, the in-repo test
    half of a training repository's (a seeded subset when capped)."""
    tasks: list[EvalTask] = []
    held_out = split == CROSS_REPO
    if track == "static" and r.static is not None:
        tasks = [EvalTask(t, split) for t in r.static.tasks if held_out or not is_train(t, cfg)]
    elif track == "evo" and r.evo is not None:
        commits = r.evo.data.encoding.commits
        tasks = [
            EvalTask(t, split, i, commits[i])
            for i, t in r.evo.data.evo_tasks
            if held_out or not is_train(t, cfg)
        ]
    return _subset(tasks, cfg.max_eval_tasks, cfg.seed, lambda et: et.task.task_id)


def _subset(tasks: list[Any], limit: int | None, seed: int, key: Callable[[Any], str]) -> list[Any]:
    if limit is None or len(tasks) <= limit:
        return tasks
    ranked = sorted(tasks, key=lambda t: hashlib.sha256(f"{seed}:{key(t)}".encode()).hexdigest())
    chosen = {id(t) for t in ranked[:limit]}
    return [t for t in tasks if id(t) in chosen]


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
    evaluate_repo = evaluate_static_repo if track == "static" else evaluate_evo_repo
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
        res = evaluate_repo(evaluator, p, tasks)
        res.update(repo=p.label, track=track, split=split, methods=names)
        write_text_atomic(cache, json.dumps(res))
        results[p.label] = res
    progress(stage, total, total)
    return results
