"""Pretrains the default code LM: byte-level BPE tokenizer, the corpus packed into token files
(nanoGPT style), and a Llama-architecture model trained on random windows drawn by a
seed-and-step RNG, so a killed run resumes exactly. Uses CUDA + bf16 when present."""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from repo2lora.atomic import atomic_directory
from repo2lora.models.presets import EOS, SPECIAL_TOKENS
from repo2lora.pretrain.corpus import Corpus, SourceDoc
from repo2lora.training.checkpoint import optimizer_from_safetensors, optimizer_to_safetensors


@dataclass(frozen=True)
class PretrainConfig:
    vocab_size: int = 8192
    hidden_size: int = 256
    layers: int = 4
    heads: int = 8
    kv_heads: int = 4
    intermediate: int = 688
    context: int = 512
    batch_size: int = 16
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 200
    steps: int = 20_000
    minutes: float = 0.0  # stop after this many minutes of training (0: run all steps)
    eval_every: int = 250
    eval_batches: int = 20
    checkpoint_every: int = 250
    seed: int = 0
    tokenizer_sample_bytes: int = 30_000_000


def train_tokenizer(docs: list[SourceDoc], cfg: PretrainConfig) -> PreTrainedTokenizerFast:
    """Byte-level BPE on (a sample of) the training documents; special tokens as the presets."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )

    def sample() -> Any:
        used = 0
        for d in docs:
            if used >= cfg.tokenizer_sample_bytes:
                return
            used += len(d.text)
            yield d.text

    tok.train_from_iterator(sample(), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS,
        bos_token=EOS,
        pad_token=EOS,
        model_max_length=cfg.context,
    )


def pack_tokens(tokenizer: PreTrainedTokenizerFast, docs: list[SourceDoc], path: Path) -> int:
    """Every document's tokens followed by EOS, as one uint16 file; returns the token count."""
    eos = tokenizer.eos_token_id
    tmp = path.with_suffix(".tmp")
    n = 0
    with tmp.open("wb") as fh:
        for i in range(0, len(docs), 256):
            batch = tokenizer([d.text for d in docs[i : i + 256]], add_special_tokens=False)[
                "input_ids"
            ]
            for ids in batch:
                arr = np.asarray([*ids, eos], dtype=np.uint16)
                fh.write(arr.tobytes())
                n += arr.size
    os.replace(tmp, path)
    return n


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
    c.bos_token_id = c.eos_token_id = c.pad_token_id = tokenizer.eos_token_id
    return c


def _batch(data: np.ndarray, step: int, seed: int, cfg: PretrainConfig) -> torch.Tensor:
    rng = np.random.default_rng([seed, step])
    starts = rng.integers(0, len(data) - cfg.context - 1, size=cfg.batch_size)
    return torch.from_numpy(
        np.stack([data[s : s + cfg.context + 1].astype(np.int64) for s in starts])
    )


def _lr(step: int, cfg: PretrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    frac = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * frac))


@torch.no_grad()
def eval_loss(model: Any, data: np.ndarray, cfg: PretrainConfig, device: torch.device) -> float:
    model.eval()
    losses = []
    for i in range(cfg.eval_batches):
        x = _batch(data, 10_000_000 + i, cfg.seed, cfg).to(device)  # fixed held-out windows
        losses.append(float(model(input_ids=x[:, :-1], labels=x[:, :-1]).loss))
    model.train()
    return float(np.mean(losses))


@dataclass
class PretrainResult:
    out_dir: str
    steps: int
    tokens_seen: int
    seconds: float
    val_loss: float
    params: int


def prepare_data(out: Path, corpus_fn: Callable[[], Corpus], cfg: PretrainConfig) -> dict[str, Any]:
    """Tokenizer + packed train/val token files in `out/data` (done once; reused on resume)."""
    data = out / "data"
    meta_path = data / "meta.json"
    if meta_path.is_file():
        return dict(json.loads(meta_path.read_text()))
    data.mkdir(parents=True, exist_ok=True)
    corpus = corpus_fn()
    tokenizer = train_tokenizer(corpus.train, cfg)
    tokenizer.save_pretrained(str(data / "tokenizer"))
    n_train = pack_tokens(tokenizer, corpus.train, data / "train.bin")
    n_val = pack_tokens(tokenizer, corpus.val, data / "val.bin")
    meta = {
        "train_tokens": n_train,
        "val_tokens": n_val,
        "manifest": corpus.manifest,
        "train_files": len(corpus.train),
        "val_files": len(corpus.val),
    }
    (data / "manifest.json").write_text(json.dumps(corpus.manifest, indent=2, sort_keys=True))
    meta_path.write_text(json.dumps({k: v for k, v in meta.items() if k != "manifest"}, indent=2))
    return meta


