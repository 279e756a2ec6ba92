"""Training throughput and the headline cost ratio, printed as JSON (a benchmark, not a test).

1. Tokens/s of one training step with generated per-sample LoRAs (functional hooks + the
   hypernetwork) against a plain peft LoRA step and a frozen forward+backward of the same base
   model, on the same batches. Target: functional-LoRA overhead <= 20%.
2. For each repository of a synthetic suite: a per-repository LoRA's wall time to its best
   held-out loss against the hypernetwork's one forward pass (encode + generate)."""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, get_peft_model

from benchmark.speed.scaffold import SpeedRun, run_speed_benchmark
from repo2lora.adapters.defaults import DEFAULT_ALPHA, DEFAULT_RANK
from repo2lora.hypernet.checkpoint import build_hypernet
from repo2lora.hypernet.static import HypernetConfig
from repo2lora.models import describe_base_model, load_base_model
from repo2lora.tasks.synthetic import generate_suite
from repo2lora.tasks.training_data import build_training_data
from repo2lora.training.baselines import LoraTrainConfig, fresh_copy, train_lora_baseline
from repo2lora.training.data import TaskExample, pad_vector_sets, per_example_nll, tokenize_examples
from repo2lora.training.hypernet_trainer import HypernetLoss, train_hypernet
from repo2lora.training.shared import TrainConfig


def _median_time(fn: Any, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def throughput(model_spec: str, batch: int, seq: int, repeats: int) -> dict[str, Any]:
    base = load_base_model(describe_base_model(model_spec))
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 256, (batch, seq), generator=g)
    labels = ids.clone()
    labels[:, : seq // 2] = -100  # loss on the second half, like a target after a prefix
    mask = torch.ones_like(ids)
    tokens = int((labels[:, 1:] != -100).sum())

    emb = base.model.get_input_embeddings()

    def frozen() -> None:
        x = emb(ids).detach().requires_grad_(True)
        logits = base.model(inputs_embeds=x, attention_mask=mask).logits
        per_example_nll(logits, labels).sum().backward()

    peft_model = get_peft_model(
        fresh_copy(base),
        LoraConfig(r=DEFAULT_RANK, lora_alpha=DEFAULT_ALPHA, target_modules=["q_proj", "v_proj"]),
    )

    def plain_lora() -> None:
        logits = peft_model(input_ids=ids, attention_mask=mask).logits
        per_example_nll(logits, labels).sum().backward()

    net = build_hypernet(
        HypernetConfig(input_dim=int(base.info.config.hidden_size), generator="code2lora-static"),
        base.info,
    )
    loss_module = HypernetLoss(net, base.model)
    vecs, vmask = pad_vector_sets(
        [torch.randn(200, int(base.info.config.hidden_size), generator=g) for _ in range(batch)]
    )
    batch_dict = {
        "input_ids": ids,
        "attention_mask": mask,
        "labels": labels,
        "n_target": (labels[:, 1:] != -100).sum(1).float(),
    }

    def generated() -> None:
        loss_module("static", vectors=vecs, mask=vmask, **batch_dict).backward()

    t_frozen = _median_time(frozen, repeats)
    t_plain = _median_time(plain_lora, repeats)
    t_gen = _median_time(generated, repeats)
    return {
        "model": model_spec,
        "batch": batch,
        "seq": seq,
        "target_tokens_per_step": tokens,
        "tokens_per_s": {
            "frozen_forward_backward": tokens / t_frozen,
            "peft_lora": tokens / t_plain,
            "generated_lora": tokens / t_gen,
        },
        "step_seconds_median": {
            "frozen_forward_backward": t_frozen,
            "peft_lora": t_plain,
            "generated_lora": t_gen,
        },
        "overhead_vs_frozen": t_gen / t_frozen - 1,
        "overhead_vs_peft_lora": t_gen / t_plain - 1,
        "target_max_overhead": 0.20,
    }


def adaptation_cost(n_repos: int, lora_steps: int, eval_every: int) -> dict[str, Any]:
    base = load_base_model(describe_base_model("tiny-random"))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        suite = [r.path for r in generate_suite(root / "suite", n_repos, 4, seed=11)]
        data = build_training_data(suite, base, evolving=False)
        hyper = train_hypernet(
            base,
            data.encodings,
            data.train,
            root / "hn",
            TrainConfig(steps=150),
            eval_examples=data.test,
        )
        from repo2lora.hypernet.checkpoint import load_hypernet

        net = load_hypernet(str(root / "hn"), base.info).net
        rows = []
        for name, enc in sorted(data.encodings.items()):
            t = time.perf_counter()
            with torch.no_grad():
                net.generate(net.encode(enc.vectors))
            gen_seconds = time.perf_counter() - t
            train = [e for e in data.train if e.repo == name]
            test = [e for e in data.test if e.repo == name]
            if not train or not test:
                continue
            best = (float("inf"), 0.0, 0)
            elapsed = 0.0
            for k in range(eval_every, lora_steps + 1, eval_every):
                res = train_lora_baseline(
                    base, train, root / f"lora-{name}-{k}", LoraTrainConfig(steps=k)
                )
                nll = _nll(base, root / f"lora-{name}-{k}", test)
                elapsed = res.seconds
                if nll < best[0]:
                    best = (nll, elapsed, k)
            rows.append(
                {
                    "repo": name,
                    "hypernet_generation_seconds": gen_seconds,
                    "per_repo_lora_seconds_to_best": best[1],
                    "per_repo_lora_steps_to_best": best[2],
                    "per_repo_lora_best_nll": best[0],
                    "ratio_lora_over_generation": best[1] / max(gen_seconds, 1e-9),
                }
            )
    ratios = [float(r["ratio_lora_over_generation"]) for r in rows]  # type: ignore[arg-type]
    return {
        "repos": rows,
        "median_ratio": statistics.median(ratios) if ratios else None,
        "hypernet_eval": hyper.eval,
    }


def _nll(base: Any, adapter_dir: Path, test: list[TaskExample]) -> float:
    from repo2lora.training.baselines import load_lora_baseline

    model = load_lora_baseline(base, adapter_dir)
    tb = tokenize_examples(base.tokenizer, test, 256, 32)
    with torch.no_grad():
        return float(
            per_example_nll(
                model(input_ids=tb.input_ids, attention_mask=tb.attention_mask).logits, tb.labels
            ).mean()
        )


def _options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", default="tiny-random,random-default")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--repos", type=int, default=3)
    p.add_argument("--lora-steps", type=int, default=120)


def _measure(run: SpeedRun) -> dict[str, Any]:
    a = run.args
    return {
        "throughput": [throughput(m, a.batch, a.seq, a.repeats) for m in a.models.split(",")],
        "adaptation_cost": adaptation_cost(a.repos, a.lora_steps, max(1, a.lora_steps // 4)),
    }


def main(argv: list[str] | None = None) -> int:
    return run_speed_benchmark("training", __doc__, _options, _measure, argv)


if __name__ == "__main__":
    sys.exit(main())
