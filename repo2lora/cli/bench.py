"""`repo2lora bench`: the RepoPeftBench-style benchmark (the only command that imports the
`benchmark` package, lazily)."""

from __future__ import annotations

import argparse
from pathlib import Path

from repo2lora.cli.arguments import target_modules_arg
from repo2lora.cli.output import note, print_json


def cmd_bench(args: argparse.Namespace) -> int:
    # the only place outside benchmark/ that imports it, and only when `bench` runs
    from benchmark.config import bench_config, method_list, replace_eval, scored_suite
    from benchmark.markdown import render_markdown
    from benchmark.progress import progress_display
    from benchmark.run import run_bench

    generator_dirs = tuple(args.generator_dir or ())
    test_repos = tuple(args.test_repos) if args.test_repos else None
    cfg = bench_config(
        scored_suite(tuple(args.suite), generator_dirs, test_repos or ()),
        tracks=("static", "evo") if args.track == "both" else (args.track,),
        methods=method_list(args.methods),
        model=args.model,
        seed=args.seed,
        n_repos=args.repos,
        n_commits=args.commits,
        hypernet_steps=args.steps,
        evo_steps=args.evo_steps or args.steps,
        evo_init=args.evo_init,
        tbptt_window=args.tbptt_window,
        lora_steps=args.lora_steps,
        per_repo_steps=args.per_repo_steps,
        max_commits=args.max_commits,
        max_eval_tasks=args.max_tasks,
        threads=args.threads,
        test_repos=test_repos,
        target_modules=args.target_modules,
        generator_dirs=generator_dirs,
        allow_contaminated=args.allow_contaminated,
        with_tests=False if args.no_with_tests else None,
    )
    if args.prompt_tokens:
        cfg = replace_eval(cfg, prompt_tokens=args.prompt_tokens)
    log = (lambda line: None) if args.quiet else note
    with progress_display(not args.json and not args.quiet) as bar:
        report = run_bench(cfg, Path(args.out), progress=bar, log=log)
    if args.json:
        print_json({k: v for k, v in report.items() if k != "records"})
        return 0
    print(render_markdown(report))
    print(f"report: {Path(args.out) / 'bench.md'}, {Path(args.out) / 'bench.json'}, plots/")
    return 0


def add_bench(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    b = sub.add_parser(
        "bench",
        help="benchmark every method on assertion completion (RepoPeftBench-style)",
        description="Mine assertion tasks, split repositories (cross-repo) and test functions "
        "(in-repo), train the hypernetworks and LoRA baselines on the training split, and score "
        "every method on the same tasks: strict EM, edit similarity, target NLL, prompt tokens, "
        "seconds. Writes bench.json, bench.md and plots/ into --out; an interrupted run resumes.",
    )
    b.add_argument(
        "--suite",
        nargs="+",
        default=["ci"],
        metavar="ci|quick|synthetic|PATH",
        help="`ci` (small synthetic suite, minutes), `quick` (smaller, shorter training: the "
        "test suite's, about a minute), `synthetic` (larger), or local git repositories "
        "(default: ci)",
    )
    b.add_argument("--track", choices=["static", "evo", "both"], default="both")
    b.add_argument(
        "--methods",
        default="all",
        help="comma-separated: constant,base,rag,shared-lora,per-repo-lora,code2lora-static,"
        "code2lora-evo,code2lora-names,shine,dnd (default: all)",
    )
    b.add_argument("--out", required=True, help="output directory (cache, models, report)")
    b.add_argument(
        "--model",
        help="base model (default: tiny-random for the synthetic suites, the embedded default "
        "for repository paths)",
    )
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--steps", type=int, help="hypernetwork training steps (default: the suite's)")
    b.add_argument(
        "--evo-steps",
        type=int,
        help="evolving hypernetwork training steps (default: --steps); each step takes up to "
        "4 x batch tasks per window, so it costs several static steps",
    )
    b.add_argument(
        "--evo-init",
        choices=("static", "scratch"),
        help="where the evolving hypernetwork starts: the trained static one's encoder and "
        "head (default) or fresh weights",
    )
    b.add_argument(
        "--tbptt-window",
        type=int,
        help="evolving training: commits backpropagated through per window (default 16)",
    )
    b.add_argument("--lora-steps", type=int, help="shared LoRA training steps")
    b.add_argument("--per-repo-steps", type=int, help="per-repository LoRA training steps")
    b.add_argument("--repos", type=int, help="synthetic suites: number of repositories")
    b.add_argument("--commits", type=int, help="synthetic suites: commits per repository")
    b.add_argument("--max-commits", type=int, help="evolution walk: at most this many commits")
    b.add_argument(
        "--test-repos",
        nargs="+",
        metavar="PATH",
        help="repositories held out entirely (cross-repo); the --suite paths train (default: "
        "a seeded quarter of the suite)",
    )
    b.add_argument(
        "--generator-dir",
        nargs="+",
        metavar="DIR",
        help="score these hypernetwork checkpoints (`default`: the shipped static and evolving "
        "ones) on the --test-repos/--suite repositories, training nothing; --methods base,rag "
        "run beside them",
    )
    b.add_argument(
        "--allow-contaminated",
        action="store_true",
        help="with --generator-dir: keep test repositories found in a training manifest, marked "
        "as contaminated in the report (default: refused)",
    )
    b.add_argument(
        "--no-with-tests",
        action="store_true",
        help="leave out the leakage rule's with-tests rows (rag+tests, code2lora-*+tests): "
        "about a third less evaluation",
    )
    b.add_argument("--max-tasks", type=int, help="evaluate at most N tasks per repository/track")
    b.add_argument("--prompt-tokens", type=int, help="prompt token budget of every method")
    b.add_argument("--threads", type=int, help="torch CPU threads (default 1)")
    target_modules_arg(b, "every LoRA method adapts")
    b.add_argument("-q", "--quiet", action="store_true", help="no progress or notes")
    b.add_argument("--json", action="store_true", help="print the report (no per-task records)")
    b.set_defaults(func=cmd_bench)
