"""`repo2lora train`: train a generator on repositories' assertion tasks."""

from __future__ import annotations

import argparse
import sys

from repo2lora.cli.arguments import GENERATORS, target_modules_arg
from repo2lora.cli.output import print_json


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from repo2lora.train import (
        SHARED_LORA,
        check_baseline_init,
        check_init_from,
        eval_sample,
        train_generator,
        train_shared_lora,
        training_inputs,
        training_repositories,
    )
    from repo2lora.training.loop import StepLog
    from repo2lora.training.shared import TrainConfig
    from repo_encoder.errors import UserError

    baseline = args.generator == SHARED_LORA
    if baseline and args.init_from:  # before anything (a suite) is written
        from repo2lora.models.loading import describe_base_model

        check_baseline_init(
            args.init_from,
            describe_base_model(args.model).model_key,
            args.rank,
            args.target_modules or TrainConfig.target_modules,
        )
    if not baseline:
        check_init_from(args.generator, args.init_from)  # before anything (a suite) is written
    for flag, value, least in (
        ("--names-rank", args.names_rank, 2),
        ("--names-max", args.names_max, 1),
        ("--names-contexts", args.names_contexts, 0),
    ):
        if value is not None and value < least:
            raise UserError(f"{flag} must be at least {least} (got {value})")
    if not args.name_weight > 0:
        raise UserError(f"--name-weight must be above 0 (got {args.name_weight})")
    if args.threads:
        torch.set_num_threads(args.threads)
    paths = training_repositories(
        args.repos, args.out, args.synthetic, args.synthetic_commits, args.seed, args.dataset
    )
    kind = "code2lora-static" if baseline else args.generator  # the baseline's tasks: static
    # the shared LoRA reads tasks only: any base model trains on any built dataset
    base, data = training_inputs(
        paths, args.model, kind, args.seed, args.dataset, vectors=not baseline
    )
    cfg = TrainConfig(
        generator=args.generator,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        rank=args.rank,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        eval_every=args.eval_every,
        tbptt_window=args.tbptt_window,
        standardize=args.standardize,
        target_end={"auto": None, "on": True, "off": False}[args.target_end],
        names_select=args.names_select,
        **{
            k: v
            for k, v in (
                ("names_rank", args.names_rank),
                ("names_max", args.names_max),
                ("names_contexts", args.names_contexts),
            )
            if v is not None
        },
        name_weight=args.name_weight,
        init_from=args.init_from,
        **({} if args.init_lr_scale is None else {"init_lr_scale": args.init_lr_scale}),
        target_modules=args.target_modules or TrainConfig.target_modules,
        precision=args.precision,
        gradient_checkpointing=args.gradient_checkpointing,
    )
    card = {
        "data_manifest": data.manifest,
        "training_repositories": data.repositories,
        "train_examples": len(data.train),
    }
    if baseline:

        def on_lora_step(step: int, loss: float) -> None:
            if step % max(1, args.steps // 10) == 0 or step == args.steps:
                print(f"step {step}/{args.steps}  loss {loss:.4f}", file=sys.stderr)

        done = train_shared_lora(base, data, args.out, cfg, card, on_lora_step)
        if args.json:
            print_json(done)
        else:
            print(
                f"trained {done['steps']} steps, final loss {done['final_loss']:.4f}, "
                f"{done['seconds']:.1f}s"
            )
            print(f"shared LoRA baseline {args.out} (score it: bench --generator-dir)")
        return 0
    show = not args.json and sys.stderr.isatty()

    def on_step(s: StepLog) -> None:
        if show or s.step % max(1, args.steps // 10) == 0:
            print(
                f"step {s.step}/{args.steps}  loss {s.loss:.4f}  {s.tokens_per_s:.0f} tok/s  "
                f"{s.peak_memory_mb:.0f} MB",
                file=sys.stderr,
            )

    res = train_generator(
        base,
        data,
        paths,
        args.out,
        cfg,
        eval_examples=eval_sample(data.test, args.eval_examples, args.seed),
        resume=not args.no_resume,
        on_step=on_step if not args.json else None,
        card=card,
    )
    summary = {**res.__dict__, "train_examples": len(data.train), "test_examples": len(data.test)}
    if args.json:
        print_json(summary)
    else:
        print(f"trained {res.steps} steps, {res.tokens} target tokens, {res.seconds:.1f}s")
        if res.eval:
            print(
                f"held-out target NLL: {res.eval['nll_generated']:.3f} with generated adapters, "
                f"{res.eval['nll_base']:.3f} base model"
            )
        print(f"hypernetwork {res.out_dir}")
    return 0


def add_train(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from repo2lora.adapters.defaults import DEFAULT_RANK

    t = sub.add_parser(
        "train",
        help="train a hypernetwork on repositories' assertion tasks (runs under accelerate too)",
        description="Train a generator end to end on the LM loss of assertion targets: the base "
        "model frozen, one generated adapter per sample. Resumes from the last checkpoint in "
        "--out. Works unchanged under `accelerate launch -m repo2lora train ...`.",
    )
    t.add_argument(
        "--generator",
        choices=[*GENERATORS, "shared-lora"],
        default="code2lora-static",
        help="shared-lora: the baseline the hypernetworks are measured against, one plain LoRA "
        "trained on the same static tasks (bench --generator-dir scores it); code2lora-names: "
        "code2lora-evo plus a names memory on the LM head, written from "
        "the names each repository defines; shine: the base model reads the source text "
        "(memory tokens); dnd: a decoder trained by MSE on per-repository LoRA checkpoints it "
        "first collects",
    )
    t.add_argument("--out", required=True, help="output directory (checkpoints, log, result)")
    t.add_argument("--repos", nargs="*", default=[], help="training repositories")
    t.add_argument(
        "--dataset",
        metavar="DIR",
        help="train on a built dataset (`repo2lora dataset build`) instead of --repos: static "
        "and cross-file line tasks, or the walks for code2lora-evo",
    )
    t.add_argument("--synthetic", type=int, default=0, help="also generate N synthetic repos")
    t.add_argument("--synthetic-commits", type=int, default=8)
    t.add_argument("--model", help="base model (default: the embedded default)")
    t.add_argument("--steps", type=int, default=200)
    t.add_argument("--batch-size", type=int, default=8)
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument("--rank", type=int, default=DEFAULT_RANK)
    t.add_argument("--tbptt-window", type=int, default=16)
    t.add_argument(
        "--standardize",
        action="store_true",
        help="centre and scale chunk vectors by the training corpus' statistics (stored in the "
        "checkpoint); spreads adapters across repositories, overfits small training sets",
    )
    t.add_argument(
        "--target-end",
        choices=("auto", "on", "off"),
        default="auto",
        help='also train on what closes each target (")" after `pytest.raises(X`, else the end '
        "of the line), so completions learn where to stop; auto: on for code2lora-names only",
    )
    t.add_argument(
        "--names-select",
        choices=("score", "prior"),
        default="score",
        help="code2lora-names: which names its memory holds: best learned score first "
        "(score), or exceptions first, then by how many chunks mention them (prior)",
    )
    t.add_argument(
        "--names-rank",
        type=int,
        metavar="R",
        help="code2lora-names: the rank of its LM-head pair, which bounds how many distinct name "
        "tokens its memory raises (default 64)",
    )
    t.add_argument(
        "--names-max",
        type=int,
        metavar="N",
        help="code2lora-names: the most names its memory holds (default 48)",
    )
    t.add_argument(
        "--names-contexts",
        type=int,
        metavar="K",
        help="code2lora-names: read up to K uses of each name held in the snapshot's code; the "
        "base model's state before them keys the name's first token (default 0: none)",
    )
    t.add_argument(
        "--name-weight",
        type=float,
        default=1.0,
        metavar="W",
        help="code2lora-names: target tokens that spell a name the repository defines count W "
        "times in the loss (default 1: every token once)",
    )
    t.add_argument(
        "--init-from",
        metavar="STATIC_CHECKPOINT",
        help="code2lora-evo: start the snapshot encoder and LoRA head from this trained "
        "code2lora-static checkpoint (h_0 is then the static state); code2lora-names: from a "
        "code2lora-static or code2lora-evo checkpoint (the GRU step too); code2lora-static: "
        "go on training a code2lora-static checkpoint (e.g. with --target-end on); shared-lora: "
        "go on training a shared-lora directory",
    )
    t.add_argument(
        "--init-lr-scale",
        type=float,
        help="with --init-from: the copied encoder and head learn at this x --lr (0: frozen, "
        "only the GRU step learns; default 0.1)",
    )
    t.add_argument(
        "--checkpoint-every", type=int, default=50, help="checkpoint every N steps (0: at the end)"
    )
    t.add_argument(
        "--eval-every",
        type=int,
        default=50,
        help="held-out evaluation every N steps (0: at the end)",
    )
    t.add_argument(
        "--eval-examples",
        type=int,
        default=512,
        help="held-out evaluation on at most N of the held-out examples (a seeded sample; 0: all)",
    )
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's)")
    t.add_argument("--no-resume", action="store_true", help="ignore existing checkpoints")
    target_modules_arg(t, "the generated adapters adapt")
    t.add_argument(
        "--precision",
        choices=["auto", "bf16", "fp32"],
        default="auto",
        help="bf16 autocast with the frozen base in bf16, or fp32 (default auto: bf16 on GPUs "
        "that have it)",
    )
    t.add_argument(
        "--gradient-checkpointing",
        choices=["auto", "on", "off"],
        default="auto",
        help="recompute the frozen base's layers in the backward pass instead of keeping their "
        "activations (default auto: on with a GPU)",
    )
    t.add_argument("--json", action="store_true", help="print one JSON object for scripts")
    t.set_defaults(func=cmd_train)
