"""Trains a hypernetwork end to end on the LM loss of target tokens: the base model frozen, each
sample's generated LoRA applied functionally in one batch, gradients only in the generator.

Runs as one CPU process by default and unchanged under `accelerate launch` (DDP: gloo on CPU,
NCCL on GPUs; on CUDA by default bf16 autocast and activation checkpointing of the frozen base:
`placement`). The data schedule is a pure function of (seed, step), and an
evolving window's starting state is replayed without gradient from h_0, so any step can run on
any process and a resumed run repeats exactly what an uninterrupted one would have done."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from repo2lora.adapters.defaults import DEFAULT_RANK, default_alpha
from repo2lora.adapters.functional import functional_lora
from repo2lora.adapters.targets import DEFAULT_TARGETS
from repo2lora.hypernet.checkpoint import build_hypernet, load_generator
from repo2lora.hypernet.evo import EvoHypernet
from repo2lora.hypernet.name_memory import NameInput, NameProbe
from repo2lora.hypernet.names import NamesHypernet
from repo2lora.hypernet.static import HypernetConfig, StaticHypernet
from repo2lora.models.loading import LoadedModel
from repo2lora.training.data import (
    RepoEncoding,
    TaskExample,
    pad_vector_sets,
    target_nll,
    tokenize_examples,
    with_target_end,
)
from repo2lora.training.loop import StepLog, StepOutcome, TrainingRun, TrainResult, freeze_base
from repo2lora.training.placement import checkpoints_layers, make_accelerator
from repo_encoder.errors import UserError
from repo_encoder.names import RepoName


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
    names_lr_scale: float = 3.0  # the names memory learns at `lr` times this
    # evo and names only: start the snapshot encoder and LoRA head (and, from an evolving
    # checkpoint, the GRU step) from this trained hypernetwork (a checkpoint directory), so that
    # h_0 is its state and training starts from its adapter; what was copied then learns at
    # `lr * init_lr_scale` (0: frozen, only the new parts learn)
    init_from: str | None = None
    init_lr_scale: float = 0.1
    precision: str = "auto"  # "bf16" autocast (auto: on CUDA), "fp32"
    gradient_checkpointing: str = "auto"  # of the frozen base's layers (auto: on CUDA)


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
        base = self._base
        device = base.get_input_embeddings().weight.device
        tok = {k: batch[k].to(device) for k in ("input_ids", "attention_mask", "labels")}
        scaling = self.net.cfg.alpha / self.net.cfg.rank
        with functional_lora(base, targets, batched, scaling, self.checkpoint_layers):
            nll = target_nll(base, **tok)  # [b] mean per token
        return (nll * batch["n_target"].to(nll.device)).sum()

    def forward(self, kind: str, **batch: Any) -> torch.Tensor:
        if kind == "static":
            device = self.net.device
            states = self.net.encoder(batch["vectors"].to(device), batch["mask"].to(device))
            return self.lm_loss_sum(states, batch)
        return self._evo_window(batch)

    def _evo_window(self, batch: dict[str, Any]) -> torch.Tensor:
        net = self.net
        assert isinstance(net, EvoHypernet)
        enc: RepoEncoding = batch["repo"]
        start, end = batch["start"], batch["end"]  # steps (start, end]; step 0 is h_0
        if start == 0:
            h = net.encode(enc.vectors)
        else:
            with torch.no_grad():  # truncated BPTT: the window starts from a replayed state
                h = net.encode(enc.vectors)
                for t in range(1, start + 1):
                    h = net.step(h, *enc.diffs[t - 1])
        states = {0: h} if start == 0 else {}
        for t in range(start + 1, end + 1):
            h = net.step(h, *enc.diffs[t - 1])
            states[t] = h
        steps: list[int] = batch["steps"]
        if not steps:  # keep every parameter in the graph so DDP's reduction stays in step
            return sum(p.sum() for p in net.parameters()) * 0.0  # type: ignore[return-value]
        st = torch.stack([states[s] for s in steps])
        return self.lm_loss_sum(st, batch)


def learns_target_end(cfg: TrainConfig) -> bool:
    return cfg.target_end if cfg.target_end is not None else cfg.generator == "code2lora-names"


def _tokens(
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
    tok = _tokens(tokenizer, mine, cfg)
    if world == 1:
        return mine, tok, float(tok["n_target"].sum())
    whole = _tokens(tokenizer, [examples[i] for i in idx], cfg)
    return mine, tok, float(whole["n_target"].sum())


def sample_in_order(items: list[Any], k: int, key: tuple[int, ...]) -> list[Any]:
    """At most `k` of `items`, drawn uniformly by a generator seeded from `key` (the run's seed,
    the step, the window), kept in their original order. A window's later commits are as likely
    to be picked as its first ones."""
    if len(items) <= k:
        return items
    rng = random.Random(":".join(map(str, key)))  # str seeds are hashed stably (sha512)
    return [items[i] for i in sorted(rng.sample(range(len(items)), k))]


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


def start_from_static(net: EvoHypernet, static_dir: str, base: LoadedModel) -> set[str]:
    """Copy a trained hypernetwork's encoder and LoRA head into `net` (their configs must
    agree): a code2lora-static one into an evolving or names `net`, and for a names `net` also a
    code2lora-evo one (its GRU step too). Returns the names of the parameters copied."""
    static = load_generator(static_dir, base.info, net.cfg.target_modules).net
    wants = "code2lora-static or code2lora-evo" if net.reads_names else "code2lora-static"
    fits = isinstance(static, StaticHypernet) and not static.reads_names
    if not fits or (isinstance(static, EvoHypernet) and not net.reads_names):
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


def _started_groups(net: EvoHypernet, cfg: TrainConfig, copied: set[str]) -> list[dict[str, Any]]:
    """Optimizer groups of a run started from another: what is new (the GRU step, the names
    memory) at `lr`, what was copied at `lr * init_lr_scale` (frozen when that is 0 or less)."""
    new = [p for k, p in net.named_parameters() if k not in copied]
    old = [p for k, p in net.named_parameters() if k in copied]
    if cfg.init_lr_scale <= 0:
        for p in old:
            p.requires_grad_(False)
        return [{"params": new}]
    return [{"params": new}, {"params": old, "lr": cfg.lr * cfg.init_lr_scale}]


def _names_apart(
    net: StaticHypernet, groups: list[dict[str, Any]], cfg: TrainConfig
) -> list[dict[str, Any]]:
    """The names memory's parameters in a group of their own at `lr * names_lr_scale`."""
    if not isinstance(net, NamesHypernet):
        return groups
    mine = {id(p) for p in net.names.parameters()}
    out = [{**g, "params": [p for p in g["params"] if id(p) not in mine]} for g in groups]
    memory = [p for p in net.names.parameters() if p.requires_grad]
    return [g for g in out if g["params"]] + [{"params": memory, "lr": cfg.lr * cfg.names_lr_scale}]


