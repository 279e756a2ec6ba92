"""Scoring given checkpoints (`bench --generator-dir`): the checkpoints loaded in place of
training (each one's generator kind read from its card; `default` is the shipped static and
evolving pair), the methods such a run scores, and the contamination check of its test
repositories against the base model's and the checkpoints' training manifests."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import git
from safetensors import safe_open

from benchmark import contamination as c
from benchmark import methods as m
from benchmark.config import SYNTHETIC_SUITES, BenchConfig, check_config
from benchmark.prepare import RepoSource, resolve_sources
from benchmark.train import Trained
from repo2lora.hypernet.checkpoint import card_generator, load_generator
from repo2lora.models import embedded
from repo2lora.models.loading import LoadedModel
from repo2lora.training.baselines import BASELINE_CARD, check_baseline_model
from repo_encoder.errors import UserError

DEFAULT = "default"
# baselines that need no training: they run beside the checkpoints when --methods names them
UNTRAINED_BASELINES = (m.BASE, m.RAG)
_NEEDS_TRAINING = (m.SHARED_LORA, m.PER_REPO_LORA)


def checkpoint_dirs(specs: tuple[str, ...]) -> list[Path]:
    """The checkpoint directories `--generator-dir` names (`default`: the shipped pair)."""
    out: list[Path] = []
    for spec in specs:
        if spec == DEFAULT:
            out += [embedded.DEFAULT_DIR / rel for rel in embedded.HYPERNETS.values()]
        else:
            out.append(Path(spec).expanduser().resolve())
    return out


def load_checkpoints(base: LoadedModel, dirs: list[Path]) -> tuple[Trained, list[str]]:
    """Each checkpoint as the model its method runs (one per generator kind), with no
    training: `Trained.constant` and `train_targets` stay empty."""
    trained = Trained()
    names: list[str] = []
    for d in dirs:
        if (d / BASELINE_CARD).is_file():  # the shared-LoRA baseline (`train --generator
            names.append(_shared_lora(base, d, trained))  # shared-lora`): both tracks
            continue
        kind = card_generator(str(d))
        if kind in names:
            raise UserError(
                f"two {kind} checkpoints given ({d}); score one checkpoint of each kind per run"
            )
        net = load_generator(str(d), base.info).net
        net.eval()
        name = net.generator_name
        trained.nets[name] = net  # each kind is the method of its name
        names.append(name)
        trained.costs[name] = {
            "checkpoint": str(d),
            "generator": name,
            "params": net.describe()["params"],
            "trained_here": False,
        }
    return trained, names


def _shared_lora(base: LoadedModel, d: Path, trained: Trained) -> str:
    """A saved shared-LoRA baseline as the `shared-lora` method of both tracks; a UserError
    when it adapts another base model or a second one is given."""
    if trained.shared:
        raise UserError(f"two shared-lora baselines given ({d}); score one per run")
    card = check_baseline_model(d, base.info.model_key, ": pass its --model")
    trained.shared.update({"static": d, "evo": d})
    with safe_open(str(d / "adapter_model.safetensors"), "pt") as f:
        params = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118
    trained.costs[m.SHARED_LORA] = {
        "checkpoint": str(d),
        "generator": m.SHARED_LORA,
        "params": params,
        "steps": card.get("result", {}).get("steps"),
        "trained_here": False,
    }
    return m.SHARED_LORA


def scoring_config(cfg: BenchConfig, generators: list[str]) -> tuple[BenchConfig, list[str]]:
    """`cfg` with the methods a scoring run runs: the checkpoints' and the baselines that need
    no training that `--methods` names (none when it names all); notes on what is left out."""
    asked = set(cfg.methods) if cfg.methods != m.ALL_METHODS else set()
    trainable = sorted(asked & set(_NEEDS_TRAINING) - set(generators))
    if trainable:
        raise UserError(
            f"{', '.join(trainable)} need training; with --generator-dir only "
            f"{', '.join(UNTRAINED_BASELINES)} run beside the checkpoints"
        )
    notes = []
    if m.CONSTANT in asked:
        notes.append(
            f"{m.CONSTANT}: skipped (it predicts the training split's most frequent target, and "
            "a checkpoint does not record its training targets)"
        )
    methods = tuple(generators) + tuple(x for x in UNTRAINED_BASELINES if x in asked)
    return dataclasses.replace(cfg, methods=methods), notes


def scoring_sources(cfg: BenchConfig, out: Path) -> list[RepoSource]:
    """The repositories a scoring run scores, resolved without writing into `out` for local
    paths (a synthetic suite is generated there first, as `resolve_sources` does)."""
    synthetic = len(cfg.suite) == 1 and cfg.suite[0] in SYNTHETIC_SUITES
    if synthetic:
        check_config(out, cfg)
    return resolve_sources(cfg, out)


def check_contamination(
    sources: list[RepoSource], base: LoadedModel, dirs: list[Path], allow: bool
) -> tuple[dict[str, list[str]], list[str]]:
    """Every test repository against the base model's and the checkpoints' training
    manifests; refused (UserError) when contaminated unless `allow`. Returns the collisions
    (per repository, one line each) and the manifests read."""
    manifests = c.base_model_manifests(base.info.model_dir)
    for d in dirs:
        manifests += c.checkpoint_manifests(d)
    unique = list({mf.source: mf for mf in manifests}.values())
    repos = []
    for s in sources:
        try:
            repos.append(c.repo_identity(s.label, s.path))
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            continue  # not a repository: preparing it says so in a skip line
    found = c.screen(repos, unique, allow)
    return {k: [x.line() for x in v] for k, v in found.items()}, [mf.source for mf in unique]


def mark_report(
    report: dict[str, Any], found: dict[str, list[str]], manifests: list[str]
) -> dict[str, Any]:
    """The report of a scoring run, with its contamination check and marks."""
    report["contamination"] = {"manifests": manifests, "contaminated": found}
    for r in (*report["repos"], *report["records"]):
        r["contaminated"] = r["repo"] in found
    return report
