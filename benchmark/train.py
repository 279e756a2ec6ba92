"""Training orchestration: what the requested methods need, trained on the training split with
the library's own trainers (the hypernetworks, SHINE, DnD and the peft LoRA baselines), each
cached in the output directory by its trainer's checkpoints and reused when its config is the
same."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from benchmark import methods as m
from benchmark.config import BenchConfig, as_json
from benchmark.prepare import PreparedRepo
from repo2lora.hypernet.checkpoint import load_generator
from repo2lora.hypernet.protocol import Generator
from repo2lora.hypernet.shine import chunk_texts
from repo2lora.models.loading import LoadedModel
from repo2lora.progress import ProgressFn
from repo2lora.tasks.datasets import in_repo_split
from repo2lora.tasks.miner import AssertionTask
from repo2lora.training.baselines import BASELINE_CARD, LoraTrainConfig, train_lora_baseline
from repo2lora.training.data import RepoEncoding, TaskExample
from repo2lora.training.dnd_trainer import CollectConfig, train_dnd
from repo2lora.training.hypernet_trainer import train_hypernet
from repo2lora.training.loop import StepLog, TrainResult
from repo2lora.training.shared import TrainConfig
from repo2lora.training.shine_trainer import train_shine


@dataclass
class Trained:
    """The models trained on the training split, and what training them cost."""

    # each trained generator under its method's name (= its kind: code2lora-static, ...)
    nets: dict[str, Generator] = field(default_factory=dict)
    shared: dict[str, Path] = field(default_factory=dict)  # track -> adapter dir
    constant: dict[str, str] = field(default_factory=dict)  # track -> most frequent target
    train_targets: dict[str, set[str]] = field(default_factory=dict)
    costs: dict[str, Any] = field(default_factory=dict)

    @property
    def static_net(self) -> Generator | None:
        return self.nets.get(m.STATIC)

    @property
    def evo_net(self) -> Generator | None:
        return self.nets.get(m.EVO)

    @property
    def names_net(self) -> Generator | None:
        return self.nets.get(m.NAMES)

    @property
    def snapshot_nets(self) -> dict[str, Generator]:
        """The generators without a stored vector state (SHINE, DnD), by method name."""
        return {k: v for k, v in self.nets.items() if not v.stores_state}


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
        finished = training.get("step") == tcfg.steps and training.get("config") == as_json(
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
) -> tuple[Generator, dict[str, Any]]:
    return _train_generator(
        base,
        examples,
        out_dir,
        tcfg,
        progress,
        lambda on_step: train_hypernet(base, encodings, examples, out_dir, tcfg, on_step=on_step),
    )


def train_lora(
    base: LoadedModel,
    examples: list[TaskExample],
    out_dir: Path,
    lcfg: LoraTrainConfig,
    source_texts: list[str] | None = None,
) -> dict[str, Any]:
    card = out_dir / BASELINE_CARD
    if card.is_file():
        saved = json.loads(card.read_text())
        if saved.get("config") == as_json(asdict(lcfg)):
            return {**saved["result"], "cached": True}
    res = train_lora_baseline(base, examples, out_dir, lcfg, source_texts=source_texts)
    return asdict(res)


def lora_config(cfg: BenchConfig, steps: int) -> LoraTrainConfig:
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
        tbptt_window=cfg.tbptt_window,  # recorded in the card with the rest of the config
        checkpoint_every=max(1, steps // 4),
        eval_every=steps + 1,
        seed=cfg.seed,
        rank=cfg.rank,
        target_modules=cfg.target_modules,
    )


def examples_of(tasks: list[AssertionTask], repo: str, step: int = -1) -> list[TaskExample]:
    return [TaskExample(repo, t.prefix, t.target, step, t.task_id) for t in tasks]


def is_train(task: AssertionTask, cfg: BenchConfig) -> bool:
    return in_repo_split(task, cfg.in_repo_test_share, cfg.seed) == "train"


def static_training_examples(repos: list[PreparedRepo], cfg: BenchConfig) -> list[TaskExample]:
    """The in-repo training halves of the training repositories' HEAD tasks."""
    out: list[TaskExample] = []
    for r in repos:
        if r.static is not None:
            out += examples_of([t for t in r.static.tasks if is_train(t, cfg)], r.label)
    return out


