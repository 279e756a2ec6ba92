"""How much a repository-specific adapter of the shipped shape can gain at all on this base
model: each held-out repository's tasks scored with the shared LoRA, and with that LoRA trained
on for a few steps more on the repository's own source (what a hypernetwork approximates in one
forward pass, here paid for with gradient steps), against the same steps on another
repository's source (the control: what any extra training does).

A generator that reads the repository can at best do what its own fine-tune does; if "own"
beats "other" by less than a target asks of the generator, the target needs another base
model or another adapter shape, not a better generator. Both fine-tunes see source files only
(the dataset's chunks: the encoder's source-only exclusion, so no test holds a target) and, so
that they keep where completions stop, as many tasks of a training dataset (`--replay`, never
the held-out one) replayed beside them. Prints one JSON object: strict EM, NLL, overall and on
the tasks whose target holds a name the repository defines, and how alike the repositories' own
fine-tunes are (the adapter spread #15 asks of a generator). Prompts are cut to 256 tokens, as
the shared LoRA was trained. It reads no chunk vectors, so the datasets may have been built
with another base model than `--model` (a base-model ablation needs no rebuild).

    python -m benchmark.finetune_ceiling --lora DIR --dataset HELD_OUT --replay TRAIN_DATASET
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from benchmark.adapter_ablation import repo_tasks, summarise
from benchmark.methods import EvalConfig, MethodResult, run_model
from benchmark.runners import names_target
from benchmark.speed.scaffold import SpeedRun, run_speed_benchmark
from benchmark.spread import delta_cosine
from repo2lora.adapters.peft_dir import load_peft_adapter
from repo2lora.adapters.weights import LoraWeights
from repo2lora.models.loading import describe_base_model, load_base_model
from repo2lora.tasks.dataset_build import built_repo_dirs, load_built_repo
from repo2lora.training.baselines import (
    LoraTrainConfig,
    check_baseline_model,
    load_lora_baseline,
    source_examples,
    train_lora,
)
from repo2lora.training.data import TaskExample, with_target_end
from repo2lora.training.placement import single_device
from repo_encoder.errors import UserError


def replay_examples(
    dataset: Path, n: int, seed: int, held_out: frozenset[str] | set[str] = frozenset()
) -> list[TaskExample]:
    """`n` static tasks of a training dataset (a seeded sample), with their closing tokens,
    as the shared LoRA was trained; a UserError when it holds a `held_out` repository
    (replaying its tasks would train on the targets scored)."""
    repos = [load_built_repo(d) for d in built_repo_dirs(dataset)]
    both = sorted(held_out & {r.summary["name"] for r in repos})
    if both:
        raise UserError(f"{dataset} holds held-out repositories: {both}; replay another dataset")
    pool = [
        TaskExample(r.summary["name"], t["prefix"], t["target"])
        for r in repos
        for t in r.tasks
        if t.get("kind") == "static"
    ]
    if not pool:
        raise UserError(f"{dataset}: no static tasks to replay")
    rng = random.Random(seed)
    return with_target_end(rng.sample(pool, min(n, len(pool))))


def step_counts(text: str) -> list[int]:
    """`--steps` "15,45" -> [15, 45]; a UserError for anything but positive integers."""
    try:
        steps = sorted({int(s) for s in text.split(",")})
    except ValueError:
        steps = []
    if not steps or steps[0] < 1:
        raise UserError(f"--steps {text!r}: give positive step counts, comma-separated (15,45)")
    return steps


def ceiling(args: argparse.Namespace, log: Any) -> dict[str, Any]:
    steps = step_counts(args.steps)  # the options first: a bad one costs no loading
    info = describe_base_model(args.model)
    base = load_base_model(info)
    single_device(base)  # the GPU when there is one
    card = check_baseline_model(args.lora, info.model_key)
    # tasks and source texts only (no chunk vectors): any base model, any built dataset
    held = [load_built_repo(d) for d in built_repo_dirs(args.dataset)]
    trained_on = {str(e.get("name")) for e in card.get("data_manifest", [])}
    overlap = sorted(r.summary["name"] for r in held if r.summary["name"] in trained_on)
    if overlap:
        raise UserError(f"{args.dataset} holds repositories the LoRA trained on: {overlap}")
    repos = [r for r in held if repo_tasks(r, args.tasks, args.seed)]
    repos = repos[: args.max_repos or None]  # the first in name order (longer fine-tunes)
    if len(repos) < 2:
        raise UserError(
            f"{args.dataset}: fewer than two repositories with static tasks (the control "
            "fine-tunes on another one's source)"
        )
    held_names = {r.summary["name"] for r in held}
    replay = replay_examples(args.replay, args.replay_tasks, args.seed, held_names)
    variants = ["base", "shared"] + [f"{who}@{s}" for s in steps for who in ("own", "other")]
    results: dict[str, list[MethodResult]] = {v: [] for v in variants}
    is_name: list[bool] = []
    cfg = EvalConfig()
    shared = load_lora_baseline(base, args.lora)
    rng = random.Random(args.seed)
    own_adapters: list[LoraWeights] = []
    piece_tokens = LoraTrainConfig().source_chunk_tokens  # source cut as the baselines cut it
    pieces: dict[str, int] = {}  # per repository: it is the own source once, the other once
    for i, r in enumerate(repos):
        tasks = repo_tasks(r, args.tasks, args.seed)
        prompts = [t["prefix"] for t in tasks]
        targets = [t["target"] for t in tasks]
        defined = r.names()
        is_name += [bool(names_target(t, defined)) for t in targets]
        with torch.no_grad():
            results["base"] += run_model(base.model, base.tokenizer, prompts, targets, cfg)
            results["shared"] += run_model(shared, base.tokenizer, prompts, targets, cfg)
        other = repos[(i + 1) % len(repos)]
        for who, source in (("own", r), ("other", other)):
            texts = source.texts()
            name = source.summary["name"]
            if name not in pieces:
                pieces[name] = len(source_examples("", texts, base.tokenizer, piece_tokens))
            lcfg = LoraTrainConfig(
                steps=steps[-1],
                batch_size=args.batch_size,
                lr=args.lr,
                seed=args.seed,
                init_from=str(args.lora),
                rank=int(card["config"]["rank"]),  # the shared LoRA's own shape
                target_modules=tuple(card["config"]["target_modules"]),
            )
            # half source, half replayed tasks: the source's pieces are not diluted
            mixed = rng.sample(replay, min(len(replay), max(pieces[name], args.batch_size)))

            def score(
                step: int,
                _loss: float,
                model: Any,
                who: str = who,
                prompts: list[str] = prompts,
                targets: list[str] = targets,
            ) -> None:
                if step in steps:  # one run, scored where each step count ends
                    model.eval()
                    with torch.no_grad():
                        results[f"{who}@{step}"] += run_model(
                            model, base.tokenizer, prompts, targets, cfg
                        )
                    model.train()

            model, _, _ = train_lora(base, mixed, lcfg, source_texts=texts, on_step=score)
            if who == "own":  # the adapter at the last step, for the spread
                with tempfile.TemporaryDirectory() as tmp:
                    model.save_pretrained(tmp)
                    own_adapters.append(load_peft_adapter(tmp))
        log(f"{i + 1}/{len(repos)} {r.summary['name']}")
    names_at = [i for i, x in enumerate(is_name) if x]
    return {
        "lora": str(args.lora),
        "dataset": str(args.dataset),
        "replay": str(args.replay),
        "model": info.description,
        "repositories": len(repos),
        "tasks_per_repo": args.tasks,
        "fine_tune": {
            "steps": steps,
            "lr": args.lr,
            "batch_size": args.batch_size,
            "replay_tasks": len(replay),
        },
        "name_tasks": len(names_at),
        # mean pairwise cosine of the own fine-tunes' weight updates (scaling * B A), as
        # `bench` measures a generator's adapters against #15's 0.8
        f"own@{steps[-1]}_adapter_spread": round(delta_cosine(own_adapters), 4),
        "variants": {
            v: {
                "all": summarise(rs),
                "names": summarise([rs[i] for i in names_at]),
            }
            for v, rs in results.items()
        },
    }


def main(argv: list[str] | None = None) -> int:
    def add_options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--lora", required=True, type=Path, help="a shared-LoRA directory")
        parser.add_argument(
            "--dataset", required=True, type=Path, help="a built dataset (held out)"
        )
        parser.add_argument(
            "--replay", required=True, type=Path, help="a built training dataset to replay"
        )
        parser.add_argument("--model", help="base model (default: the embedded default)")
        parser.add_argument("--tasks", type=int, default=16, help="static tasks per repository")
        parser.add_argument(
            "--steps", default="15,45", help="fine-tune steps scored, comma-separated"
        )
        parser.add_argument("--lr", type=float, default=1e-3)
        parser.add_argument("--batch-size", type=int, default=8)
        parser.add_argument("--replay-tasks", type=int, default=4000)
        parser.add_argument(
            "--max-repos", type=int, default=0, help="at most N repositories (0: all)"
        )
        parser.add_argument("--seed", type=int, default=0)

    def measure(run: SpeedRun) -> dict[str, Any]:
        return ceiling(run.args, run.log)

    return run_speed_benchmark(
        "finetune_ceiling",
        __doc__,
        add_options,
        measure,
        argv,
        prog="python -m benchmark.finetune_ceiling",
    )


if __name__ == "__main__":
    sys.exit(main())
