"""`repo2lora corpus build|subset` and `repo2lora pretrain`: the embedded default's base model,
from its corpus to its weights."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from repo2lora.cli.output import print_json, progress_bars
from repo_encoder.errors import UserError


def cmd_corpus(args: argparse.Namespace) -> int:
    from repo2lora.pretrain.corpus import DEFAULT_PACKAGE_LIST, CorpusConfig, build_corpus

    if args.workers < 1:
        raise UserError(f"--workers must be at least 1 (got {args.workers})")
    cfg = CorpusConfig(
        package_list=None if args.no_pypi else (args.packages or str(DEFAULT_PACKAGE_LIST)),
        reserved=args.reserved,
        stdlib=not args.no_stdlib,
        installed=not args.no_installed,
        installed_only=tuple(args.installed_only.split(",")) if args.installed_only else None,
        heldout_share=args.heldout_share,
        seed=args.seed,
        cache=args.cache,
    )
    with progress_bars(not args.json, log=("extract", "deduplicate")) as bar:
        res = build_corpus(args.out, cfg, bar, workers=args.workers)
    if args.json:
        print_json(res.__dict__)
        return 0
    mb = {k: v / 1e6 for k, v in res.bytes.items()}
    print(f"corpus {res.out}: {res.distributions} distributions in {res.seconds:.0f}s")
    print(f"  train    {res.files['train']} files, {mb['train']:.1f} MB")
    print(f"  held-out {res.files['heldout']} files, {mb['heldout']:.1f} MB")
    print(f"  dropped  {', '.join(f'{k} {v}' for k, v in sorted(res.dropped.items())) or 'none'}")
    if res.refused_reserved or res.reserved_files_dropped:
        print(
            f"  reserved {len(res.refused_reserved)} distributions refused, "
            f"{sum(res.reserved_files_dropped.values())} vendored files dropped"
        )
    for f in res.failed:
        print(f"  failed   {f['distribution']}: {f['error']}")
    return 0


def cmd_corpus_subset(args: argparse.Namespace) -> int:
    from repo2lora.pretrain.corpus import subset_corpus

    res = subset_corpus(
        args.corpus, args.out, int(args.train_mb * 1e6), int(args.heldout_mb * 1e6), args.seed
    )
    print_json(res)
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    import torch

    from repo2lora.pretrain.config import PretrainConfig
    from repo2lora.pretrain.plan import run_config
    from repo2lora.pretrain.train_lm import pretrain

    if args.threads:
        torch.set_num_threads(args.threads)
    fresh = PretrainConfig(
        vocab_size=args.vocab,
        context=args.context,
        batch_size=args.batch_size,
        minutes=args.minutes,
        eval_every=args.eval_every,
        checkpoint_every=args.eval_every,
        precision=args.precision,
        compile=args.compile,
    )
    cfg, plan = run_config(
        args.out,
        fresh,
        warm_start=args.warm_start,
        hidden=args.hidden,
        layers=args.layers,
        intermediate=args.intermediate,
        steps=args.steps,
        tokens=args.tokens,
        budget_minutes=args.budget_minutes,
        flops=args.flops,
        max_params=args.max_params,
    )

    def on_log(ev: dict[str, Any]) -> None:
        if args.json:
            return
        if ev["event"] == "eval":
            print(
                f"step {ev['step']}  held-out {ev['bits_per_byte']:.3f} bits/byte  "
                f"{ev['val_loss']:.3f} nats/token",
                file=sys.stderr,
            )
        elif ev["event"] == "step" and ev["step"] % 100 == 0:
            print(
                f"step {ev['step']}  loss {ev['loss']:.3f}  {ev['tokens_per_s']:.0f} tok/s",
                file=sys.stderr,
            )

    if plan and not args.json:
        print(f"plan: {plan}", file=sys.stderr)
    res = pretrain(
        args.out,
        args.corpus,
        cfg,
        on_log,
        finish_at_stop=args.finish_at_stop,
        warm_start=args.warm_start,
    )
    if args.json:
        print_json({**res.__dict__, "plan": plan})
    elif res.out_dir:
        print(
            f"pretrained {res.params / 1e6:.1f}M parameters: {res.steps} steps, "
            f"{res.tokens_seen} tokens, {res.seconds / 60:.1f} min, held-out "
            f"{res.bits_per_byte:.3f} bits/byte"
        )
        print(f"model {res.out_dir}")
    else:
        print(
            f"paused at step {res.steps}/{cfg.steps} ({res.tokens_seen} tokens, held-out "
            f"{res.bits_per_byte:.3f} bits/byte); run the same command again to continue"
        )
    return 0


def add_corpus(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    co = sub.add_parser(
        "corpus",
        help="build the pretraining corpus (Python source from pinned, named sources)",
    )
    co_sub = co.add_subparsers(dest="corpus_command", required=True, metavar="COMMAND")
    cb = co_sub.add_parser(
        "build",
        help="gather, check, deduplicate and split Python source into a corpus directory",
        description="Python source from the standard library, the installed environment and "
        "the pinned PyPI list (downloaded and unpacked, never installed), each file UTF-8, at "
        "most 1 MB and parsing; reserved distributions dropped wherever they appear; exact and "
        "near duplicates removed; split into train / held-out by distribution. Resumable: run "
        "it again with the same --out after an interruption.",
    )
    cb.add_argument("--out", required=True, help="the corpus directory to create")
    cb.add_argument(
        "--packages",
        default=None,
        help="pinned name==version list (default: data/corpus-packages.txt of the checkout)",
    )
    cb.add_argument(
        "--reserved",
        default=None,
        help="the evaluation-reserved list (default: "
        "../shared/eval-reserved.tsv beside the checkout)",
    )
    cb.add_argument(
        "--cache", default=None, help="keep downloads here (default: inside OUT.partial)"
    )
    cb.add_argument("--heldout-share", type=float, default=0.06)
    cb.add_argument("--seed", type=int, default=0)
    cb.add_argument("--no-pypi", action="store_true", help="leave out the pinned PyPI list")
    cb.add_argument("--no-stdlib", action="store_true", help="leave out the standard library")
    cb.add_argument("--no-installed", action="store_true", help="leave out installed packages")
    cb.add_argument(
        "--installed-only",
        metavar="NAME,...",
        default=None,
        help="of the installed packages, keep only these distributions",
    )
    cb.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="processes that check and sign local files (default: one per core)",
    )
    cb.add_argument("--json", action="store_true", help="print one JSON summary for scripts")
    cb.set_defaults(func=cmd_corpus)
    cs = co_sub.add_parser(
        "subset",
        help="a seeded sample of a corpus, same format (e.g. to carry to a GPU machine)",
    )
    cs.add_argument("corpus", help="a corpus directory")
    cs.add_argument("--out", required=True, help="the subset directory to create")
    cs.add_argument("--train-mb", type=float, required=True)
    cs.add_argument("--heldout-mb", type=float, default=2.0)
    cs.add_argument("--seed", type=int, default=0)
    cs.set_defaults(func=cmd_corpus_subset)


def add_pretrain(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    pt = sub.add_parser(
        "pretrain",
        help="pretrain a Python code LM and its BPE tokenizer on a corpus (CPU or CUDA)",
        description="Train a byte-level BPE tokenizer on the corpus' train split and a "
        "Llama-architecture LM sized from the budget (about 20 tokens per parameter), reporting "
        "held-out bits per byte. Resumable: run it again with the same --out (only --minutes "
        "may change).",
    )
    pt.add_argument("--out", required=True, help="run directory (data, checkpoint, model)")
    pt.add_argument("--corpus", required=True, help="a corpus directory (repo2lora corpus build)")
    pt.add_argument(
        "--minutes",
        type=float,
        default=0.0,
        help="stop this invocation after M minutes (resume later)",
    )
    pt.add_argument(
        "--tokens", type=int, default=0, help="planned training tokens (sizes the model)"
    )
    pt.add_argument(
        "--budget-minutes",
        type=float,
        default=0.0,
        help="size the model for this much compute (default: --minutes)",
    )
    pt.add_argument(
        "--flops",
        type=float,
        default=None,
        help="training FLOP/s of this machine (default: measured)",
    )
    pt.add_argument(
        "--max-params", type=int, default=None, help="cap the budget-sized model's parameters"
    )
    pt.add_argument("--vocab", type=int, default=8192)
    pt.add_argument("--hidden", type=int, default=0, help="size by hand instead of the budget")
    pt.add_argument("--layers", type=int, default=0)
    pt.add_argument("--intermediate", type=int, default=0, help="default: 8/3 x hidden")
    pt.add_argument("--steps", type=int, default=0, help="with --hidden: training steps")
    pt.add_argument("--context", type=int, default=512)
    pt.add_argument("--batch-size", type=int, default=16)
    pt.add_argument("--eval-every", type=int, default=250)
    pt.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto")
    pt.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA)")
    pt.add_argument(
        "--warm-start",
        metavar="DIR",
        help="start a new --out from committed weights (python -m repo2lora.pretrain.export "
        "--checkpoint RUN), with their tokenizer, config and step; the optimizer starts fresh",
    )
    pt.add_argument(
        "--finish-at-stop",
        action="store_true",
        help="write the model when --minutes ends the run early (one-shot GPU runs)",
    )
    pt.add_argument("--threads", type=int, default=0)
    pt.add_argument("--json", action="store_true")
    pt.set_defaults(func=cmd_pretrain)
