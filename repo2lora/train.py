"""`repo2lora train` as one step: which `--init-from` checkpoints fit, which repositories it
trains on (a synthetic suite generated on request), their training data, and which trainer a
generator kind goes to (`TRAINERS`, keyed by the kind's `trainer` capability)."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from repo2lora.atomic import write_text_atomic
from repo2lora.hypernet.checkpoint import KINDS, card_generator
from repo2lora.models.loading import LoadedModel, describe_base_model, load_base_model
from repo2lora.tasks.synthetic import generate_suite
from repo2lora.tasks.training_data import (
    TrainingData,
    build_training_data,
    training_data_from_dataset,
)
from repo2lora.training.data import TaskExample
from repo2lora.training.dnd_trainer import train_dnd
from repo2lora.training.hypernet_trainer import train_hypernet
from repo2lora.training.loop import TrainResult
from repo2lora.training.placement import encoding_on_training_device
from repo2lora.training.shared import TrainConfig
from repo2lora.training.shine_trainer import repo_chunk_texts, train_shine
from repo_encoder.errors import UserError


def check_init_from(generator: str, init_from: str | None) -> None:
    """`--init-from` starts an evolving generator from a trained static one (a names one from
    an evolving one too), or a static one from a static one (training it further): a UserError
    for any other pairing, before anything is written."""
    if init_from and not (KINDS[generator].stateful or generator == "code2lora-static"):
        raise UserError(
            "--init-from starts a code2lora hypernetwork from a static one: "
            "add --generator code2lora-static, code2lora-evo or code2lora-names"
        )
    if not init_from:
        return
    found = card_generator(init_from)
    starts = ["code2lora-static"] + (["code2lora-evo"] if generator == "code2lora-names" else [])
    if found not in starts:
        holds = f"a {found} generator" if found else "no hypernetwork checkpoint"
        raise UserError(
            f"{init_from} holds {holds}; --init-from needs a {' or '.join(starts)} checkpoint"
        )


def check_baseline_init(
    init_from: str, model_key: str, rank: int, target_modules: Sequence[str]
) -> None:
    """`--init-from` for the shared-lora baseline: a directory it wrote (its card and adapter)
    of the same base model and of the shape asked for (`rank`, `target_modules`: training goes
    on from its A and B), or a UserError saying what is there instead."""
    from repo2lora.training.baselines import BASELINE_CARD, check_baseline_model

    d = Path(init_from)
    if not (d / BASELINE_CARD).is_file() or not (d / "adapter_model.safetensors").is_file():
        raise UserError(
            f"{init_from} holds no shared-lora baseline ({BASELINE_CARD} and its adapter); "
            "--init-from for shared-lora needs a directory `train --generator shared-lora` wrote"
        )
    config = check_baseline_model(d, model_key).get("config", {})
    saved = (int(config.get("rank", rank)), tuple(config.get("target_modules", target_modules)))
    if saved != (rank, tuple(target_modules)):
        raise UserError(
            f"{init_from} is a rank-{saved[0]} LoRA on {','.join(saved[1])}, not rank {rank} on "
            f"{','.join(target_modules)}; to go on training it, pass --rank {saved[0]} "
            f"--target-modules {','.join(saved[1])}"
        )


def training_repositories(
    repos: Sequence[str],
    out: str | Path,
    synthetic: int,
    commits: int,
    seed: int,
    dataset: str | None = None,
) -> list[Path]:
    """The repositories to train on: `repos`, plus a synthetic suite of `synthetic`
    repositories generated once into `out/synthetic-suite` (kept for a resumed run)."""
    paths = [Path(p) for p in repos]
    if synthetic:
        suite_dir = Path(out) / "synthetic-suite"
        if not (suite_dir / "done").exists():
            generate_suite(suite_dir, synthetic, commits, seed)
            (suite_dir / "done").write_text("ok\n")
        paths += sorted(p for p in suite_dir.iterdir() if p.is_dir())
    if dataset is not None and paths:
        raise UserError("--dataset brings its own repositories: drop --repos and --synthetic")
    if not paths and dataset is None:
        raise UserError(
            "no training repositories: pass --repos PATH..., --synthetic N or --dataset DIR"
        )
    return paths


def training_inputs(
    paths: list[Path],
    model: str | None,
    generator: str,
    seed: int,
    dataset: str | Path | None = None,
    vectors: bool = True,
) -> tuple[LoadedModel, TrainingData]:
    """The base model and the training data (their walks too, for a generator that follows
    history): the repositories', or a built dataset's (`dataset`, encoded by the same base
    model, unless `vectors` is False: the shared LoRA reads no chunk vectors); a UserError when
    they hold no tasks."""
    kind = KINDS[generator]
    if dataset is not None and kind.reads_texts:
        raise UserError(
            f"--dataset holds chunk vectors and names, not the text {generator} reads: "
            "pass --repos instead"
        )
    info = describe_base_model(model)
    if dataset is not None:
        # a names generator trains on the snapshots (static and line tasks) with their names,
        # as the benchmark trains it
        evolving = kind.stateful and not kind.reads_names
        data = training_data_from_dataset(
            dataset, info.model_key, evolving, seed=seed, names=kind.reads_names, vectors=vectors
        )
        base = load_base_model(info)
    else:
        base = load_base_model(info)
        with encoding_on_training_device(base):  # the main process encodes; others read its cache
            data = build_training_data(paths, base, kind.stateful, seed=seed)
    if not data.train:
        raise UserError("the repositories hold no assertion tasks to train on (no test files?)")
    return base, data


Trainer = Callable[..., TrainResult]


def _train_code2lora(
    base: LoadedModel, data: TrainingData, paths: list[Path], out: str, cfg: TrainConfig, **kw: Any
) -> TrainResult:
    return train_hypernet(base, data.encodings, data.train, out, cfg, **kw)


def _train_shine(
    base: LoadedModel, data: TrainingData, paths: list[Path], out: str, cfg: TrainConfig, **kw: Any
) -> TrainResult:
    texts = {p.name: repo_chunk_texts(p) for p in paths}
    return train_shine(base, texts, data.train, out, cfg, **kw)


def _train_dnd(
    base: LoadedModel, data: TrainingData, paths: list[Path], out: str, cfg: TrainConfig, **kw: Any
) -> TrainResult:
    return train_dnd(base, data.encodings, data.train, out, cfg, **kw)


# a generator kind's `trainer` -> the function that trains it
TRAINERS: dict[str, Trainer] = {
    "code2lora": _train_code2lora,
    "shine": _train_shine,
    "dnd": _train_dnd,
}


def train_generator(
    base: LoadedModel,
    data: TrainingData,
    paths: list[Path],
    out: str,
    cfg: TrainConfig,
    **common: Any,
) -> TrainResult:
    """Train the generator `cfg.generator` names with its kind's trainer."""
    return TRAINERS[KINDS[cfg.generator].trainer](base, data, paths, out, cfg, **common)


