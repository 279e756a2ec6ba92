"""`repo2lora dataset build|pack`: the hypernetworks' training data (static, evolution and
cross-file line tasks with their encodings, and a manifest) from local git repositories, and a
copy of it without vectors that travels."""

from __future__ import annotations

import argparse
from pathlib import Path

from repo2lora.cli.output import print_json, progress_bars


def cmd_dataset_build(args: argparse.Namespace) -> int:
    from repo2lora.models.loading import describe_base_model, load_base_model
    from repo2lora.tasks.dataset_build import DatasetConfig, build_dataset

    info = describe_base_model(args.model)
    # in a log (a build of 100 repositories runs for many minutes): a line per tenth of them
    with progress_bars(not args.json, log=("repositories",)) as bar:
        res = build_dataset(
            args.repos,
            args.out,
            info.model_key,
            lambda: load_base_model(info),
            DatasetConfig(max_commits=args.max_commits),
            pool_files=[Path(p) for p in args.pool] if args.pool is not None else None,
            reserved=args.reserved,
            progress=bar,
        )
    if args.json:
        print_json(res.__dict__)
        return 0
    print(f"dataset {res.out}: {len(res.repositories)} repositories in {res.seconds:.0f}s")
    print(f"  built {len(res.built)}, reused {len(res.cached)}, skipped {len(res.skipped)}")
    print("  tasks " + ", ".join(f"{k} {v}" for k, v in res.counts.items()))
    for s in res.skipped:
        print(f"  skipped {s['name']}: {s['reason']}")
    return 0


def cmd_dataset_pack(args: argparse.Namespace) -> int:
    from repo2lora.tasks.dataset_build import pack_dataset

    res = pack_dataset(args.dataset, args.out, texts=not args.no_texts)
    if args.json:
        print_json(res)
        return 0
    what = "tasks, names and chunk texts" if res["texts"] else "tasks and names"
    print(f"packed {res['repositories']} repositories ({what}, no vectors) into {res['out']}")
    return 0


def add_dataset(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ds = sub.add_parser("dataset", help="build hypernetwork training data from repositories")
    ds_sub = ds.add_subparsers(dest="dataset_command", required=True, metavar="COMMAND")
    db = ds_sub.add_parser(
        "build",
        help="static, evolution and cross-file line tasks with their encodings, and a manifest",
        description="Per repository (a work tree or a bare git directory): the assertion tasks "
        "at its commit, the walk of its last commits with the assertions each adds, and "
        "cross-file line-completion tasks, with the chunk vectors (encoded once, cached) and a "
        "manifest (name, URL, commit, task counts, file hashes). Repositories reserved for "
        "evaluation are refused. Resumable: run it again with the same --out.",
    )
    db.add_argument("--repos", nargs="+", required=True, metavar="PATH", help="git repositories")
    db.add_argument("--out", required=True, help="the dataset directory")
    db.add_argument("--model", help="base model (default: the embedded default)")
    db.add_argument("--max-commits", type=int, default=30, help="walk: at most this many commits")
    db.add_argument(
        "--pool",
        nargs="*",
        metavar="TSV",
        help="pool lists giving URLs and commits (default: data/hypernet-pool/*.tsv)",
    )
    db.add_argument("--reserved", help="the evaluation-reserved list (default: ../shared/...)")
    db.add_argument("--json", action="store_true", help="print one JSON summary for scripts")
    db.set_defaults(func=cmd_dataset_build)
    dp = ds_sub.add_parser(
        "pack",
        help="a copy of a built dataset without vectors, with its source texts (to carry)",
        description="Copies a built dataset's manifest and each repository's tasks, chunk "
        "paths and names, and the snapshot's chunk texts read from the source repositories, "
        "without the chunk vectors: small enough to carry to a lent GPU machine, and needing "
        "none of the repositories there. A shared LoRA (`train --generator shared-lora "
        "--dataset`) and `benchmark.finetune_ceiling` give the same results on it.",
    )
    dp.add_argument("dataset", help="a built dataset (`repo2lora dataset build`)")
    dp.add_argument("--out", required=True, help="the directory to create")
    dp.add_argument(
        "--no-texts", action="store_true", help="leave out the chunk texts (a training dataset)"
    )
    dp.add_argument("--json", action="store_true", help="print one JSON summary for scripts")
    dp.set_defaults(func=cmd_dataset_pack)
