"""Trains a Code2LoRA hypernetwork for a few minutes on this machine's accelerator, the way
`repo2lora train` does (bf16 autocast and activation checkpointing of the frozen base on CUDA,
chunk vectors encoded in batches on the device, DDP under `accelerate launch`), for a
random-init base model of a reference shape (`--shape`, e.g. Qwen2.5-Coder-0.5B's), and prints
one JSON object: step time, tokens per second, each process's peak memory beside the training
memory formula's estimate, and whether the loss fell.

Its repositories are synthetic and need no git, tree-sitter or SQLite (so a bare GPU machine with
torch, transformers, tokenizers, safetensors and accelerate runs it): each has its own function
and constant names, chunk texts that define them, and tasks whose targets are those names, so
the hypernetwork can only lower the loss by reading the repository's chunk vectors. Run it with
`scripts/train_on_device.sh` (which picks 1 or 2 processes)."""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, PretrainedConfig

from repo2lora.models.loading import BaseModelInfo, LoadedModel, model_identity
from repo2lora.models.presets import (
    PRESETS,
    REFERENCE_SHAPES,
    byte_tokenizer,
    preset_config,
    reference_config,
)
from repo2lora.training.data import RepoEncoding, TaskExample
from repo2lora.training.hypernet_trainer import train_hypernet
from repo2lora.training.placement import make_accelerator
from repo2lora.training.shared import TrainConfig
from repo_encoder.embed import EmbedConfig, embed_texts

# packages the device machine does not have: the run must not import them
NOT_ON_THE_DEVICE = (
    "peft",
    "tree_sitter",
    "tree_sitter_python",
    "git",
    "sqlite_utils",
    "pygls",
    "lsprotocol",
    "watchdog",
    "rich",
    "rapidfuzz",
    "bm25s",
    "matplotlib",
)
_SYLLABLES = ("ka", "lo", "mi", "zu", "re", "ta", "vo", "ne", "shi", "pa", "gu", "do", "fe")


def _name(rng: random.Random, parts: int) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(parts))