def eval_sample(examples: list[TaskExample], limit: int, seed: int) -> list[TaskExample]:
    """At most `limit` of `examples` (all when `limit` is 0), a seeded sample in their order:
    a training run's held-out evaluation stays minutes on a 100-repository dataset."""
    if limit <= 0 or len(examples) <= limit:
        return examples
    keep = sorted(random.Random(seed).sample(range(len(examples)), limit))
    return [examples[i] for i in keep]


SHARED_LORA = "shared-lora"  # `--generator` value of the plain-LoRA baseline (not a generator)


def train_shared_lora(
    base: LoadedModel,
    data: TrainingData,
    out: str | Path,
    cfg: TrainConfig,
    card: dict[str, Any],
    on_step: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """The shared-LoRA baseline: one plain peft LoRA trained on every training task (the same
    tasks a static hypernetwork trains on), saved with its card (the base model it adapts, and
    `card`'s training repositories) so that `bench --generator-dir` scores it beside the
    hypernetworks. Returns the card."""
    from repo2lora.training.baselines import (
        BASELINE_CARD,
        LoraTrainConfig,
        train_lora_baseline,
    )
    from repo2lora.training.data import with_target_end
    from repo2lora.training.placement import single_device

    train = with_target_end(data.train) if cfg.target_end else data.train
    single_device(base)  # the GPU when there is one
    lcfg = LoraTrainConfig(
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        rank=cfg.rank,
        target_modules=cfg.target_modules,
        seed=cfg.seed,
        init_from=cfg.init_from,
    )
    if cfg.init_from is not None:  # trained on at the scaled rate, as a hypernetwork would be
        lcfg = replace(lcfg, lr=cfg.lr * cfg.init_lr_scale)
    train_lora_baseline(
        base,
        train,
        out,
        lcfg,
        on_step=None if on_step is None else lambda step, loss, _model: on_step(step, loss),
    )
    path = Path(out) / BASELINE_CARD
    doc = json.loads(path.read_text())
    doc.update(
        {
            "generator": SHARED_LORA,
            "base_model": {"spec": base.info.spec, "model_key": base.info.model_key},
            "target_end": bool(cfg.target_end),
            **card,
        }
    )
    write_text_atomic(path, json.dumps(doc, indent=2) + "\n")
    return {**doc["result"], "train_examples": len(data.train)}
