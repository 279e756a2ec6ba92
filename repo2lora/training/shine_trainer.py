"""Trains the SHINE-style generator end to end on the LM loss of target tokens: the frozen base
model reads each repository's chunk texts (memory tokens appended, meta-LoRA active), the
generated LoRA is applied functionally to the same frozen model for that repository's examples,
and gradients reach only the generator. Also: a repository's chunk texts, what it trains on.

Like the code2lora trainer, it runs as one CPU process by default and unchanged under
`accelerate launch` (each process takes its share of a step's examples); the schedule, and the
context each repository shows at each step, are pure functions of (seed, step), so a resumed
run repeats what an uninterrupted one would have done."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from repo2lora.adapters.defaults import default_alpha
from repo2lora.adapters.functional import BatchedLora
from repo2lora.hypernet.checkpoint import build_hypernet
from repo2lora.hypernet.shine import (
    ShineConfig,
    ShineGenerator,
    chunk_texts,
    chunk_token_ids,
    pack_context,
)
from repo2lora.models.loading import LoadedModel
from repo2lora.snapshot import SnapshotConfig
from repo2lora.training.data import TaskExample
from repo2lora.training.loop import StepLog, StepOutcome, TrainingRun, TrainResult, freeze_base
from repo2lora.training.placement import checkpoints_layers, make_accelerator
from repo2lora.training.shared import TrainConfig, evaluate_adapters, lm_loss_sum, shard_batch
from repo_encoder.chunker import chunk_files
from repo_encoder.snapshot import open_repository, read_snapshot, resolve_commit

# --- repository input ------------------------------------------------------------------------


def repo_chunk_texts(
    path: str | Path, rev: str = "HEAD", config: SnapshotConfig | None = None
) -> list[str]:
    """The chunks the encoder may see at `rev` (the snapshot's exclusion and chunker), each
    headed by its file path so the reader knows which module defines what."""
    cfg = config or SnapshotConfig()
    repo = open_repository(path)
    snap = read_snapshot(repo, resolve_commit(repo, rev), cfg.exclusion, cfg.chunker.max_file_bytes)
    return chunk_texts(chunk_files(snap.files, cfg.chunker).chunks)


def context_seed(seed: int, step: int, repo: str) -> int:
    """Which chunks a repository shows at a training step (stable across processes and runs,
    unlike Python's salted `hash`)."""
    return int(hashlib.sha256(f"{seed}:{step}:{repo}".encode()).hexdigest()[:8], 16)


def default_shine_config(base: LoadedModel, cfg: TrainConfig) -> ShineConfig:
    return ShineConfig(
        input_dim=int(base.info.config.hidden_size),
        rank=cfg.rank,
        alpha=default_alpha(cfg.rank),
        target_modules=cfg.target_modules,
        b_init_bound=cfg.b_init_bound,
        seed=cfg.seed,
    )


# --- the loss ---------------------------------------------------------------------


class ShineLoss(nn.Module):
    """The generator (registered: trained, synchronised by DDP) and the frozen base model
    (deliberately not registered: never trained, never synchronised)."""

    _base: Any

    def __init__(self, net: ShineGenerator, base_model: Any, checkpoint_layers: bool = False):
        super().__init__()
        self.net = net
        self.checkpoint_layers = checkpoint_layers
        object.__setattr__(self, "_base", base_model)

    def forward(
        self, contexts: list[list[int]], owner: torch.Tensor, batch: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """Summed target-token NLL; example i uses the adapter of context `owner[i]`."""
        per_context = self.net(self._base, contexts)  # one adapter per repository
        owner = owner.to(next(iter(per_context.values()))[0].device)
        per_example = {mt: (a[owner], b[owner]) for mt, (a, b) in per_context.items()}
        net, ck = self.net, self.checkpoint_layers
        return lm_loss_sum(self._base, net.targets, net.scaling, per_example, batch, ck)


@torch.no_grad()
def shine_adapters(
    net: ShineGenerator, base_model: Any, chunk_ids: dict[str, list[list[int]]]
) -> dict[str, BatchedLora]:
    """Each repository's adapter from its generation-time context (seed 0)."""
    return {
        repo: net(base_model, [pack_context(ids, net.cfg.context_tokens)])
        for repo, ids in chunk_ids.items()
    }


# --- training --------------------------------------------------------------------------------


def train_shine(
    base: LoadedModel,
    chunk_texts: dict[str, list[str]],
    examples: list[TaskExample],
    out_dir: str | Path,
    cfg: TrainConfig,
    arch: ShineConfig | None = None,
    eval_examples: list[TaskExample] | None = None,
    resume: bool = True,
    on_step: Callable[[StepLog], None] | None = None,
    stop_after: int | None = None,
    card: dict[str, Any] | None = None,
) -> TrainResult:
    """Train a SHINE generator on `examples` (each tied to a repository in `chunk_texts`);
    write checkpoints and the final generator to `out_dir`."""
    missing = sorted({e.repo for e in examples + (eval_examples or [])} - set(chunk_texts))
    if missing:
        raise ValueError(f"no chunk texts for repositories {missing}")
    out = Path(out_dir)
    acc = make_accelerator(cfg.precision)
    net = build_hypernet(arch or default_shine_config(base, cfg), base.info)
    net.train()
    freeze_base(acc, base.model)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    chunk_ids = {
        r: chunk_token_ids(base.tokenizer, texts, net.cfg.chunk_tokens)
        for r, texts in chunk_texts.items()
    }
    arch_card = {"architecture": net.cfg.to_json(), **(card or {})}
    run = TrainingRun(acc, net, opt, base.info, out, asdict(cfg), arch_card, resume)
    checkpointing = checkpoints_layers(cfg.gradient_checkpointing)
    model = run.prepare(ShineLoss(net, base.model, checkpointing))
    run.log_start(base.model, net, cfg, checkpointing)
    rank, world = acc.process_index, acc.num_processes

    def evaluate_now() -> dict[str, float]:
        unwrapped: ShineGenerator = run.unwrapped()
        unwrapped.eval()
        adapters = shine_adapters(unwrapped, base.model, chunk_ids)
        unwrapped.train()
        return evaluate_adapters(
            base.model,
            base.tokenizer,
            unwrapped.targets,
            unwrapped.scaling,
            adapters,
            eval_examples or [],
            cfg,
        )

    def shine_step(step: int) -> StepOutcome:
        mine, tok, global_tokens = shard_batch(base.tokenizer, examples, step, cfg, rank, world)
        repos = sorted({e.repo for e in mine})
        contexts = [
            pack_context(chunk_ids[r], net.cfg.context_tokens, context_seed(cfg.seed, step, r))
            for r in repos
        ]
        owner = torch.tensor([repos.index(e.repo) for e in mine])
        loss_sum = model(contexts, owner, tok)
        n_tok = float(tok["n_target"].sum())
        return StepOutcome.per_token(loss_sum, n_tok, global_tokens, world)

    res = run.run(
        cfg,
        shine_step,
        evaluate=evaluate_now if eval_examples else None,
        on_step=on_step,
        stop_after=stop_after,
    )
    net.eval()
    return res
