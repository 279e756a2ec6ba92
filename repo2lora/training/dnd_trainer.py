"""Trains the DnD-style generator: first a collection of LoRA checkpoints, saved along a plain
peft LoRA's training on each repository's examples (the per-repository baseline, same init for
every repository); then the hyper-convolutional decoder, by masked MSE between its tokens for a
random batch of the repository's prompt vectors and a checkpoint of that repository.

The decoder loop runs under `accelerate launch` like the other trainers; its schedule and each
sample's prompt draw are pure functions of (seed, step), so a resumed run repeats exactly."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from repo2lora.adapters.defaults import default_alpha
from repo2lora.adapters.functional import BatchedLora
from repo2lora.adapters.peft_dir import peft_state_dict
from repo2lora.adapters.targets import (
    LoraTarget,
    choose_target_modules,
    find_lora_targets,
    uses_fan_in_fan_out,
)
from repo2lora.adapters.weights import LoraWeights
from repo2lora.hypernet.checkpoint import build_hypernet
from repo2lora.hypernet.dnd import DndConfig, DndGenerator, select_prompts
from repo2lora.models.loading import LoadedModel
from repo2lora.training.baselines import LoraTrainConfig, train_lora
from repo2lora.training.data import RepoEncoding, TaskExample
from repo2lora.training.loop import StepLog, StepOutcome, TrainingRun, TrainResult
from repo2lora.training.placement import make_accelerator
from repo2lora.training.shared import TrainConfig, evaluate_adapters, static_schedule

COLLECTION = "collection.json"

# --- the checkpoint collection ---------------------------------------------------------------


@dataclass(frozen=True)
class CollectConfig:
    """Per-repository LoRA training whose checkpoints DnD learns to produce: `keep` of them,
    `save_every` steps apart, ending at the last step (the converged end of training)."""

    lora: LoraTrainConfig = field(default_factory=lambda: LoraTrainConfig(steps=120))
    save_every: int = 10
    keep: int = 6


@dataclass
class LoraCheckpoint:
    repo: str
    step: int
    loss: float
    weights: LoraWeights


def _lora_weights(peft_model: Any, targets: list[LoraTarget], rank: int) -> LoraWeights:
    inner = peft_model.base_model.model
    tensors = {}
    for t in targets:
        module = inner.get_submodule(t.path)
        a = module.lora_A["default"].weight.detach().float().clone()
        b = module.lora_B["default"].weight.detach().float().clone()
        tensors[t.path] = (a, b)
    types = tuple(sorted({t.module_type for t in targets}))
    return LoraWeights(rank, 2 * rank, types, tensors, uses_fan_in_fan_out(targets))


def train_collecting(
    base: LoadedModel,
    examples: list[TaskExample],
    cfg: CollectConfig,
    source_texts: list[str] | None = None,
) -> list[tuple[int, float, LoraWeights]]:
    """Train one peft LoRA (as `baselines.train_lora_baseline` does: a fresh copy of the base
    weights, the same init seed for every call) and return (step, loss, weights) at the saved
    steps."""
    lc = cfg.lora
    targets = find_lora_targets(base.info.config, lc.target_modules)
    save_at = {lc.steps - i * cfg.save_every for i in range(cfg.keep)} - {0}
    saved: list[tuple[int, float, LoraWeights]] = []

    def keep(step: int, loss: float, model: Any) -> None:
        if step in save_at:
            saved.append((step, loss, _lora_weights(model, targets, lc.rank)))

    train_lora(base, examples, lc, source_texts, on_step=keep)
    return saved


def _weights_from_file(path: Path, targets: list[LoraTarget], rank: int) -> LoraWeights:
    sd = load_file(str(path))
    tensors = {
        t.path: (
            sd[f"base_model.model.{t.path}.lora_A.weight"],
            sd[f"base_model.model.{t.path}.lora_B.weight"],
        )
        for t in targets
    }
    types = tuple(sorted({t.module_type for t in targets}))
    return LoraWeights(rank, 2 * rank, types, tensors, uses_fan_in_fan_out(targets))


def collect_lora_checkpoints(
    base: LoadedModel,
    examples: list[TaskExample],
    out_dir: str | Path,
    cfg: CollectConfig = CollectConfig(),
    source_texts: dict[str, list[str]] | None = None,
) -> list[LoraCheckpoint]:
    """One LoRA per repository of `examples`, its checkpoints saved under `out_dir`
    (`<repo>/step-NNNNNNN.safetensors`, PEFT key names, and `collection.json`). A repository
    already collected with the same settings is read back, not retrained (resumable)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / COLLECTION
    settings = {"lora": asdict(cfg.lora), "save_every": cfg.save_every, "keep": cfg.keep}
    manifest: dict[str, Any] = {"settings": settings, "repos": {}}
    if manifest_path.is_file():
        old = json.loads(manifest_path.read_text())
        if old.get("settings") == json.loads(json.dumps(settings)):
            manifest = old
    targets = find_lora_targets(base.info.config, cfg.lora.target_modules)
    by_repo: dict[str, list[TaskExample]] = {}
    for ex in examples:
        by_repo.setdefault(ex.repo, []).append(ex)
    found: list[LoraCheckpoint] = []
    for repo in sorted(by_repo):
        entry = manifest["repos"].get(repo)
        if entry is None:
            t = time.perf_counter()
            saved = train_collecting(base, by_repo[repo], cfg, (source_texts or {}).get(repo))
            (out / repo).mkdir(exist_ok=True)
            entry = {"seconds": time.perf_counter() - t, "checkpoints": []}
            for step, loss, w in saved:
                name = f"{repo}/step-{step:07d}.safetensors"
                save_file(peft_state_dict(w), str(out / name), metadata={"format": "pt"})
                entry["checkpoints"].append({"step": step, "loss": loss, "file": name})
            manifest["repos"][repo] = entry
            tmp = manifest_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
            tmp.replace(manifest_path)
        for c in entry["checkpoints"]:
            w = _weights_from_file(out / c["file"], targets, cfg.lora.rank)
            found.append(LoraCheckpoint(repo, int(c["step"]), float(c["loss"]), w))
    return found


