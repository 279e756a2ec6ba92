"""Whether a static hypernetwork's adapters carry anything of their own repository: each
held-out repository's tasks scored with its own adapter, with the adapter of the mean state of
all the held-out repositories, with another repository's adapter, and with none (the base).

If "own" is no better than "mean state" or "other repository", the generator makes one adapter
whatever it reads, however different the adapters' numbers look (`benchmark.spread`). Reads a
built dataset of held-out repositories (`repo2lora dataset build`): its snapshots' chunk vectors
and its static tasks. Prints one JSON object; strict exact match, as the benchmark scores.

    python -m benchmark.adapter_ablation --generator-dir DIR --dataset DIR [--tasks 16]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

from benchmark.methods import AdapterSlot, EvalConfig, MethodResult, run_model
from benchmark.speed.scaffold import SpeedRun, checkpoint_on_dataset_options, run_speed_benchmark
from repo2lora.adapters.weights import LoraWeights
from repo2lora.hypernet.checkpoint import load_generator
from repo2lora.hypernet.protocol import SnapshotInput
from repo2lora.models.loading import LoadedModel, describe_base_model, load_base_model
from repo2lora.tasks.dataset_build import (
    BuiltRepo,
    built_repo_dirs,
    check_encoded_by,
    load_built_repo,
)
from repo_encoder.errors import UserError

VARIANTS = ("own", "mean_state", "other_repo", "base")


def repo_tasks(built: BuiltRepo, n: int, seed: int) -> list[dict[str, Any]]:
    """At most `n` of the repository's static tasks, a seeded sample in file order."""
    static = [t for t in built.tasks if t.get("kind") == "static"]
    if len(static) > n:
        picked = sorted(random.Random(seed).sample(range(len(static)), n))
        static = [static[i] for i in picked]
    return static


def summarise(results: list[MethodResult]) -> dict[str, Any]:
    nlls = [r.nll for r in results if r.nll is not None]
    return {
        "tasks": len(results),
        "strict_em_pct": round(100 * sum(r.strict_em for r in results) / max(1, len(results)), 2),
        "reference_cut_em_pct": round(
            100 * sum(r.reference_cut_em for r in results) / max(1, len(results)), 2
        ),
        "edit_similarity": round(statistics.mean(r.edit_similarity for r in results), 4)
        if results
        else None,
        "target_nll": round(statistics.mean(nlls), 4) if nlls else None,
    }


def differing_pct(a: list[MethodResult], b: list[MethodResult]) -> float:
    """The share of tasks (%) whose completions differ between two variants."""
    diff = sum(x.completion != y.completion for x, y in zip(a, b, strict=True))
    return round(100 * diff / max(1, len(a)), 2)


@torch.no_grad()
def ablation(
    generator_dir: Path, dataset: Path, model: str | None, n_tasks: int, seed: int
) -> dict[str, Any]:
    info = describe_base_model(model)
    base: LoadedModel = load_base_model(info)
    net = load_generator(str(generator_dir), info).net.eval()
    if not net.stores_state:
        raise UserError(f"{generator_dir}: the ablation needs a vector-state generator")
    repos = [load_built_repo(d) for d in built_repo_dirs(dataset)]
    for r in repos:
        check_encoded_by(r, dataset, info.model_key)
    repos = [r for r in repos if repo_tasks(r, n_tasks, seed)]
    if len(repos) < 2:
        raise UserError(f"{dataset}: fewer than two repositories with static tasks")
    states = [net.encode_snapshot(SnapshotInput(vectors=r.snapshot.vectors)) for r in repos]
    mean_adapter = net.generate(torch.stack(states).mean(0)).detached()
    slot = AdapterSlot(base)
    cfg = EvalConfig()
    per_variant: dict[str, list[MethodResult]] = {v: [] for v in VARIANTS}
    for i, r in enumerate(repos):
        tasks = repo_tasks(r, n_tasks, seed)
        prompts = [t["prefix"] for t in tasks]
        targets = [t["target"] for t in tasks]
        adapters: dict[str, LoraWeights | None] = {
            "own": net.generate(states[i]).detached(),
            "mean_state": mean_adapter,
            # the next repository's (in name order): unrelated to this one
            "other_repo": net.generate(states[(i + 1) % len(repos)]).detached(),
            "base": None,
        }
        for variant, weights in adapters.items():
            m = base.model if weights is None else slot.load(weights)
            per_variant[variant] += run_model(m, base.tokenizer, prompts, targets, cfg)
        print(f"{i + 1}/{len(repos)} {r.summary['name']}", file=sys.stderr)
    own = per_variant["own"]
    return {
        "generator": str(generator_dir),
        "dataset": str(dataset),
        "model": info.description,
        "repositories": len(repos),
        "tasks_per_repo": n_tasks,
        "variants": {v: summarise(rs) for v, rs in per_variant.items()},
        # tasks where the own adapter's completion differs from the mean state's
        "own_differs_from_mean_state_pct": differing_pct(own, per_variant["mean_state"]),
    }


def main(argv: list[str] | None = None) -> int:
    def add_options(parser: argparse.ArgumentParser) -> None:
        checkpoint_on_dataset_options(parser, "a trained static/evo dir")
        parser.add_argument(
            "--tasks", type=int, default=16, help="static tasks per repository, at most"
        )
        parser.add_argument("--seed", type=int, default=0)

    def measure(run: SpeedRun) -> dict[str, Any]:
        args = run.args
        return ablation(args.generator_dir, args.dataset, args.model, args.tasks, args.seed)

    return run_speed_benchmark(
        "adapter_ablation",
        __doc__,
        add_options,
        measure,
        argv,
        prog="python -m benchmark.adapter_ablation",
    )


if __name__ == "__main__":
    sys.exit(main())
