"""What every generator's trainer shares: the run's knobs (`TrainConfig`), the data schedule (a
pure function of seed and step), a process's tokenised share of a step's batch, the summed
target-token loss under a batch of generated LoRAs, and the held-out evaluation of per-repository
adapters against the base model."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

import torch

from repo2lora.adapters.defaults import DEFAULT_RANK
from repo2lora.adapters.functional import BatchedLora, functional_lora
from repo2lora.adapters.targets import DEFAULT_TARGETS, LoraTarget
from repo2lora.hypernet.static import HypernetConfig
from repo2lora.training.data import TaskExample, target_nll, tokenize_examples, with_target_end


@dataclass(frozen=True)
class TrainConfig:
    """The knobs of a hypernetwork training run."""

    generator: str = "code2lora-static"  # or "code2lora-evo", "code2lora-names"
    steps: int = 200
    batch_size: int = 8  # global: examples per step (static) / windows per step (evo)
    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    max_prompt_tokens: int = 256
    max_target_tokens: int = 32
    tbptt_window: int = 16
    checkpoint_every: int = 50
    eval_every: int = 50
    seed: int = 0
    rank: int = DEFAULT_RANK
    # `attention`, `all-linear` or module names (`targets.select_targets`)
    target_modules: tuple[str, ...] = DEFAULT_TARGETS
    layer_conditioning: str = "embedding"
    # the shipped untrained default starts B near zero (1e-3) so it barely moves the model; a
    # training run starts wider, or the bound itself takes hundreds of steps to open up
    b_init_bound: float = 0.05
    # chunk vectors centred/scaled by the training corpus' statistics. Off by default: on the ci
    # suite it spreads the adapters (pairwise cosine 1.00 -> 0.70) but overfits the few training
    # repositories (cross-repo target NLL 4.83 -> 5.06)
    standardize: bool = False
    # also train on what closes each target (`data.target_end`: ")" after `pytest.raises(X`),
    # so completions learn to stop; None: for code2lora-names, whose memory raises a name's
    # tokens wherever they fit and would otherwise go on after a name is written
    target_end: bool | None = None
    # code2lora-names: the LM head pair's rank and the most names its memory holds
    names_rank: int = HypernetConfig.names_rank
    names_max: int = HypernetConfig.names_max
    names_select: str = HypernetConfig.names_select
    names_contexts: int = HypernetConfig.names_contexts
    names_lr_scale: float = 3.0  # the names memory learns at `lr` times this
    # the loss weight of target tokens that spell a name the repository defines
    # (`name_token_weights`; code2lora-names)
    name_weight: float = 1.0
    # evo and names only: start the snapshot encoder and LoRA head (and, from an evolving
    # checkpoint, the GRU step) from this trained hypernetwork (a checkpoint directory), so that
    # h_0 is its state and training starts from its adapter; what was copied then learns at
    # `lr * init_lr_scale` (0: frozen, only the new parts learn)
    init_from: str | None = None
    init_lr_scale: float = 0.1
    precision: str = "auto"  # "bf16" autocast (auto: on CUDA), "fp32"
    gradient_checkpointing: str = "auto"  # of the frozen base's layers (auto: on CUDA)


def learns_target_end(cfg: TrainConfig) -> bool:
    return cfg.target_end if cfg.target_end is not None else cfg.generator == "code2lora-names"


def tokenize_batch(
    tokenizer: Any, examples: list[TaskExample], cfg: TrainConfig
) -> dict[str, torch.Tensor]:
    if learns_target_end(cfg):
        examples = with_target_end(examples)
    tb = tokenize_examples(tokenizer, examples, cfg.max_prompt_tokens, cfg.max_target_tokens)
    n_target = (tb.labels[:, 1:] != -100).sum(1).float()
    return {
        "input_ids": tb.input_ids,
        "attention_mask": tb.attention_mask,
        "labels": tb.labels,
        "n_target": n_target,
    }


def static_schedule(n: int, step: int, batch_size: int, seed: int) -> list[int]:
    """Example indices of global step `step`: epochs of seeded permutations, concatenated."""
    out: list[int] = []
    pos = step * batch_size
    while len(out) < batch_size:
        epoch, offset = divmod(pos, n)
        perm = list(range(n))
        random.Random(seed * 1_000_003 + epoch).shuffle(perm)
        take = min(batch_size - len(out), n - offset)
        out += perm[offset : offset + take]
        pos += take
    return out


def shard_batch(
    tokenizer: Any, examples: list[TaskExample], step: int, cfg: TrainConfig, rank: int, world: int
) -> tuple[list[TaskExample], dict[str, torch.Tensor], float]:
    """This process's share of global step `step`'s batch, tokenised, and the global batch's
    target tokens (the whole batch is tokenised again only when other processes share it)."""
    idx = static_schedule(len(examples), step, cfg.batch_size, cfg.seed)
    mine = [examples[i] for i in idx[rank::world]]
    tok = tokenize_batch(tokenizer, mine, cfg)
    if world == 1:
        return mine, tok, float(tok["n_target"].sum())
    whole = tokenize_batch(tokenizer, [examples[i] for i in idx], cfg)
    return mine, tok, float(whole["n_target"].sum())


def sample_in_order(items: list[Any], k: int, key: tuple[int, ...]) -> list[Any]:
    """At most `k` of `items`, drawn uniformly by a generator seeded from `key` (the run's seed,
    the step, the window), kept in their original order. A window's later commits are as likely
    to be picked as its first ones."""
    if len(items) <= k:
        return items
    rng = random.Random(":".join(map(str, key)))  # str seeds are hashed stably (sha512)
    return [items[i] for i in sorted(rng.sample(range(len(items)), k))]


def lm_loss_sum(
    base_model: Any,
    targets: list[LoraTarget],
    scaling: float,
    batched: BatchedLora,
    batch: dict[str, torch.Tensor],
    checkpoint_layers: bool = False,
) -> torch.Tensor:
    """Summed target-token NLL of each example under its own adapter (row of `batched`)."""
    device = base_model.get_input_embeddings().weight.device
    batch = {k: v.to(device) for k, v in batch.items()}
    batched = {mt: (a.to(device), b.to(device)) for mt, (a, b) in batched.items()}
    with functional_lora(base_model, targets, batched, scaling, checkpoint_layers):
        nll = target_nll(
            base_model,
            batch["input_ids"],
            batch["attention_mask"],
            batch["labels"],
            batch.get("weights"),
        )
    return (nll * batch["n_target"]).sum()


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def name_token_weights(
    tokenizer: Any,
    examples: list[TaskExample],
    names: list[set[str]],
    labels: torch.Tensor,
    cfg: TrainConfig,
) -> torch.Tensor:
    """Per-token loss weights [b, t] aligned with `labels` (`tokenize_batch` of `examples`):
    `cfg.name_weight` on the target tokens that spell an identifier each example's repository
    defines (`names[i]`: a name held or not), 1 elsewhere. A code2lora-names memory learns its
    names from these tokens only; the weight makes them count for more than their share."""
    out = torch.ones(labels.shape, dtype=torch.float32)
    if cfg.name_weight == 1.0:
        return out
    if learns_target_end(cfg):
        examples = with_target_end(examples)
    for i, (ex, defined) in enumerate(zip(examples, names, strict=True)):
        spans = [m.span() for m in _IDENTIFIER.finditer(ex.target) if m.group() in defined]
        if not spans:
            continue
        enc = tokenizer(ex.target, add_special_tokens=False, return_offsets_mapping=True)
        offsets = enc["offset_mapping"][: cfg.max_target_tokens]
        where = (labels[i] != -100).nonzero().flatten().tolist()
        for pos, (start, end) in zip(where, offsets, strict=False):
            if any(start < b and a < end for a, b in spans):
                out[i, pos] = cfg.name_weight
    return out


@torch.no_grad()
def evaluate_adapters(
    base_model: Any,
    tokenizer: Any,
    targets: list[LoraTarget],
    scaling: float,
    adapters: dict[str, BatchedLora],
    examples: list[TaskExample],
    cfg: TrainConfig,
) -> dict[str, float]:
    """Mean per-token target NLL with each example's repository adapter (batch size 1 each)
    and with the base model: the numbers `hypernet_trainer.evaluate` reports, computed the
    same way (same tokenization, same batches of 16)."""
    if not examples:
        return {}
    gen_sum = base_sum = n_sum = 0.0
    for i in range(0, len(examples), 16):
        part = examples[i : i + 16]
        tok = tokenize_batch(tokenizer, part, cfg)
        batched = {
            mt: (
                torch.cat([adapters[e.repo][mt][0] for e in part]),
                torch.cat([adapters[e.repo][mt][1] for e in part]),
            )
            for mt in adapters[part[0].repo]
        }
        gen_sum += float(lm_loss_sum(base_model, targets, scaling, batched, tok))
        device = base_model.get_input_embeddings().weight.device
        ids, mask, labels = (tok[k].to(device) for k in ("input_ids", "attention_mask", "labels"))
        nll = target_nll(base_model, ids, mask, labels).cpu()
        base_sum += float((nll * tok["n_target"]).sum())
        n_sum += float(tok["n_target"].sum())
    return {"nll_generated": gen_sum / n_sum, "nll_base": base_sum / n_sum, "target_tokens": n_sum}