def pretrain(
    out_dir: str | Path,
    corpus_fn: Callable[[], Corpus],
    cfg: PretrainConfig,
    on_log: Callable[[dict[str, Any]], None] | None = None,
    stop_after: int | None = None,
) -> PretrainResult:
    """Run (or resume) pretraining into `out_dir`; the finished model is `out_dir/model`.
    `stop_after` ends the run at that step after its checkpoint, as a kill would (for tests)."""
    out = Path(out_dir)
    meta = prepare_data(out, corpus_fn, cfg)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(out / "data" / "tokenizer"))
    train = np.memmap(out / "data" / "train.bin", dtype=np.uint16, mode="r")
    val = np.memmap(out / "data" / "val.bin", dtype=np.uint16, mode="r")
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    torch.manual_seed(cfg.seed)
    model: Any = LlamaForCausalLM(lm_config(cfg, tokenizer))
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.1, betas=(0.9, 0.95))
    step, tokens, seconds = 0, 0, 0.0
    ckpt = out / "checkpoint"
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
    log_path = out / "pretrain_log.jsonl"

    def log(ev: dict[str, Any]) -> None:
        with log_path.open("a") as fh:
            fh.write(json.dumps({"time": time.time(), **ev}) + "\n")
        if on_log:
            on_log(ev)

    def save(val_loss: float) -> None:
        with atomic_directory(ckpt) as tmp:
            save_model(model, str(tmp / "model.safetensors"))  # handles the tied embeddings
            tensors, ometa = optimizer_to_safetensors(opt.state_dict())
            save_file(tensors, str(tmp / "optimizer.safetensors"))
            (tmp / "optimizer.json").write_text(json.dumps(ometa))
            state = {"step": step, "tokens": tokens, "seconds": seconds, "val_loss": val_loss}
            (tmp / "state.json").write_text(json.dumps(state))

    model.train()
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if cuda
        else torch.autocast("cpu", enabled=False)
    )
    val_loss = float("nan")
    budget = cfg.minutes * 60 if cfg.minutes else float("inf")
    t_start = time.perf_counter() - seconds
    while step < cfg.steps and (time.perf_counter() - t_start) < budget:
        x = _batch(train, step, cfg.seed, cfg).to(device)
        for g in opt.param_groups:
            g["lr"] = _lr(step, cfg)
        with autocast:
            loss = model(input_ids=x[:, :-1], labels=x[:, :-1]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        tokens += x[:, :-1].numel()
        seconds = time.perf_counter() - t_start
        if step % 10 == 0:
            log(
                {
                    "event": "step",
                    "step": step,
                    "loss": float(loss),
                    "tokens": tokens,
                    "tokens_per_s": tokens / max(seconds, 1e-9),
                    "lr": _lr(step, cfg),
                }
            )
        if step % cfg.eval_every == 0:
            val_loss = eval_loss(model, val, cfg, device)
            log({"event": "eval", "step": step, "val_loss": val_loss, "tokens": tokens})
        if step % cfg.checkpoint_every == 0:
            save(val_loss)
            log({"event": "checkpoint", "step": step})
            if stop_after is not None and step >= stop_after:
                return PretrainResult("", step, tokens, seconds, val_loss, 0)
    val_loss = eval_loss(model, val, cfg, device)
    save(val_loss)
    final = out / "model"
    params = sum(p.numel() for p in model.parameters())
    card = {
        "kind": "repo2lora default base model",
        "architecture": "llama",
        "params": params,
        "config": asdict(cfg),
        "tokens_seen": tokens,
        "steps": step,
        "wall_seconds": round(seconds, 1),
        "hardware": torch.cuda.get_device_name(0) if cuda else f"cpu x{os.cpu_count()}",
        "held_out_loss_nats_per_token": val_loss,
        "data": {k: v for k, v in meta.items()},
        "data_manifest_file": "manifest.json",
    }
    with atomic_directory(final) as tmp:
        model.to(torch.float32).save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        (tmp / "model_card.json").write_text(json.dumps(card, indent=2, sort_keys=True))
        shutil.copy(out / "data" / "manifest.json", tmp / "manifest.json")
    log({"event": "done", "step": step, "val_loss": val_loss, "tokens": tokens})
    return PretrainResult(str(final), step, tokens, seconds, val_loss, params)