def synthetic_repos(
    n_repos: int, tasks_per_repo: int, prompt_chars: int, seed: int = 0
) -> tuple[dict[str, list[str]], list[TaskExample]]:
    """Chunk texts per repository and tasks (prompt: the repository's code, then a use of one
    of its names; target: the name and its call)."""
    texts: dict[str, list[str]] = {}
    examples: list[TaskExample] = []
    for r in range(n_repos):
        rng = random.Random(seed * 1000 + r)
        repo = f"repo{r:03d}"
        funcs = [f"{_name(rng, 2)}_{_name(rng, 2)}" for _ in range(6)]
        consts = [f"{_name(rng, 2).upper()}_{_name(rng, 1).upper()}" for _ in range(3)]
        chunks = [
            f"def {f}(value, limit={consts[i % 3]}):\n"
            f"    return [v for v in value if v < limit][: {i + 2}]\n"
            for i, f in enumerate(funcs)
        ]
        chunks += [f"{c} = {rng.randint(2, 99)}\n" for c in consts]
        texts[repo] = chunks
        body = "".join(chunks)
        for k in range(tasks_per_repo):
            f = funcs[k % len(funcs)]
            prefix = (body * (1 + prompt_chars // max(1, len(body))))[-prompt_chars:]
            prefix += f"\n\ndef use_{k}(items):\n    return "
            examples.append(TaskExample(repo, prefix, f"{f}(items, {consts[k % 3]})", -1, str(k)))
    return texts, examples


def build_base(shape: str, device: torch.device) -> LoadedModel:
    """A random-init model of `shape` (a reference shape or a preset), built on `device`."""
    config: PretrainedConfig = (
        reference_config(shape) if shape in REFERENCE_SHAPES else preset_config(PRESETS[shape])
    )
    with torch.random.fork_rng(devices=[]), device:
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config)
    model.eval().requires_grad_(False)
    ident = model_identity(config)
    info = BaseModelInfo(
        spec=shape,
        config=config,
        identity=ident,
        model_key=f"random:{shape}:{ident}",
        description=f"random-init {shape}-shaped model",
        untrained=True,
    )
    return LoadedModel(info, model, byte_tokenizer())


def _log(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def run(args: argparse.Namespace) -> dict[str, Any]:
    from accelerate.utils import broadcast_object_list

    acc = make_accelerator(args.precision)
    out = Path(args.out)
    t0 = time.perf_counter()
    base = build_base(args.shape, acc.device)
    build_s = time.perf_counter() - t0

    texts, examples = synthetic_repos(args.repos, args.tasks_per_repo, args.prompt_chars)
    t = time.perf_counter()
    embed = EmbedConfig(batch_size=args.encode_batch, gpu_batch_size=args.encode_batch)
    encodings = {
        r: RepoEncoding(r, embed_texts(base.model, base.tokenizer, chunks, embed))
        for r, chunks in texts.items()
    }
    encode_s = time.perf_counter() - t
    held_out = {r for i, r in enumerate(sorted(texts)) if i % 5 == 4}
    train = [e for e in examples if e.repo not in held_out]
    test = [e for e in examples if e.repo in held_out][: args.eval_tasks]

    def config(steps: int) -> TrainConfig:
        return TrainConfig(
            generator="code2lora-static",
            steps=steps,
            batch_size=args.batch_size,
            lr=args.lr,
            max_prompt_tokens=args.prompt_tokens,
            max_target_tokens=args.target_tokens,
            checkpoint_every=10**9,
            eval_every=steps,
            target_modules=tuple(args.target_modules.split(",")),
            precision=args.precision,
            gradient_checkpointing=args.gradient_checkpointing,
        )

    # a short calibration run sets the step count that fills the time budget (the main
    # process's measurement, so every process runs the same number of steps)
    calib = train_hypernet(
        base, encodings, train, out / "calibration", config(args.calibration_steps), resume=False
    )
    per_step = [calib.seconds / max(1, calib.steps)]
    per_step = broadcast_object_list(per_step)
    steps = int(min(args.max_steps, max(args.min_steps, args.minutes * 60 / per_step[0])))
    res = train_hypernet(base, encodings, train, out / "run", config(steps), test, resume=False)

    log = _log(out / "run") if acc.is_main_process else []
    start = next((e for e in log if e["event"] == "start"), {})
    step_log = [e for e in log if e["event"] == "step"]
    seconds = [e["seconds"] for e in step_log[1:]] or [e["seconds"] for e in step_log]
    losses = [e["loss"] for e in step_log]
    k = max(1, min(20, len(losses) // 5))
    peak = max((e["peak_memory_mb"] for e in step_log), default=0.0)
    estimate = start.get("estimate", {})
    est_mb = estimate.get("memory_bytes", {}).get("total", 0) / 2**20
    seq = args.prompt_tokens + args.target_tokens
    step_s = statistics.median(seconds) if seconds else float("nan")
    return {
        "device": torch.cuda.get_device_name(acc.device) if acc.device.type == "cuda" else "cpu",
        "processes": acc.num_processes,
        "shape": args.shape,
        "base_params": start.get("base_params"),
        "hypernet_params": start.get("hypernet_params"),
        "precision": start.get("precision"),
        "gradient_checkpointing": start.get("gradient_checkpointing"),
        "batch_per_process": -(-args.batch_size // acc.num_processes),
        "tokens_per_example": seq,
        "build_seconds": round(build_s, 2),
        "encoding": {
            "chunks": sum(len(c) for c in texts.values()),
            "seconds": round(encode_s, 3),
            "batch": args.encode_batch,
        },
        "steps": res.steps,
        "step_seconds_median": round(step_s, 4),
        "input_tokens_per_s": round(args.batch_size * seq / step_s, 1),
        "target_tokens_per_s_median": round(
            statistics.median(e["tokens_per_s"] for e in step_log[1:] or step_log), 1
        )
        if step_log
        else None,
        "peak_memory_mb": round(peak, 1),
        "memory_kind": start.get("memory_kind"),
        "estimated_memory_mb": round(est_mb, 1),
        "estimate_over_measured": round(est_mb / peak, 3) if peak else None,
        "estimate_terms_mb": {
            k2: round(v / 2**20, 1) for k2, v in estimate.get("memory_bytes", {}).items()
        },
        "loss_first": round(statistics.mean(losses[:k]), 4) if losses else None,
        "loss_last": round(statistics.mean(losses[-k:]), 4) if losses else None,
        "loss_fell": bool(losses) and statistics.mean(losses[-k:]) < statistics.mean(losses[:k]),
        "held_out": res.eval,
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "imported_but_not_on_the_device": sorted(m for m in NOT_ON_THE_DEVICE if m in sys.modules),
        "versions": {"torch": torch.__version__, "python": sys.version.split()[0]},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark.device_training", description=__doc__)
    p.add_argument("--shape", default="qwen2.5-coder-0.5b", help="a reference shape or preset")
    p.add_argument("--out", required=True)
    p.add_argument("--minutes", type=float, default=3.0, help="training time budget")
    p.add_argument("--min-steps", type=int, default=20)
    p.add_argument("--max-steps", type=int, default=2000)
    p.add_argument("--calibration-steps", type=int, default=4)
    p.add_argument("--repos", type=int, default=40)
    p.add_argument("--tasks-per-repo", type=int, default=24)
    p.add_argument("--eval-tasks", type=int, default=64)
    p.add_argument("--prompt-chars", type=int, default=900, help="repository code before a task")
    p.add_argument("--batch-size", type=int, default=16, help="global: examples per step")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--prompt-tokens", type=int, default=256)
    p.add_argument("--target-tokens", type=int, default=32)
    p.add_argument("--encode-batch", type=int, default=64)
    p.add_argument("--target-modules", default="attention")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    p.add_argument("--gradient-checkpointing", default="auto", choices=["auto", "on", "off"])
    args = p.parse_args(argv)
    report = run(args)
    if make_accelerator(args.precision).is_main_process:
        text = json.dumps(report, indent=2, sort_keys=True)
        Path(args.out, "device_training.json").write_text(text + "\n")
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