# --- decoder training ------------------------------------------------------------------------


def default_dnd_config(base: LoadedModel, cfg: TrainConfig) -> DndConfig:
    return DndConfig(
        input_dim=int(base.info.config.hidden_size),
        rank=cfg.rank,
        alpha=default_alpha(cfg.rank),
        target_modules=cfg.target_modules,
        seed=cfg.seed,
    )


def prompt_generator(seed: int, step: int, index: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step * 1_009 + index)


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the unpadded token positions ([b, T, D], mask [T, D])."""
    m = mask.to(pred.dtype).expand_as(pred)
    return ((pred - target) ** 2 * m).sum() / m.sum().clamp(min=1.0)


class DndLoss(nn.Module):
    """Masked MSE of the generator's tokens for prompt batches against normalized checkpoint
    tokens (a module, so DDP sees one forward per step)."""

    def __init__(self, net: DndGenerator) -> None:
        super().__init__()
        self.net = net

    def forward(self, prompts: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return masked_mse(self.net.predict_tokens(prompts), target, self.net.token_mask)


@torch.no_grad()
def reconstruction(
    net: DndGenerator, collection: list[LoraCheckpoint], encodings: dict[str, RepoEncoding]
) -> dict[str, float]:
    """How well the generator reproduces its training checkpoints from each repository's
    generation-time prompts, in normalized units: `recon_mse`, against `checkpoint_variance`
    (the MSE of predicting the collection's mean checkpoint for every one)."""
    device = net.token_mean.device
    tokens = torch.stack([net.lora_tokens.tokens(c.weights) for c in collection]).to(device)
    target = net.normalize(tokens)
    prompts = torch.stack([net.encode(encodings[c.repo].vectors) for c in collection]).to(device)
    pred = net.predict_tokens(prompts)
    zero = torch.zeros_like(target)
    return {
        "recon_mse": float(masked_mse(pred, target, net.token_mask)),
        "checkpoint_variance": float(masked_mse(zero, target, net.token_mask)),
    }


def dnd_adapters(net: DndGenerator, encodings: dict[str, RepoEncoding]) -> dict[str, BatchedLora]:
    with torch.no_grad():
        device = net.token_mean.device
        return {r: net(net.encode(e.vectors)[None].to(device)) for r, e in encodings.items()}


def collected_adapters(
    net: DndGenerator, collection: list[LoraCheckpoint]
) -> dict[str, BatchedLora]:
    """Each repository's last collected checkpoint (the teacher DnD imitates), batched."""
    last: dict[str, LoraCheckpoint] = {}
    for c in collection:
        if c.repo not in last or c.step > last[c.repo].step:
            last[c.repo] = c
    tok = net.lora_tokens
    return {r: tok.batched(tok.tokens(c.weights)[None]) for r, c in last.items()}


def train_dnd(
    base: LoadedModel,
    encodings: dict[str, RepoEncoding],
    examples: list[TaskExample],
    out_dir: str | Path,
    cfg: TrainConfig,
    arch: DndConfig | None = None,
    collect: CollectConfig | None = None,
    eval_examples: list[TaskExample] | None = None,
    resume: bool = True,
    on_step: Callable[[StepLog], None] | None = None,
    stop_after: int | None = None,
    card: dict[str, Any] | None = None,
) -> TrainResult:
    """Collect per-repository LoRA checkpoints from `examples` (into `out_dir/lora-collection`),
    then train the decoder for `cfg.steps` steps of `cfg.batch_size` (prompt batch,
    checkpoint) pairs; write checkpoints and the final generator to `out_dir`."""
    missing = sorted({e.repo for e in examples + (eval_examples or [])} - set(encodings))
    if missing:
        raise ValueError(f"no prompt vectors for repositories {missing}")
    out = Path(out_dir)
    acc = make_accelerator(cfg.precision)
    net = build_hypernet(arch or default_dnd_config(base, cfg), base.info)
    collect = collect or CollectConfig(
        lora=LoraTrainConfig(
            steps=CollectConfig().lora.steps,
            rank=net.cfg.rank,
            target_modules=net.cfg.target_modules,
            seed=cfg.seed,
        )
    )
    collected_types = choose_target_modules(base.model, collect.lora.target_modules)
    if collect.lora.rank != net.cfg.rank or collected_types != net.cfg.target_modules:
        raise ValueError("the collected LoRAs must have the generator's rank and targets")
    t0 = time.perf_counter()
    if acc.is_main_process:
        collection = collect_lora_checkpoints(base, examples, out / "lora-collection", collect)
    acc.wait_for_everyone()
    if not acc.is_main_process:  # read back what the main process trained
        collection = collect_lora_checkpoints(base, examples, out / "lora-collection", collect)
    collect_seconds = time.perf_counter() - t0
    tokens = torch.stack([net.lora_tokens.tokens(c.weights) for c in collection])  # [n, T, D]
    net.fit_normalization(tokens)
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    manifest = json.loads((out / "lora-collection" / COLLECTION).read_text())
    arch_card = {
        "architecture": net.cfg.to_json(),
        "collection": {
            "settings": manifest["settings"],
            "checkpoints": {
                r: [c["step"] for c in e["checkpoints"]] for r, e in manifest["repos"].items()
            },
            "seconds": sum(e["seconds"] for e in manifest["repos"].values()),
        },
        **(card or {}),
    }
    run = TrainingRun(acc, net, opt, base.info, out, asdict(cfg), arch_card, resume)
    targets = net.normalize(tokens)  # [n, T, D]
    model = run.prepare(DndLoss(net))
    rank, world = acc.process_index, acc.num_processes

    def evaluate_now() -> dict[str, float]:
        unwrapped: DndGenerator = run.unwrapped()
        unwrapped.eval()
        res = reconstruction(unwrapped, collection, encodings)
        if eval_examples:
            args = (base.model, base.tokenizer, unwrapped.targets, unwrapped.scaling)
            res.update(
                evaluate_adapters(*args, dnd_adapters(unwrapped, encodings), eval_examples, cfg)
            )
            teacher = evaluate_adapters(
                *args,
                collected_adapters(unwrapped, collection),
                [e for e in eval_examples if any(c.repo == e.repo for c in collection)],
                cfg,
            )
            res["nll_collected"] = teacher.get("nll_generated", float("nan"))
            # the decoder adds its residual to the mean checkpoint: what does the mean alone do?
            mean = unwrapped.lora_tokens.batched(unwrapped.token_mean[None])
            only_mean = evaluate_adapters(*args, dict.fromkeys(encodings, mean), eval_examples, cfg)
            res["nll_mean_checkpoint"] = only_mean["nll_generated"]
        unwrapped.train()
        return res

    n_cond = net.cfg.num_prompts

    def dnd_step(step: int) -> StepOutcome:
        idx = static_schedule(len(collection), step, cfg.batch_size, cfg.seed)
        mine = list(range(len(idx)))[rank::world]
        prompts = torch.stack(
            [
                select_prompts(
                    encodings[collection[idx[j]].repo].vectors,
                    n_cond,
                    prompt_generator(cfg.seed, step, j),
                )
                for j in mine
            ]
        )
        loss = model(prompts.to(acc.device), targets[[idx[j] for j in mine]].to(acc.device))
        return StepOutcome(loss, float(loss.detach()), 0, len(mine) * world)

    t1 = time.perf_counter()
    res = run.run(
        cfg,
        dnd_step,
        evaluate=evaluate_now,
        on_step=on_step,
        stop_after=stop_after,
    )
    net.eval()
    res.eval["collect_seconds"] = collect_seconds
    res.eval["decoder_seconds"] = time.perf_counter() - t1
    res.seconds = time.perf_counter() - t0
    return res