class NameInputs:
    """Each example's `NameInput` for a names generator: its repository's names at its step,
    read through one probe of the frozen base model (None for other generators)."""

    def __init__(self, net: StaticHypernet, base: LoadedModel, encodings: dict[str, RepoEncoding]):
        self.encodings = encodings
        self.probe = (
            NameProbe(base.model, base.tokenizer, net.cfg.names_tokens) if net.reads_names else None
        )
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
            out.append(NameInput(self._lists[key], self.probe))
        return out


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
        tok: dict[str, Any] = dict(_tokens(tokenizer, part, cfg))
        tok["names"] = names_of(part) if names_of is not None else None
        states = []
        for ex in part:
            enc = encodings[ex.repo]
            h = net.encode(enc.vectors)
            if ex.step > 0 and isinstance(net, EvoHypernet):
                for t in range(1, ex.step + 1):
                    h = net.step(h, *enc.diffs[t - 1])
            states.append(h)
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
        seed=cfg.seed,
    )
    net = build_hypernet(hcfg, base.info)
    if hcfg.standardize:  # a resume loads the same statistics
        net.encoder.fit_standardization(corpus_vectors(encodings))
    if cfg.init_from is not None:
        assert isinstance(net, EvoHypernet)
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
                batch.update(_tokens(base.tokenizer, exs, cfg))
                batch["names"] = names_of(exs)
                n_tok += float(batch["n_target"].sum())
            loss_sum = loss_sum + model("evo", **batch)
        # the global batch's tokens, approximately: other processes' windows differ in size
        return StepOutcome.per_token(loss_sum, n_tok, n_tok * world, world)

    def static_step(step: int) -> StepOutcome:
        mine, tok, global_tokens = shard_batch(base.tokenizer, examples, step, cfg, rank, world)
        vecs, mask = pad_vector_sets([encodings[e.repo].vectors for e in mine])
        loss_sum = model("static", vectors=vecs, mask=mask, names=names_of(mine), **tok)
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
