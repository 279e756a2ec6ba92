"""Pretrains the default code LM, one entry point on CPU and CUDA: a byte-level BPE tokenizer
trained on the corpus' train split, the train split packed into uint16 token shards read as
memory maps, a Llama-architecture model sized from the compute budget (about 20 tokens per
parameter), random packed windows drawn by a seed-and-step RNG (so a killed run resumes
exactly), a cosine schedule with warmup, bf16 autocast where the hardware has it, and the
held-out curve in bits per byte. Stops at a token budget or at a wall-clock limit."""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from repo2lora.atomic import atomic_directory
from repo2lora.pretrain.bpb import bits_per_byte
from repo2lora.pretrain.budget import PEAK_FLOPS, flops_per_token
from repo2lora.pretrain.config import (
    RESUMABLE_FIELDS,
    PretrainConfig,
    PretrainError,
    autocast,
    use_bf16,
)
from repo2lora.pretrain.corpus import HASHES, read_manifest
from repo2lora.pretrain.tokens import CorpusSource, TokenShards, heldout_sample, prepare_data
from repo2lora.training.checkpoint import optimizer_from_safetensors, optimizer_to_safetensors


def lm_config(cfg: PretrainConfig, tokenizer: PreTrainedTokenizerFast) -> LlamaConfig:
    c = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        num_key_value_heads=cfg.kv_heads,
        max_position_embeddings=cfg.context,
        tie_word_embeddings=True,
    )
    c._attn_implementation = "sdpa"  # fused attention on CPU and CUDA
    c.bos_token_id = c.eos_token_id = c.pad_token_id = tokenizer.eos_token_id
    return c


def _lr(step: int, cfg: PretrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    frac = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * frac))


@dataclass
class PretrainResult:
    out_dir: str
    steps: int
    tokens_seen: int
    seconds: float
    val_loss: float
    params: int
    bits_per_byte: float = float("nan")


def _check_resume(ckpt: Path, cfg: PretrainConfig) -> None:
    """Refuse to continue the state in `ckpt` (a checkpoint or warm-start directory) with a
    config that changes anything but this invocation's clock and cadence."""
    st = json.loads((ckpt / "state.json").read_text())
    old = st.get("config")
    if not old:
        return
    changed = [
        f"{f.name} {old.get(f.name)} -> {getattr(cfg, f.name)}"
        for f in fields(cfg)
        if f.name not in RESUMABLE_FIELDS and f.name in old and old[f.name] != getattr(cfg, f.name)
    ]
    if changed:
        raise PretrainError(
            f"the run in {ckpt.parent} was started with another config ({'; '.join(changed)}); "
            "resume it with the same options or start a new --out"
        )


def stored_config(out_dir: str | Path, warm_start: bool = False) -> PretrainConfig | None:
    """The config a run was started with (None when it has no checkpoint yet); with
    `warm_start`, the config recorded in a warm-start directory."""
    state = Path(out_dir) / ("state.json" if warm_start else "checkpoint/state.json")
    if not state.is_file():
        return None
    old = json.loads(state.read_text()).get("config")
    if not old:
        return None
    known = {f.name for f in fields(PretrainConfig)}
    return PretrainConfig(**{k: v for k, v in old.items() if k in known})