def evo_training_examples(repos: list[PreparedRepo], cfg: BenchConfig) -> list[TaskExample]:
    """The in-repo training halves of the walk's tasks: the start commit's (step 0, for h_0)
    and those each commit adds (step i, for h_i)."""
    out: list[TaskExample] = []
    for r in repos:
        if r.evo is None:
            continue
        out += examples_of([t for t in r.evo.start_tasks if is_train(t, cfg)], r.label, step=0)
        out += [
            TaskExample(r.label, t.prefix, t.target, i, t.task_id)
            for i, t in r.evo.data.evo_tasks
            if is_train(t, cfg)
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
            trained.nets[m.STATIC], trained.costs[m.STATIC] = net, cost
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
            trained.nets[m.EVO], trained.costs[m.EVO] = net, cost
        else:
            notes.append(f"{m.EVO}: no training tasks in the training repositories' histories")
    if m.NAMES in wants and "static" in cfg.tracks:
        if static_ex:
            trained.nets[m.NAMES], trained.costs[m.NAMES] = _train_names(
                base, train_repos, static_ex, cfg, out, static_dir, trained, progress
            )
        else:
            notes.append(f"{m.NAMES}: no training tasks, not trained")
    for name in (m.SHINE, m.DND):
        if name not in wants or "static" not in cfg.tracks:
            continue
        if not static_ex:
            notes.append(f"{name}: no training tasks, not trained")
            continue
        gen, trained.costs[name] = _train_snapshot_generator(
            name, base, train_repos, static_enc, static_ex, cfg, out, progress
        )
        trained.nets[name] = gen
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
            trained.costs[f"{m.SHARED_LORA}/{track}"] = train_lora(
                base, examples, d, lora_config(cfg, cfg.lora_steps)
            )
            trained.shared[track] = d
            progress(stage, 1, 1)
    return trained, notes


def _train_names(
    base: LoadedModel,
    train_repos: list[PreparedRepo],
    examples: list[TaskExample],
    cfg: BenchConfig,
    out: Path,
    static_dir: Path,
    trained: Trained,
    progress: ProgressFn,
) -> tuple[Generator, dict[str, Any]]:
    """Code2LoRA-Names on the static track: the snapshots' vectors and names, started from the
    trained static hypernetwork when there is one (as the evolving one is, `evo_init`), so
    that the row differs from code2lora-static by the names memory."""
    encodings = {
        r.label: RepoEncoding(
            r.label, r.static.vectors, commits=[r.static.commit], names=[r.static.names]
        )
        for r in train_repos
        if r.static is not None
    }
    tcfg = _hypernet_config(cfg, m.NAMES, cfg.hypernet_steps)
    if cfg.evo_init != "scratch" and trained.static_net is not None:
        tcfg = replace(tcfg, init_from=str(static_dir), init_lr_scale=cfg.evo_init_lr_scale)
    return _train_hypernet(
        base, encodings, examples, out / "models" / "static" / m.NAMES, tcfg, progress
    )


def _train_snapshot_generator(
    name: str,
    base: LoadedModel,
    train_repos: list[PreparedRepo],
    encodings: dict[str, RepoEncoding],
    examples: list[TaskExample],
    cfg: BenchConfig,
    out: Path,
    progress: ProgressFn,
) -> tuple[Generator, dict[str, Any]]:
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
            lora=lora_config(cfg, cfg.dnd_collect_steps),
            save_every=max(1, cfg.dnd_collect_steps // keep),
            keep=keep,
        )
        run = functools.partial(train_dnd, base, encodings, examples, d, tcfg, collect=collect)
    return _train_generator(base, examples, d, tcfg, progress, lambda on_step: run(on_step=on_step))
