"""Trains a hypernetwork end to end on the LM loss of target tokens: the base model frozen, each
sample's generated LoRA applied functionally in one batch, gradients only in the generator.

Runs as one CPU process by default and unchanged under `accelerate launch` (DDP: gloo on CPU,
NCCL on GPUs; on CUDA by default bf16 autocast and activation checkpointing of the frozen base:
`placement`). The data schedule is a pure function of (seed, step), and an
evolving window's starting state is replayed without gradient from h_0, so any step can run on
any process and a resumed run repeats exactly what an uninterrupted one would have done."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from repo2lora.adapters.defaults import default_alpha
from repo2lora.hypernet.checkpoint import build_hypernet, load_generator
from repo2lora.hypernet.name_memory import NameInput
from repo2lora.hypernet.protocol import replay
from repo2lora.hypernet.static import HypernetConfig, StaticHypernet
from repo2lora.models.loading import LoadedModel
from repo2lora.training.data import RepoEncoding, TaskExample, pad_vector_sets, target_nll
from repo2lora.training.loop import StepLog, StepOutcome, TrainingRun, TrainResult, freeze_base
from repo2lora.training.placement import checkpoints_layers, make_accelerator
from repo2lora.training.shared import (
    TrainConfig,
    lm_loss_sum,
    name_token_weights,
    sample_in_order,
    shard_batch,
    static_schedule,
    tokenize_batch,
)
from repo_encoder.errors import UserError
from repo_encoder.names import RepoName


class HypernetLoss(nn.Module):
    """The generator (a registered submodule: trained, synchronised by DDP) and the frozen base
    model (deliberately not registered: never trained, never synchronised)."""

    _base: Any

    def __init__(self, net: StaticHypernet, base_model: Any, checkpoint_layers: bool = False):
        super().__init__()
        self.net = net
        self.checkpoint_layers = checkpoint_layers
        object.__setattr__(self, "_base", base_model)

    def lm_loss_sum(self, states: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        """Summed target-token NLL of each example under the LoRA generated from its state
        (and, for a generator that reads them, its repository's names: `batch["names"]`)."""
        batched, targets = self.net.batched_lora(states, batch.get("names"))
        keys = ("input_ids", "attention_mask", "labels", "n_target", "weights")
        tok = {k: batch[k] for k in keys if batch.get(k) is not None}
        scaling = self.net.cfg.alpha / self.net.cfg.rank
        return lm_loss_sum(self._base, targets, scaling, batched, tok, self.checkpoint_layers)

    def forward(self, kind: str, **batch: Any) -> torch.Tensor:
        if kind == "static":
            device = self.net.device
            states = self.net.encoder(batch["vectors"].to(device), batch["mask"].to(device))
            return self.lm_loss_sum(states, batch)
        return self._evo_window(batch)

    def _evo_window(self, batch: dict[str, Any]) -> torch.Tensor:
        net = self.net
        enc: RepoEncoding = batch["repo"]
        start, end = batch["start"], batch["end"]  # steps (start, end]; step 0 is h_0
        if start == 0:
            h = net.encode(enc.vectors)
        else:
            with torch.no_grad():  # truncated BPTT: the window starts from a replayed state
                h = replay(net, net.encode(enc.vectors), enc.diffs[:start])
        states = {0: h} if start == 0 else {}
        for t in range(start + 1, end + 1):
            h = net.step(h, *enc.diffs[t - 1])
            states[t] = h
        steps: list[int] = batch["steps"]
        if not steps:  # keep every parameter in the graph so DDP's reduction stays in step
            return sum(p.sum() for p in net.parameters()) * 0.0  # type: ignore[return-value]
        st = torch.stack([states[s] for s in steps])
        return self.lm_loss_sum(st, batch)


def corpus_vectors(encodings: dict[str, RepoEncoding]) -> torch.Tensor:
    """Every chunk vector the encoder will read in training: the snapshots' and those the
    commits bring in, [n, d] (deterministic: sorted by repository)."""
    parts = []
    for name in sorted(encodings):
        enc = encodings[name]
        parts.append(enc.vectors)
        parts += [brought_in for brought_in, _, _ in enc.diffs]
    parts = [p for p in parts if p.numel()]
    return torch.cat(parts) if parts else torch.zeros(0, 0)


def start_from_static(net: StaticHypernet, static_dir: str, base: LoadedModel) -> set[str]:
    """Copy a trained hypernetwork's encoder and LoRA head into `net` (their configs must
    agree): a code2lora-static one into an evolving or names `net`, and for a names `net` also a
    code2lora-evo one (its GRU step too), or a static one into a static `net` (training it on).
    Returns the names of the parameters copied."""
    static = load_generator(static_dir, base.info, net.cfg.target_modules).net
    wants = "code2lora-static or code2lora-evo" if net.reads_names else "code2lora-static"
    fits = static.stores_state and not static.reads_names
    if not fits or (static.stateful and not net.reads_names):
        raise UserError(
            f"{static_dir} holds a {static.generator_name} generator; --init-from needs a "
            f"{wants} checkpoint"
        )
    state = static.state_dict()
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # same names, other shapes
        raise UserError(f"{static_dir}: its sizes differ from this run's ({exc})") from None
    if unexpected or any(not k.startswith(("updater.", "names.")) for k in missing):
        raise UserError(f"{static_dir}: its encoder or head differs from this run's settings")
    return set(state)


def _started_groups(
    net: StaticHypernet, cfg: TrainConfig, copied: set[str]
) -> list[dict[str, Any]]:
    """Optimizer groups of a run started from another: what is new (the GRU step, the names
    memory) at `lr`, what was copied at `lr * init_lr_scale` (frozen when that is 0 or less)."""
    new = [p for k, p in net.named_parameters() if k not in copied]
    old = [p for k, p in net.named_parameters() if k in copied]
    if cfg.init_lr_scale <= 0:
        for p in old:
            p.requires_grad_(False)
        return [{"params": new}]
    groups: list[dict[str, Any]] = [{"params": new}] if new else []  # static from static: none
    return [*groups, {"params": old, "lr": cfg.lr * cfg.init_lr_scale}]


def _names_apart(
    net: StaticHypernet, groups: list[dict[str, Any]], cfg: TrainConfig
) -> list[dict[str, Any]]:
    """The names memory's parameters in a group of their own at `lr * names_lr_scale`."""
    if not net.reads_names:
        return groups
    mine = {id(p) for p in net.names_parameters()}
    out = [{**g, "params": [p for p in g["params"] if id(p) not in mine]} for g in groups]
    memory = [p for p in net.names_parameters() if p.requires_grad]
    return [g for g in out if g["params"]] + [{"params": memory, "lr": cfg.lr * cfg.names_lr_scale}]


class NameInputs:
    """Each example's `NameInput` for a names generator: its repository's names at its step,
    read through one probe of the frozen base model (None for other generators)."""

    def __init__(self, net: StaticHypernet, base: LoadedModel, encodings: dict[str, RepoEncoding]):
        self.encodings = encodings
        self.probe = net.name_probe(base.model, base.tokenizer)
        self._lists: dict[tuple[str, int], list[RepoName]] = {}

    def __call__(self, examples: list[TaskExample]) -> list[NameInput | None] | None:
        if self.probe is None:
            return None
        out: list[NameInput | None] = []
        for ex in examples:
            key = (ex.repo, max(ex.step, 0))
            if key not in self._lists:
                steps = self.encodings[ex.repo].names
                self._lists[key] = steps[min(key[1], len(steps) - 1)].names() if steps else []
            out.append(NameInput(self._lists[key], self.probe, self.encodings[ex.repo].texts))
        return out


def name_weights(
    tokenizer: Any,
    examples: list[TaskExample],
    listed: list[NameInput | None] | None,
    labels: torch.Tensor,
    cfg: TrainConfig,
) -> torch.Tensor | None:
    """`name_token_weights` of a tokenised batch from its examples' `NameInputs` (None: every
    token counts once)."""
    if listed is None or cfg.name_weight == 1.0:
        return None
    defined = [{n.name for n in x.names} if x is not None else set() for x in listed]
    return name_token_weights(tokenizer, examples, defined, labels, cfg)


def evo_windows(encodings: dict[str, RepoEncoding], window: int) -> list[tuple[str, int, int]]:
    """(repo, start, end) windows covering each repository's walk, in order."""
    out = []
    for name in sorted(encodings):
        total = len(encodings[name].diffs)
        start = 0
        out.append((name, 0, min(window, total)))
        start = min(window, total)
        while start < total:
            out.append((name, start, min(start + window, total)))
            start += window
    return out


@torch.no_grad()
def evaluate(
    loss_module: HypernetLoss,
    tokenizer: Any,
    encodings: dict[str, RepoEncoding],
    examples: list[TaskExample],
    cfg: TrainConfig,
    names_of: NameInputs | None = None,
) -> dict[str, float]:
    """Mean per-token NLL of the targets: with generated adapters, and with the base model."""
    if not examples:
        return {}
    net = loss_module.net
    base = loss_module._base
    gen_sum = base_sum = n_sum = 0.0
    for i in range(0, len(examples), 16):
        part = examples[i : i + 16]
        tok: dict[str, Any] = dict(tokenize_batch(tokenizer, part, cfg))
        tok["names"] = names_of(part) if names_of is not None else None
        states = []
        for ex in part:
            enc = encodings[ex.repo]
            states.append(replay(net, net.encode(enc.vectors), enc.diffs[: max(ex.step, 0)]))
        gen_sum += float(loss_module.lm_loss_sum(torch.stack(states), tok))
        device = base.get_input_embeddings().weight.device
        ids, mask, labels = (tok[k].to(device) for k in ("input_ids", "attention_mask", "labels"))
        nll = target_nll(base, ids, mask, labels).cpu()
        base_sum += float((nll * tok["n_target"]).sum())
        n_sum += float(tok["n_target"].sum())
    return {"nll_generated": gen_sum / n_sum, "nll_base": base_sum / n_sum, "target_tokens": n_sum}


def train_hypernet(
    base: LoadedModel,
    encodings: dict[str, RepoEncoding],
    examples: list[TaskExample],
    out_dir: str | Path,
    cfg: TrainConfig,
    eval_examples: list[TaskExample] | None = None,
    resume: bool = True,
    on_step: Callable[[StepLog], None] | None = None,
    stop_after: int | None = None,
    card: dict[str, Any] | None = None,
) -> TrainResult:
    """Train a generator on `examples` (each tied to a repository in `encodings`); write
    checkpoints and the final hypernetwork to `out_dir`. `stop_after` ends the run early at that
    step (as a kill would), for tests."""
    out = Path(out_dir)
    acc = make_accelerator(cfg.precision)
    hcfg = HypernetConfig(
        input_dim=int(base.info.config.hidden_size),
        generator=cfg.generator,  # type: ignore[arg-type]
        rank=cfg.rank,
        alpha=default_alpha(cfg.rank),
        target_modules=cfg.target_modules,
        layer_conditioning=cfg.layer_conditioning,  # type: ignore[arg-type]
        b_init_bound=cfg.b_init_bound,
        standardize=cfg.standardize,
        names_rank=cfg.names_rank,
        names_max=cfg.names_max,
        names_select=cfg.names_select,  # type: ignore[arg-type]
        names_contexts=cfg.names_contexts,
        seed=cfg.seed,
    )
    net = build_hypernet(hcfg, base.info)
    if hcfg.standardize:  # a resume loads the same statistics
        net.encoder.fit_standardization(corpus_vectors(encodings))
    if cfg.init_from is not None:
        groups = _started_groups(net, cfg, start_from_static(net, cfg.init_from, base))
    else:
        groups = [{"params": list(net.parameters())}]
    groups = _names_apart(net, groups, cfg)
    net.train()
    freeze_base(acc, base.model)
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    run = TrainingRun(acc, net, opt, base.info, out, asdict(cfg), card, resume)
    checkpointing = checkpoints_layers(cfg.gradient_checkpointing)
    model = run.prepare(HypernetLoss(net, base.model, checkpointing))
    rank, world = acc.process_index, acc.num_processes
    run.log_start(base.model, net, cfg, checkpointing)

    # a names generator follows history when the encodings have one, else trains on snapshots
    evolving = cfg.generator == "code2lora-evo" or (
        cfg.generator == "code2lora-names" and any(e.diffs for e in encodings.values())
    )
    windows = evo_windows(encodings, cfg.tbptt_window) if evolving else []
    names_of = NameInputs(net, base, encodings)
    by_step: dict[tuple[str, int], list[TaskExample]] = {}
    for ex in examples:
        by_step.setdefault((ex.repo, ex.step), []).append(ex)

    def evo_step(step: int) -> StepOutcome:
        # each process takes its own windows of the global batch of windows
        picks = static_schedule(len(windows), step, cfg.batch_size, cfg.seed)[rank::world]
        loss_sum = torch.zeros((), device=acc.device)
        n_tok = 0.0
        for wi in picks:
            repo, s0, s1 = windows[wi]
            exs = [
                e
                for s in range(s0 if s0 == 0 else s0 + 1, s1 + 1)
                for e in by_step.get((repo, s), [])
            ]
            exs = sample_in_order(exs, 4 * cfg.batch_size, (cfg.seed, step, wi))
            batch: dict[str, Any] = {"repo": encodings[repo], "start": s0, "end": s1}
            batch["steps"] = [e.step for e in exs]
            if exs:
                batch.update(tokenize_batch(base.tokenizer, exs, cfg))
                batch["names"] = names_of(exs)
                batch["weights"] = name_weights(
                    base.tokenizer, exs, batch["names"], batch["labels"], cfg
                )
                n_tok += float(batch["n_target"].sum())
            loss_sum = loss_sum + model("evo", **batch)
        # the global batch's tokens, approximately: other processes' windows differ in size
        return StepOutcome.per_token(loss_sum, n_tok, n_tok * world, world)

    def static_step(step: int) -> StepOutcome:
        mine, tok, global_tokens = shard_batch(base.tokenizer, examples, step, cfg, rank, world)
        vecs, mask = pad_vector_sets([encodings[e.repo].vectors for e in mine])
        names = names_of(mine)
        weights = name_weights(base.tokenizer, mine, names, tok["labels"], cfg)
        loss_sum = model("static", vectors=vecs, mask=mask, names=names, weights=weights, **tok)
        n_tok = float(tok["n_target"].sum())
        return StepOutcome.per_token(loss_sum, n_tok, global_tokens, world)

    def evaluate_now() -> dict[str, float]:
        return evaluate(
            acc.unwrap_model(model), base.tokenizer, encodings, eval_examples or [], cfg, names_of
        )

    return run.run(
        cfg,
        evo_step if windows else static_step,
        evaluate=evaluate_now if eval_examples else None,
        on_step=on_step,
        stop_after=stop_after,
    )
