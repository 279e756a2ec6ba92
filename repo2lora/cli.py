"""The `repo2lora` command: a thin shell over the library steps. Parses arguments, draws
progress bars, prints a summary (or JSON), and turns user mistakes into one-line errors."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from repo_encoder.errors import UserError

EXIT_USER_ERROR = 1
EXIT_INTERRUPTED = 130


def _quiet_libraries() -> None:
    import warnings

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", module="peft")
    warnings.filterwarnings("ignore", module="transformers")
    if "transformers" not in sys.modules:  # the same, read at its import (1-2 s not spent here:
        os.environ["TRANSFORMERS_VERBOSITY"] = "error"  # `serve` answers before it loads)
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
        return
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


@contextmanager
def progress_bars(enabled: bool) -> Iterator[Any]:
    """A ProgressFn that draws one rich bar per stage on stderr (nothing when disabled)."""
    if not enabled:
        yield lambda stage, done, total: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    labels = {"chunk": "chunking files", "encode": "encoding chunks", "update": "commits"}
    with Progress(
        TextColumn("{task.description:<16}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=False,
    ) as bars:
        tasks: dict[str, Any] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bars.add_task(labels.get(stage, stage), total=total)
            bars.update(tasks[stage], completed=done, total=total)

        yield update


def _note(msg: str) -> None:
    print(f"note: {msg}", file=sys.stderr)


def _print_json(obj: object) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))


def cmd_snapshot(args: argparse.Namespace) -> int:
    from repo2lora.hypernet.checkpoint import card_generator
    from repo2lora.snapshot import SnapshotConfig, snapshot_repository
    from repo_encoder.exclusion import ExclusionConfig

    cfg = SnapshotConfig(exclusion=ExclusionConfig(mode=args.exclusion))
    if args.generator in OTHER_GENERATORS or (
        args.hypernet and card_generator(args.hypernet) in OTHER_GENERATORS
    ):
        return _snapshot_other_generator(args, cfg)
    if args.generator is not None and args.hypernet:
        _check_generator(args.hypernet, args.generator)
    if args.generator == "code2lora-static" and not args.hypernet:
        from repo2lora.hypernet.checkpoint import shipped_hypernet_dir
        from repo2lora.models.loading import describe_base_model

        shipped = shipped_hypernet_dir(describe_base_model(args.model), "code2lora-static")
        args.hypernet = str(shipped) if shipped is not None else None
    with progress_bars(not args.json and not args.quiet and sys.stderr.isatty()) as bar:
        res = snapshot_repository(
            args.path,
            args.rev,
            model=args.model,
            hypernet=args.hypernet,
            config=cfg,
            progress=bar,
            target_modules=args.target_modules,
            generator=args.generator,
        )
    if args.json:
        _print_json(res.to_json())
        return 0
    if res.base_model_untrained:
        _note(f"base model: {res.base_model}")
    if res.hypernet_untrained:
        _note(f"{res.hypernet}; pass --hypernet with a trained checkpoint")
    skipped = ", ".join(f"{k.split('_', 1)[1]} {v}" for k, v in sorted(res.skipped.items()) if v)
    print(f"snapshot of {res.repo_root} at {res.commit[:12]}")
    print(f"  files      {res.files}" + (f"  (left out: {skipped})" if skipped else ""))
    print(
        f"  chunks     {res.chunks} ({res.unique_chunks} unique): "
        f"{res.cache_hits} cached, {res.encoded} encoded"
    )
    print(f"  base model {res.base_model}")
    print(f"  hypernet   {res.hypernet}")
    print(f"  seconds    {res.seconds['total']:.2f}")
    print(f"  adapter    {res.adapter_path}")
    return 0


OTHER_GENERATORS = ("shine", "dnd")  # generators whose input is not a chunk-vector state
HYPERNET_HELP = (
    "hypernetwork checkpoint directory; default: the trained code2lora-evo hypernetwork "
    "shipped with the embedded default model (for another --model, train one with "
    "`repo2lora train`)"
)


def _check_generator(spec: str, wanted: str) -> None:
    from repo2lora.hypernet.checkpoint import card_generator

    found = card_generator(spec)
    same_family = {found, wanted} <= {"code2lora-static", "code2lora-evo"}
    if found is not None and found != wanted and not same_family:
        raise UserError(
            f"{spec} holds a {found} generator, not {wanted}; drop --generator or pass a "
            f"{wanted} checkpoint"
        )


def _snapshot_other_generator(args: argparse.Namespace, cfg: Any) -> int:
    """`snapshot` with a SHINE or DnD generator: one adapter from the commit's chunk texts
    (SHINE) or chunk vectors (DnD), written where the Code2LoRA adapters go. These generators
    have no evolving state, so nothing is added to the state history."""
    from repo2lora.hypernet.checkpoint import build_hypernet, load_generator
    from repo2lora.hypernet.dnd import DndGenerator
    from repo2lora.hypernet.shine import ShineGenerator
    from repo2lora.models.loading import describe_base_model, load_base_model
    from repo2lora.snapshot import STATIC_KIND, adapter_dir
    from repo2lora.training.dnd_trainer import default_dnd_config, dnd_repo_adapter
    from repo2lora.training.hypernet_trainer import TrainConfig
    from repo2lora.training.shine_trainer import default_shine_config, shine_repo_adapter
    from repo_encoder.snapshot import open_repository, resolve_commit

    repo = open_repository(args.path)
    commit = resolve_commit(repo, args.rev).hexsha
    info = describe_base_model(args.model)
    if args.hypernet:
        if args.generator is not None:
            _check_generator(args.hypernet, args.generator)
        loaded = load_generator(args.hypernet, info, args.target_modules)
        net, key, description, untrained = (
            loaded.net,
            loaded.key,
            loaded.description,
            loaded.untrained,
        )
        base = load_base_model(info)
    else:
        base = load_base_model(info)
        choice = args.target_modules or TrainConfig.target_modules
        arch = (default_shine_config if args.generator == "shine" else default_dnd_config)(
            base, TrainConfig(generator=args.generator, target_modules=choice)
        )
        net = build_hypernet(arch, info)
        key = f"untrained-{args.generator}-{net.cfg.digest()[:12]}"
        description = f"UNTRAINED {args.generator} generator (seeded init)"
        untrained = True
    net.eval()
    out = adapter_dir(str(repo.working_tree_dir), commit, key, STATIC_KIND)
    if isinstance(net, ShineGenerator):
        res = shine_repo_adapter(args.path, base, net, out_dir=out, rev=commit, config=cfg)
    elif isinstance(net, DndGenerator):
        res = dnd_repo_adapter(args.path, base, net, out_dir=out, rev=commit, config=cfg)
    else:  # a checkpoint whose card said shine/dnd but whose config built something else
        raise UserError(f"{args.hypernet} is not a shine or dnd checkpoint")
    summary = {
        "repo_root": str(repo.working_tree_dir),
        "commit": res.commit,
        "generator": res.generator,
        "inputs": res.inputs,
        "seconds": {k: round(v, 4) for k, v in res.seconds.items()},
        "base_model": info.description,
        "base_model_untrained": info.untrained,
        "hypernet": description,
        "hypernet_key": key,
        "hypernet_untrained": untrained,
        "adapter_path": res.adapter_dir,
    }
    if args.json:
        _print_json(summary)
        return 0
    if untrained:
        _note(f"{description}; pass --hypernet with a trained checkpoint")
    print(f"snapshot of {repo.working_tree_dir} at {res.commit[:12]} ({res.generator})")
    print(f"  inputs     {res.inputs} chunks")
    print(f"  base model {info.description}")
    print(f"  hypernet   {description}")
    print(f"  seconds    {sum(res.seconds.values()):.2f}")
    print(f"  adapter    {res.adapter_dir}")
    return 0


def cmd_update(args: argparse.Namespace) -> int:
    from evo_state.store import move_aside_damaged
    from repo2lora.snapshot import SnapshotConfig
    from repo2lora.update import UpdateConfig, update_repository
    from repo_encoder.exclusion import ExclusionConfig
    from repo_encoder.snapshot import open_repository

    if args.rebuild:
        aside = move_aside_damaged(str(open_repository(args.path).working_tree_dir))
        if aside is not None:
            _note(f"the old state database was moved to {aside}; rebuilding")
    cfg = UpdateConfig(
        snapshot=SnapshotConfig(exclusion=ExclusionConfig(mode=args.exclusion)),
        first_parent=not args.all_parents,
        max_replay=args.max_replay,
    )
    with progress_bars(not args.json and not args.quiet and sys.stderr.isatty()) as bar:
        res = update_repository(
            args.path,
            args.rev,
            model=args.model,
            hypernet=args.hypernet,
            config=cfg,
            start=args.start,
            worktree=args.worktree,
            progress=bar,
            target_modules=args.target_modules,
        )
    if args.json:
        _print_json(res.to_json())
        return 0
    if res.base_model_untrained:
        _note("the base model is an UNTRAINED placeholder (pass --model for a real one)")
    if res.hypernet_untrained:
        _note("the hypernetwork is UNTRAINED (pass --hypernet with a trained checkpoint)")
    if res.resumed_from and not res.steps:
        print(f"up to date at {res.target[:12]}")
    elif res.resumed_from:
        print(f"resumed from the state of {res.resumed_from[:12]}")
    else:
        print("no stored state near; started from a fresh snapshot")
    for s in res.steps:
        if s.source == "snapshot":
            print(
                f"  {s.commit[:12]}  snapshot: {s.added} chunks in {s.files} files  "
                f"{s.seconds:.2f}s"
            )
        else:
            print(
                f"  {s.commit[:12]}  +{s.added} -{s.removed} ~{s.modified} chunks "
                f"in {s.files} files  {s.seconds:.2f}s"
            )
    if res.worktree is not None:
        w = res.worktree
        print(f"  work tree     +{w.added} -{w.removed} ~{w.modified} chunks (not stored)")
    print(f"adapter {res.adapter_path}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from repo2lora.models import embedded
    from repo2lora.models.presets import PRESETS

    default = embedded.describe_installed()
    presets = [
        {"name": name, "description": p.description, "untrained": True}
        for name, p in PRESETS.items()
    ]
    if args.json:
        _print_json({"default": default, "presets": presets})
        return 0 if default.get("verified", True) else 1
    if not default["installed"]:
        print("default   not installed: commands without --model use the random placeholder")
    else:
        model = default["model"]
        state = "verified (sha256)" if default["verified"] else f"DAMAGED: {default['error']}"
        mb = (default.get("total_bytes") or 0) / 1e6
        print(f"default   {default['path']}  ({mb:.1f} MB, {state})")
        print(
            f"  model     {model.get('architecture', '?')}, {model.get('params', 0) / 1e6:.1f}M "
            f"parameters, vocabulary {model.get('vocab_size', '?')}, "
            f"{model.get('tokens_seen', 0) / 1e6:.1f}M tokens seen, held-out loss "
            f"{model.get('held_out_loss', float('nan')):.3f} nats/token"
        )
        for name, h in sorted(default["hypernets"].items()):
            print(
                f"  {name:<9} {h.get('path', '?')}: {h.get('steps', '?')} steps on "
                f"{h.get('train_examples', '?')} tasks of {h.get('repositories', '?')} "
                "repositories"
            )
        manifests = "pretrain-manifest.json, hypernet-manifest.json"
        print(f"  data      {default['path']}/data/ ({manifests})")
    for p in presets:
        print(f"{p['name']:<15} preset: {p['description']}")
    print("any other --model: a local transformers directory or a hub id (safetensors only)")
    return 0 if default.get("verified", True) else 1


def cmd_log(args: argparse.Namespace) -> int:
    import datetime

    from repo2lora.update import state_log

    entries = state_log(args.path, args.limit, all_hypernets=args.all)
    if args.json:
        _print_json([e.__dict__ for e in entries])
        return 0
    if not entries:
        print("no evolving state yet; run `repo2lora update`")
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    cols = ["commit", "date", "source", "added", "removed", "modified", "seconds", "adapter"]
    for col in cols + (["hypernet"] if args.all else []):
        table.add_column(
            col, justify="right" if col in ("added", "removed", "modified", "seconds") else "left"
        )
    for e in entries:
        date = datetime.datetime.fromtimestamp(e.date, datetime.UTC).strftime("%Y-%m-%d %H:%M")
        table.add_row(
            e.commit[:12],
            date,
            e.source,
            str(e.added),
            str(e.removed),
            str(e.modified),
            f"{e.seconds:.2f}",
            e.adapter.rsplit("/", 1)[-1] if e.adapter else "-",
            *([e.hypernet] if args.all else []),
        )
    Console(width=max(160 if args.all else 120, Console().width)).print(table)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from repo2lora.models.loading import describe_base_model, load_base_model
    from repo2lora.tasks.synthetic import generate_suite
    from repo2lora.tasks.training_data import build_training_data
    from repo2lora.training.hypernet_trainer import TrainConfig, train_hypernet
    from repo2lora.training.loop import StepLog
    from repo2lora.training.placement import encoding_on_training_device

    evolving = args.generator in ("code2lora-evo", "code2lora-names")
    if args.init_from and not evolving:
        raise UserError(
            "--init-from starts an evolving hypernetwork from a static one: "
            "add --generator code2lora-evo (or code2lora-names)"
        )
    if args.init_from:  # checked before anything (a synthetic suite) is written
        from repo2lora.hypernet.checkpoint import card_generator

        found = card_generator(args.init_from)
        starts = ["code2lora-static"] + (
            ["code2lora-evo"] if args.generator != "code2lora-evo" else []
        )
        if found not in starts:
            holds = f"a {found} generator" if found else "no hypernetwork checkpoint"
            raise UserError(
                f"{args.init_from} holds {holds}; --init-from needs a "
                f"{' or '.join(starts)} checkpoint"
            )
    if args.threads:
        torch.set_num_threads(args.threads)
    paths = [Path(p) for p in args.repos]
    if args.synthetic:
        suite_dir = Path(args.out) / "synthetic-suite"
        if not (suite_dir / "done").exists():
            generate_suite(suite_dir, args.synthetic, args.synthetic_commits, args.seed)
            (suite_dir / "done").write_text("ok\n")
        paths += sorted(p for p in suite_dir.iterdir() if p.is_dir())
    if not paths:
        raise UserError("no training repositories: pass --repos PATH... or --synthetic N")
    base = load_base_model(describe_base_model(args.model))
    with encoding_on_training_device(base):  # the main process encodes; the others read its cache
        data = build_training_data(paths, base, evolving, seed=args.seed)
    if not data.train:
        raise UserError("the repositories hold no assertion tasks to train on (no test files?)")
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
        init_from=args.init_from,
        **({} if args.init_lr_scale is None else {"init_lr_scale": args.init_lr_scale}),
        target_modules=args.target_modules or TrainConfig.target_modules,
        precision=args.precision,
        gradient_checkpointing=args.gradient_checkpointing,
    )
    show = not args.json and sys.stderr.isatty()

    def on_step(s: StepLog) -> None:
        if show or s.step % max(1, args.steps // 10) == 0:
            print(
                f"step {s.step}/{args.steps}  loss {s.loss:.4f}  {s.tokens_per_s:.0f} tok/s  "
                f"{s.peak_memory_mb:.0f} MB",
                file=sys.stderr,
            )

    common: dict[str, Any] = dict(
        eval_examples=data.test,
        resume=not args.no_resume,
        on_step=on_step if not args.json else None,
        card={"data_manifest": data.manifest, "train_examples": len(data.train)},
    )
    if args.generator == "shine":
        from repo2lora.training.shine_trainer import repo_chunk_texts, train_shine

        texts = {p.name: repo_chunk_texts(p) for p in paths}
        res = train_shine(base, texts, data.train, args.out, cfg, **common)
    elif args.generator == "dnd":
        from repo2lora.training.dnd_trainer import train_dnd

        res = train_dnd(base, data.encodings, data.train, args.out, cfg, **common)
    else:
        res = train_hypernet(base, data.encodings, data.train, args.out, cfg, **common)
    summary = {**res.__dict__, "train_examples": len(data.train), "test_examples": len(data.test)}
    if args.json:
        _print_json(summary)
    else:
        print(f"trained {res.steps} steps, {res.tokens} target tokens, {res.seconds:.1f}s")
        if res.eval:
            print(
                f"held-out target NLL: {res.eval['nll_generated']:.3f} with generated adapters, "
                f"{res.eval['nll_base']:.3f} base model"
            )
        print(f"hypernetwork {res.out_dir}")
    return 0


def cmd_corpus(args: argparse.Namespace) -> int:
    from repo2lora.pretrain.corpus import DEFAULT_PACKAGE_LIST, CorpusConfig, build_corpus

    cfg = CorpusConfig(
        package_list=None if args.no_pypi else (args.packages or str(DEFAULT_PACKAGE_LIST)),
        reserved=args.reserved,
        stdlib=not args.no_stdlib,
        installed=not args.no_installed,
        heldout_share=args.heldout_share,
        seed=args.seed,
        cache=args.cache,
    )
    with progress_bars(not args.json and sys.stderr.isatty()) as bar:
        res = build_corpus(args.out, cfg, bar)
    if args.json:
        _print_json(res.__dict__)
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
    _print_json(res)
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    import torch

    from repo2lora.pretrain.budget import config_for_budget
    from repo2lora.pretrain.config import PretrainConfig
    from repo2lora.pretrain.train_lm import pretrain, stored_config

    if args.threads:
        torch.set_num_threads(args.threads)
    plan: dict[str, Any] = {}
    cfg = stored_config(args.out)
    if cfg is None and args.warm_start:
        cfg = stored_config(args.warm_start, warm_start=True)
    if cfg is not None:  # resuming: the run's own config; only this invocation's clock changes
        from dataclasses import replace

        cfg = replace(cfg, minutes=args.minutes)
    else:
        base = PretrainConfig(
            vocab_size=args.vocab,
            context=args.context,
            batch_size=args.batch_size,
            minutes=args.minutes,
            eval_every=args.eval_every,
            checkpoint_every=args.eval_every,
            precision=args.precision,
            compile=args.compile,
        )
        if args.hidden:
            from dataclasses import replace

            heads = max(1, args.hidden // 32)
            cfg = replace(
                base,
                hidden_size=args.hidden,
                layers=args.layers or 4,
                heads=heads,
                kv_heads=max(1, heads // 2),
                steps=args.steps or base.steps,
                intermediate=args.intermediate or int(args.hidden * 8 / 3 // 16 * 16),
            )
        else:
            budget_minutes = args.budget_minutes or args.minutes
            if not args.tokens and not budget_minutes:
                raise UserError(
                    "give a budget: --tokens N or --minutes M (or --hidden to size by hand)"
                )
            cfg, plan = config_for_budget(
                base, args.tokens or None, budget_minutes, args.flops, args.max_params
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
        _print_json({**res.__dict__, "plan": plan})
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


def cmd_complete(args: argparse.Namespace) -> int:
    from repo2lora.complete import complete_at
    from repo2lora.generation import GenerationConfig

    gen = GenerationConfig(max_new_tokens=args.max_new_tokens, single_line=not args.multiline)
    with progress_bars(not args.json and sys.stderr.isatty()) as bar:
        res = complete_at(
            args.location, model=args.model, hypernet=args.hypernet, generation=gen, progress=bar
        )
    if args.json:
        _print_json(res.__dict__)
        return 0
    if res.base_model_untrained:
        _note("the base model is an UNTRAINED placeholder, so this completion is noise")
    print(res.text)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from lsp_server.config import ServerConfig, parse_host_port
    from lsp_server.server import serve

    tcp = parse_host_port(args.tcp) if args.tcp else None
    cfg = ServerConfig(
        model=args.model,
        hypernet=args.hypernet,
        target_modules=args.target_modules,
        lora_mode=args.lora_mode,
        threads=args.threads,
        light_start=args.light_start,
    )
    return serve(cfg, tcp=tcp)


def cmd_bench(args: argparse.Namespace) -> int:
    from benchmark.config import bench_config, replace_eval
    from benchmark.markdown import render_markdown
    from benchmark.methods import ALL_METHODS
    from benchmark.progress import progress_display
    from benchmark.run import run_bench

    methods = (
        ALL_METHODS
        if args.methods == "all"
        else tuple(x.strip() for x in args.methods.split(",") if x.strip())
    )
    suite = tuple(args.suite)
    if args.generator_dir and args.test_repos and suite == ("ci",):  # scoring: the given repos
        suite = tuple(args.test_repos)
    cfg = bench_config(
        suite,
        tracks=("static", "evo") if args.track == "both" else (args.track,),
        methods=methods,
        model=args.model,
        seed=args.seed,
        n_repos=args.repos,
        n_commits=args.commits,
        hypernet_steps=args.steps,
        evo_steps=args.evo_steps or args.steps,
        evo_init=args.evo_init,
        lora_steps=args.lora_steps,
        per_repo_steps=args.per_repo_steps,
        max_commits=args.max_commits,
        max_eval_tasks=args.max_tasks,
        threads=args.threads,
        test_repos=tuple(args.test_repos) if args.test_repos else None,
        target_modules=args.target_modules,
        generator_dirs=tuple(args.generator_dir or ()),
        allow_contaminated=args.allow_contaminated,
    )
    if args.prompt_tokens:
        cfg = replace_eval(cfg, prompt_tokens=args.prompt_tokens)
    log = (lambda line: None) if args.quiet else _note
    with progress_display(not args.json and not args.quiet) as bar:
        report = run_bench(cfg, Path(args.out), progress=bar, log=log)
    if args.json:
        _print_json({k: v for k, v in report.items() if k != "records"})
        return 0
    print(render_markdown(report))
    print(f"report: {Path(args.out) / 'bench.md'}, {Path(args.out) / 'bench.json'}, plots/")
    return 0


def _target_modules(text: str) -> tuple[str, ...]:
    from repo2lora.adapters.targets import parse_target_modules

    try:
        return parse_target_modules(text)
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    from repo2lora import __version__
    from repo2lora.adapters.defaults import DEFAULT_RANK

    p = argparse.ArgumentParser(
        prog="repo2lora",
        description="Turn a git repository into a LoRA adapter for a code language model.",
    )
    p.add_argument("--version", action="version", version=f"repo2lora {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def target_modules_arg(sp: argparse.ArgumentParser, what: str) -> None:
        sp.add_argument(
            "--target-modules",
            type=_target_modules,
            metavar="attention|all-linear|NAME,...",
            help=f"which projections {what}: attention (query and value, or the fused QKV "
            "projection), all-linear, or module names (q_proj,v_proj); default: "
            "attention, or what --hypernet was trained for",
        )

    def model_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--model",
            help="base model: a local transformers directory, a hub id, or a preset "
            "(tiny-random); default: the embedded default model",
        )
        sp.add_argument("--hypernet", help=HYPERNET_HELP)
        sp.add_argument("--json", action="store_true", help="print one JSON object for scripts")

    s = sub.add_parser(
        "snapshot",
        help="encode one commit of a repository and write its LoRA adapter",
        description="Chunk the Python code of one commit (read from git objects), encode the "
        "chunks with the frozen base model (cached by content), run the hypernetwork, and write "
        "a PEFT adapter under <repo>/.repo2lora/adapters/.",
    )
    s.add_argument("path", nargs="?", default=".", help="repository (default: .)")
    s.add_argument(
        "--rev", default="HEAD", help="commit, branch or tag to snapshot (default: HEAD)"
    )
    s.add_argument(
        "--exclusion",
        choices=["source-only", "with-tests"],
        default="source-only",
        help="what the encoder sees: source only (default) or test files too",
    )
    s.add_argument(
        "--generator",
        choices=["code2lora-static", "code2lora-evo", "code2lora-names", *OTHER_GENERATORS],
        default=None,
        help="which design makes the adapter (default: the --hypernet checkpoint's; without "
        "one, Code2LoRA). code2lora-names: Code2LoRA plus a memory of the names the "
        "repository defines on the LM head; shine: the base model reads the chunks' text; "
        "dnd: chunk vectors as prompts to a hyper-convolutional decoder",
    )
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    model_args(s)
    target_modules_arg(s, "the adapter adapts")
    s.set_defaults(func=cmd_snapshot)

    u = sub.add_parser(
        "update",
        help="follow the repository's history: one GRU state step per commit, then its adapter",
        description="Apply every commit since the nearest stored state (a fresh snapshot when "
        "none is near) as a chunk-level diff step of the evolving state, storing each step, and "
        "write the adapter of the target commit.",
    )
    u.add_argument("path", nargs="?", default=".", help="repository (default: .)")
    u.add_argument("--rev", default="HEAD", help="target commit (default: HEAD)")
    u.add_argument(
        "--from", dest="start", metavar="REV", help="start the walk at REV (snapshotted if needed)"
    )
    u.add_argument(
        "--worktree",
        action="store_true",
        help="also fold uncommitted edits in as a transient step (its state is not stored)",
    )
    u.add_argument(
        "--max-replay",
        type=int,
        default=200,
        help="start from a fresh snapshot when the nearest stored state is further (default 200)",
    )
    u.add_argument(
        "--all-parents", action="store_true", help="walk every parent, not only first parents"
    )
    u.add_argument("--exclusion", choices=["source-only", "with-tests"], default="source-only")
    u.add_argument(
        "--rebuild", action="store_true", help="move a damaged state.db aside and start over"
    )
    u.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    model_args(u)
    target_modules_arg(u, "the adapter adapts")
    u.set_defaults(func=cmd_update)

    mo = sub.add_parser(
        "models",
        help="list the installed base models and hypernetworks and where they came from",
        description="The embedded default (its card, checked against the sha256 of every "
        "shipped file) and the built-in presets. Exits 1 when the default is damaged.",
    )
    mo.add_argument("--json", action="store_true", help="print JSON for scripts")
    mo.set_defaults(func=cmd_models)

    lg = sub.add_parser(
        "log", help="list the stored evolving states of the current hypernetwork, newest first"
    )
    lg.add_argument("path", nargs="?", default=".", help="repository (default: .)")
    lg.add_argument("-n", "--limit", type=int, default=50)
    lg.add_argument(
        "--all",
        action="store_true",
        help="the states of every hypernetwork (default: the one that stored the newest state)",
    )
    lg.add_argument("--json", action="store_true", help="print JSON for scripts")
    lg.set_defaults(func=cmd_log)

    t = sub.add_parser(
        "train",
        help="train a hypernetwork on repositories' assertion tasks (runs under accelerate too)",
        description="Train a generator end to end on the LM loss of assertion targets: the base "
        "model frozen, one generated adapter per sample. Resumes from the last checkpoint in "
        "--out. Works unchanged under `accelerate launch -m repo2lora train ...`.",
    )
    t.add_argument(
        "--generator",
        choices=["code2lora-static", "code2lora-evo", "code2lora-names", *OTHER_GENERATORS],
        default="code2lora-static",
        help="code2lora-names: code2lora-evo plus a names memory on the LM head, written from "
        "the names each repository defines; shine: the base model reads the source text "
        "(memory tokens); dnd: a decoder trained by MSE on per-repository LoRA checkpoints it "
        "first collects",
    )
    t.add_argument("--out", required=True, help="output directory (checkpoints, log, result)")
    t.add_argument("--repos", nargs="*", default=[], help="training repositories")
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
        "--init-from",
        metavar="STATIC_CHECKPOINT",
        help="code2lora-evo: start the snapshot encoder and LoRA head from this trained "
        "code2lora-static checkpoint (h_0 is then the static state); code2lora-names: from a "
        "code2lora-static or code2lora-evo checkpoint (the GRU step too)",
    )
    t.add_argument(
        "--init-lr-scale",
        type=float,
        help="with --init-from: the copied encoder and head learn at this x --lr (0: frozen, "
        "only the GRU step learns; default 0.1)",
    )
    t.add_argument("--checkpoint-every", type=int, default=50)
    t.add_argument("--eval-every", type=int, default=50)
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

    c = sub.add_parser(
        "complete",
        help="print a completion at FILE:LINE:COL made with the repository's current adapter",
    )
    c.add_argument("location", help="FILE:LINE:COL, 1-based (e.g. src/app.py:12:5)")
    c.add_argument("--max-new-tokens", type=int, default=48)
    c.add_argument("--multiline", action="store_true", help="do not stop at the end of the line")
    model_args(c)
    c.set_defaults(func=cmd_complete)

    sv = sub.add_parser(
        "serve",
        help="run the language server (stdio by default) with the repository's adapter",
        description="Serve inline completions over LSP for the workspace's git repository: "
        "the adapter follows new commits, branch switches and saved files in the background "
        "and is hot-swapped; the prompt is the document before the cursor only. Never "
        "downloads (a hub id must be in the local cache).",
    )
    io = sv.add_mutually_exclusive_group()
    io.add_argument("--stdio", action="store_true", help="talk over stdin/stdout (the default)")
    io.add_argument("--tcp", metavar="HOST:PORT", help="listen on a TCP port instead")
    sv.add_argument(
        "--model",
        help="base model: a local transformers directory, a cached hub id, or a preset "
        "(tiny-random); default: the embedded default model",
    )
    sv.add_argument("--hypernet", help=HYPERNET_HELP)
    sv.add_argument(
        "--lora-mode",
        choices=["auto", "merged", "peft"],
        default="auto",
        help="merged: the adapter is folded into a copy of the LoRA target weights (no "
        "per-token cost); peft: a PeftModel (no copied weights); auto: merged for float32",
    )
    sv.add_argument(
        "--threads", type=int, default=0, help="torch threads (default: half the CPU cores)"
    )
    sv.add_argument(
        "--no-light-start",
        dest="light_start",
        action="store_false",
        help="serve nothing until transformers has loaded the model (by default a Llama-family "
        "base model's completions are served seconds earlier, without transformers)",
    )
    target_modules_arg(sv, "the adapter adapts")
    sv.set_defaults(func=cmd_serve)

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
    b.add_argument("--max-tasks", type=int, help="evaluate at most N tasks per repository/track")
    b.add_argument("--prompt-tokens", type=int, help="prompt token budget of every method")
    b.add_argument("--threads", type=int, help="torch CPU threads (default 1)")
    target_modules_arg(b, "every LoRA method adapts")
    b.add_argument("-q", "--quiet", action="store_true", help="no progress or notes")
    b.add_argument("--json", action="store_true", help="print the report (no per-task records)")
    b.set_defaults(func=cmd_bench)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _quiet_libraries()
        return int(args.func(args))
    except UserError as exc:
        print(f"repo2lora: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(
            "repo2lora: interrupted; the stored state is the last completed step", file=sys.stderr
        )
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
