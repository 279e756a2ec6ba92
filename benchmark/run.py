"""The benchmark run end to end: repositories (a generated synthetic suite or local git
repositories) -> assertion tasks and encoder input -> cross-repo and in-repo splits -> the
hypernetworks and LoRA baselines trained on the training split -> every method scored on the
same tasks -> a report (JSON, Markdown, PNG), with the run's versions and source revision.

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
`with-tests` rows (`benchmark.leakage`) also see test code, minus every test function that
holds an evaluated target and, on the walk, minus the test changes of the commit whose
assertions are evaluated. Chunk vectors are cached in each repository's `.repo2lora/` store, as
`repo2lora snapshot` does.

Every step is the library's own (`encode_snapshot`, `encode_repo`, `mine`, `train_hypernet`,
`train_lora_baseline`, `generate_completion`, hot swap); the modules of this package only wire
them together: config, prepare, leakage, train, evaluate (runners), spread, report and this
one. Work is cached in the output directory: generated suites, trained models (the trainer's
own checkpoints) and each finished (track, repository) evaluation, so an interrupted run
resumes.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmark import checkpoints as ck
from benchmark import methods as m
from benchmark.config import TRACKS, BenchConfig, check_config
from benchmark.evaluate import evaluate_track
from benchmark.markdown import render_markdown
from benchmark.plots import write_plots
from benchmark.prepare import PreparedRepo, Skip, assign_splits, prepare_repo, resolve_sources
from benchmark.report import build_report
from benchmark.source import source_revision
from benchmark.spread import adapter_spread
from benchmark.train import train_models
from repo2lora.atomic import write_text_atomic
from repo2lora.models.loading import describe_base_model, load_base_model
from repo2lora.progress import ProgressFn, no_progress
from repo_encoder.errors import UserError


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


def run_bench(
    cfg: BenchConfig,
    out: Path,
    progress: ProgressFn = no_progress,
    log: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """Run the benchmark into `out` (resuming what a previous run with the same config left)
    and return the report (also written as bench.json, bench.md and plots/)."""
    t_start = time.perf_counter()
    unknown = sorted(set(cfg.methods) - set(m.ALL_METHODS))
    if unknown:
        raise UserError(
            f"unknown methods {', '.join(unknown)}; choose from {', '.join(m.ALL_METHODS)}"
        )
    if not set(cfg.tracks) <= set(TRACKS):
        raise UserError(f"unknown track in {cfg.tracks}; choose static, evo or both")
    out = Path(out)
    scoring = bool(cfg.generator_dirs)
    if not scoring:  # a scoring run refuses contaminated input before writing anything
        check_config(out, cfg)
    torch.set_num_threads(max(1, cfg.threads))
    torch.manual_seed(cfg.seed)
    base = load_base_model(describe_base_model(cfg.model))
    notes: list[str] = []
    contaminated: dict[str, list[str]] = {}
    manifests: list[str] = []
    if scoring:  # given checkpoints: nothing is trained
        given_dirs = ck.checkpoint_dirs(cfg.generator_dirs)
        given, generators = ck.load_checkpoints(base, given_dirs)
        cfg, notes = ck.scoring_config(cfg, generators)

    timings: dict[str, float] = {}
    t_stage = time.perf_counter()
    if scoring:
        sources = ck.scoring_sources(cfg, out)
        contaminated, manifests = ck.check_contamination(
            sources, base, given_dirs, cfg.allow_contaminated
        )
        check_config(out, cfg)
        for lines in contaminated.values():
            log(f"CONTAMINATED, kept (--allow-contaminated): {lines[0]}")
    else:
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
    if scoring:  # every repository is held out from the given checkpoints
        split_of = {p.label: "test" for p in prepared}
        trained = given
    else:
        split_of = assign_splits(prepared, cfg)
        train_repos = [p for p in prepared if split_of[p.label] == "train"]
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
        source=source_revision(),
        wall_seconds=time.perf_counter() - t_start,
        timings=timings,
        spread=adapter_spread(trained, prepared, base),
    )
    if scoring:
        report = ck.mark_report(report, contaminated, manifests)
    write_report(report, out)
    return report


def write_report(report: dict[str, Any], out: Path) -> dict[str, Path]:
    """bench.json, bench.md and the plots, each written atomically."""
    out = Path(out)
    paths = {"json": out / "bench.json", "markdown": out / "bench.md"}
    write_text_atomic(
        paths["json"], json.dumps(report, indent=1, sort_keys=True, default=str) + "\n"
    )
    write_text_atomic(paths["markdown"], render_markdown(report))
    for p in write_plots(report, out / "plots"):
        paths[p.stem] = p
    return paths