def pretrain(
    out_dir: str | Path,
    corpus: CorpusSource,
    cfg: PretrainConfig,
    on_log: Callable[[dict[str, Any]], None] | None = None,
    stop_after: int | None = None,
    finish_at_stop: bool = False,
    warm_start: str | Path | None = None,
) -> PretrainResult:
    """Run (or resume) pretraining into `out_dir`; the finished model is `out_dir/model`.
    `corpus` is a corpus directory (`repo2lora corpus build`) or a function giving a Corpus.
    `stop_after` ends the run at that step after its checkpoint, as a kill would (for tests).
    `finish_at_stop` writes the model when the wall clock stops the run before its planned
    steps (a one-call GPU run); otherwise such a run pauses, to be resumed.
    `warm_start` (a directory from `export --checkpoint`: weights, tokenizer, state) starts a
    new run directory from committed weights, with its tokenizer and at its step, the optimizer
    fresh: the way on when the run directory itself is gone."""
    if not callable(corpus):
        read_manifest(corpus)  # a clear error before anything is written
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "checkpoint"
    warm = None
    if (ckpt / "state.json").is_file():
        _check_resume(ckpt, cfg)
    elif warm_start is not None:
        warm = Path(warm_start)
        if not (warm / "state.json").is_file() or not (warm / "model.safetensors").is_file():
            raise PretrainError(
                f"{warm} is not a warm-start directory (state.json, model.safetensors, "
                "tokenizer); make one with `python -m repo2lora.pretrain.export --checkpoint RUN`"
            )
        _check_resume(warm, cfg)
    meta = prepare_data(out, corpus, cfg, tokenizer_dir=warm)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(out / "data" / "tokenizer"))
    shards = TokenShards(out / "data", meta["shards"])
    curve_docs = heldout_sample(out, "heldout-curve")
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    bf16 = use_bf16(cfg.precision, device)
    torch.manual_seed(cfg.seed)
    model: Any = LlamaForCausalLM(lm_config(cfg, tokenizer))
    model.to(device)
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, weight_decay=0.1, betas=(0.9, 0.95), fused=cuda
    )
    step, tokens, seconds = 0, 0, 0.0
    if (ckpt / "state.json").is_file():
        load_model(model, str(ckpt / "model.safetensors"))
        opt.load_state_dict(
            optimizer_from_safetensors(
                load_file(str(ckpt / "optimizer.safetensors")),
                json.loads((ckpt / "optimizer.json").read_text()),
            )
        )
        st = json.loads((ckpt / "state.json").read_text())
        step, tokens, seconds = st["step"], st["tokens"], st["seconds"]
    elif warm is not None:
        load_model(model, str(warm / "model.safetensors"))
        st = json.loads((warm / "state.json").read_text())
        step, tokens, seconds = st["step"], st["tokens"], st["seconds"]
    step_fn = torch.compile(model) if cfg.compile and cuda else model
    log_path = out / "pretrain_log.jsonl"
    fpt = flops_per_token(params, cfg.layers, cfg.hidden_size, cfg.context)
    peak = next(
        (v for k, v in PEAK_FLOPS.items() if cuda and k in torch.cuda.get_device_name(0)), None
    )

    def log(ev: dict[str, Any]) -> None:
        with log_path.open("a") as fh:
            fh.write(json.dumps({"time": time.time(), **ev}) + "\n")
        if on_log:
            on_log(ev)

    def save(val_loss: float, bpb: float) -> None:
        with atomic_directory(ckpt) as tmp:
            save_model(model, str(tmp / "model.safetensors"))  # handles the tied embeddings
            tensors, ometa = optimizer_to_safetensors(opt.state_dict())
            save_file(tensors, str(tmp / "optimizer.safetensors"))
            (tmp / "optimizer.json").write_text(json.dumps(ometa))
            state = {
                "step": step,
                "tokens": tokens,
                "seconds": seconds,
                "val_loss": val_loss,
                "bits_per_byte": bpb,
                "config": asdict(cfg),
            }
            (tmp / "state.json").write_text(json.dumps(state))

    def evaluate() -> tuple[float, float]:
        """(held-out nats per token, held-out bits per byte) on the curve sample."""
        with autocast(device, bf16):
            res = bits_per_byte(model, tokenizer, curve_docs, cfg.context, device=device)
        return res.nats / max(1, res.tokens), res.bits_per_byte

    model.train()
    val_loss, bpb = float("nan"), float("nan")
    budget = cfg.minutes * 60 if cfg.minutes else float("inf")
    t_start = time.perf_counter()
    seconds_before = seconds
    window_t, window_tokens = time.perf_counter(), 0
    while step < cfg.steps and (time.perf_counter() - t_start) < budget:
        x = shards.batch(step, cfg.seed, cfg.batch_size, cfg.context).to(device, non_blocking=True)
        for g in opt.param_groups:
            g["lr"] = _lr(step, cfg)
        with autocast(device, bf16):
            loss = step_fn(input_ids=x[:, :-1], labels=x[:, :-1]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        tokens += x[:, :-1].numel()
        window_tokens += x[:, :-1].numel()
        seconds = seconds_before + time.perf_counter() - t_start
        if step % 10 == 0:
            dt = max(time.perf_counter() - window_t, 1e-9)
            tps = window_tokens / dt
            ev: dict[str, Any] = {
                "event": "step",
                "step": step,
                "loss": float(loss.detach()),
                "tokens": tokens,
                "tokens_per_s": round(tps, 1),
                "model_flops_per_s": tps * fpt,
                "lr": _lr(step, cfg),
            }
            if peak:
                ev["mfu"] = round(tps * fpt / peak, 4)
            if cuda:
                ev["max_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
            log(ev)
            window_t, window_tokens = time.perf_counter(), 0
        if step % cfg.eval_every == 0:
            val_loss, bpb = evaluate()
            log(
                {
                    "event": "eval",
                    "step": step,
                    "val_loss": val_loss,
                    "bits_per_byte": bpb,
                    "tokens": tokens,
                    "seconds": round(seconds, 1),
                }
            )
        if step % cfg.checkpoint_every == 0:
            save(val_loss, bpb)
            log({"event": "checkpoint", "step": step})
            if stop_after is not None and step >= stop_after:
                return PretrainResult("", step, tokens, seconds, val_loss, params, bpb)
    val_loss, bpb = evaluate()
    save(val_loss, bpb)
    if (
        step < cfg.steps and not finish_at_stop
    ):  # stopped by the wall clock: resumable, no final model yet
        log({"event": "paused", "step": step, "tokens": tokens, "bits_per_byte": bpb})
        return PretrainResult("", step, tokens, seconds, val_loss, params, bpb)
    return finish(out, model, tokenizer, cfg, meta, step, tokens, seconds, val_loss, log)


def finish(
    out: Path,
    model: Any,
    tokenizer: PreTrainedTokenizerFast,
    cfg: PretrainConfig,
    meta: dict[str, Any],
    step: int,
    tokens: int,
    seconds: float,
    val_loss: float,
    log: Callable[[dict[str, Any]], None],
) -> PretrainResult:
    """Write `out/model`: weights, tokenizer, and a card with the final held-out bits per byte
    (on the larger report sample), xz's beside it, and the curve."""
    device = next(model.parameters()).device
    with autocast(device, use_bf16(cfg.precision, device)):
        report = bits_per_byte(
            model, tokenizer, heldout_sample(out, "heldout-report"), cfg.context, device=device
        )
    final = out / "model"
    with atomic_directory(final) as tmp:
        model.to(torch.float32).save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        params = sum(p.numel() for p in model.parameters())
        curve = [
            {k: ev.get(k) for k in ("step", "tokens", "val_loss", "bits_per_byte")}
            for ev in map(json.loads, (out / "pretrain_log.jsonl").read_text().splitlines())
            if ev.get("event") == "eval"
        ]
        cuda = device.type == "cuda"
        card = {
            "kind": "repo2lora default base model",
            "architecture": "llama",
            "params": params,
            "config": asdict(cfg),
            "tokens_seen": tokens,
            "tokens_per_param": round(tokens / params, 2),
            "steps": step,
            "wall_seconds": round(seconds, 1),
            "tokens_per_second": round(tokens / max(seconds, 1e-9), 1),
            "hardware": torch.cuda.get_device_name(0) if cuda else f"cpu x{os.cpu_count()}",
            "held_out_bits_per_byte": report.bits_per_byte,
            "held_out_xz_bits_per_byte": meta.get("xz_bits_per_byte"),
            "held_out_bytes": report.bytes,
            "held_out_bytes_per_token": meta.get("heldout_bytes_per_token"),
            "held_out_loss_nats_per_token": val_loss,
            "curve": curve,
            "data": {k: v for k, v in meta.items() if k != "shards"},
            "data_manifest_file": "manifest.json",
        }
        (tmp / "model_card.json").write_text(json.dumps(card, indent=2, sort_keys=True))
        shutil.copy(out / "data" / "manifest.json", tmp / "manifest.json")
        if (out / "data" / HASHES).is_file():
            shutil.copy(out / "data" / HASHES, tmp / HASHES)
        plot_bpb_curve(curve, meta.get("xz_bits_per_byte"), tmp / "val_bpb.png")
    log(
        {
            "event": "done",
            "step": step,
            "val_loss": val_loss,
            "tokens": tokens,
            "bits_per_byte": report.bits_per_byte,
        }
    )
    return PretrainResult(str(final), step, tokens, seconds, val_loss, params, report.bits_per_byte)


def plot_bpb_curve(curve: list[dict[str, Any]], xz: float | None, path: Path) -> None:
    """The held-out bits per byte against training tokens, with xz's line; skipped quietly
    where matplotlib is missing (the GPU machine)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    pts = [c for c in curve if c.get("bits_per_byte") is not None]
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
    ax.plot(
        [c["tokens"] / 1e6 for c in pts],
        [c["bits_per_byte"] for c in pts],
        marker="o",
        label="model",
    )
    if xz:
        ax.axhline(xz, color="grey", linestyle="--", label="xz -9e")
    ax.set_xlabel("training tokens (millions)")
    ax.set_ylabel("held-out bits per byte")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def load_checkpoint_model(
    out_dir: str | Path,
) -> tuple[Any, PreTrainedTokenizerFast, dict[str, Any]]:
    """The model of a run's last checkpoint (float32, eval mode), its tokenizer and its state,
    so a run in progress can be measured by the same code as a finished model."""
    out = Path(out_dir)
    cfg = stored_config(out)
    if cfg is None:
        raise PretrainError(f"{out} has no checkpoint yet; let the run reach its first checkpoint")
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(out / "data" / "tokenizer"))
    model: Any = LlamaForCausalLM(lm_config(cfg, tokenizer))
    load_model(model, str(out / "checkpoint" / "model.safetensors"))
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    return model.eval(), tokenizer, state
