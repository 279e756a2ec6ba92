"""The commands over one repository: `snapshot` (one commit -> adapter), `update` (follow
history), `log` (the stored states) and `complete` (a completion with the current adapter).
Each parses, calls one library step, and prints."""

from __future__ import annotations

import argparse
from typing import Any

from repo2lora.cli.arguments import GENERATORS, model_args, target_modules_arg
from repo2lora.cli.output import note, print_json, progress_bars


def cmd_snapshot(args: argparse.Namespace) -> int:
    from repo2lora.hypernet.checkpoint import keeps_state, snapshot_hypernet
    from repo2lora.snapshot import SnapshotConfig, snapshot_repository
    from repo_encoder.exclusion import ExclusionConfig

    cfg = SnapshotConfig(exclusion=ExclusionConfig(mode=args.exclusion))
    if not keeps_state(args.generator, args.hypernet):
        return _snapshot_stateless(args, cfg)
    hypernet = snapshot_hypernet(args.model, args.hypernet, args.generator)
    with progress_bars(not args.json and not args.quiet) as bar:
        res = snapshot_repository(
            args.path,
            args.rev,
            model=args.model,
            hypernet=hypernet,
            config=cfg,
            progress=bar,
            target_modules=args.target_modules,
            generator=args.generator,
        )
    if args.json:
        print_json(res.to_json())
        return 0
    if res.base_model_untrained:
        note(f"base model: {res.base_model}")
    if res.hypernet_untrained:
        note(f"{res.hypernet}; pass --hypernet with a trained checkpoint")
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


def _snapshot_stateless(args: argparse.Namespace, cfg: Any) -> int:
    """`snapshot` with a SHINE or DnD generator: one adapter, no state history."""
    from repo2lora.stateless_snapshot import snapshot_stateless

    res = snapshot_stateless(
        args.path,
        args.rev,
        model=args.model,
        hypernet=args.hypernet,
        generator=args.generator,
        config=cfg,
        target_modules=args.target_modules,
    )
    if args.json:
        print_json(res.to_json())
        return 0
    if res.hypernet_untrained:
        note(f"{res.hypernet}; pass --hypernet with a trained checkpoint")
    print(f"snapshot of {res.repo_root} at {res.commit[:12]} ({res.generator})")
    print(f"  inputs     {res.inputs} chunks")
    print(f"  base model {res.base_model}")
    print(f"  hypernet   {res.hypernet}")
    print(f"  seconds    {sum(res.seconds.values()):.2f}")
    print(f"  adapter    {res.adapter_path}")
    return 0


def cmd_update(args: argparse.Namespace) -> int:
    from evo_state.state_dir import move_aside_damaged
    from repo2lora.snapshot import SnapshotConfig
    from repo2lora.update import UpdateConfig, update_repository
    from repo_encoder.exclusion import ExclusionConfig
    from repo_encoder.snapshot import open_repository

    if args.rebuild:
        aside = move_aside_damaged(str(open_repository(args.path).working_tree_dir))
        if aside is not None:
            note(f"the old state database was moved to {aside}; rebuilding")
    cfg = UpdateConfig(
        snapshot=SnapshotConfig(exclusion=ExclusionConfig(mode=args.exclusion)),
        first_parent=not args.all_parents,
        max_replay=args.max_replay,
    )
    follow = {"static": True, "evo": False}.get(args.follow)
    if follow is not None and not args.hypernet:
        from repo2lora.hypernet.checkpoint import shipped_hypernet_dir
        from repo2lora.models.loading import describe_base_model

        wanted = "code2lora-static" if follow else "code2lora-evo"
        shipped = shipped_hypernet_dir(describe_base_model(args.model), wanted)
        args.hypernet = str(shipped) if shipped is not None else None
    with progress_bars(not args.json and not args.quiet) as bar:
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
            static_every_commit=follow,
        )
    if args.json:
        print_json(res.to_json())
        return 0
    if res.base_model_untrained:
        note("the base model is an UNTRAINED placeholder (pass --model for a real one)")
    if res.hypernet_untrained:
        note("the hypernetwork is UNTRAINED (pass --hypernet with a trained checkpoint)")
    how = "static state at every commit" if res.followed == "static" else "evolving state"
    print(f"following history by the {how} of the {res.hypernet} ({res.hypernet_key})")
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


def cmd_log(args: argparse.Namespace) -> int:
    import datetime

    from repo2lora.update import state_log

    entries = state_log(args.path, args.limit, all_hypernets=args.all)
    if args.json:
        print_json([e.__dict__ for e in entries])
        return 0
    if not entries:
        print("no stored state yet; run `repo2lora update`")
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


def cmd_complete(args: argparse.Namespace) -> int:
    from repo2lora.complete import complete_at
    from repo2lora.generation import GenerationConfig

    gen = GenerationConfig(max_new_tokens=args.max_new_tokens, single_line=not args.multiline)
    with progress_bars(not args.json) as bar:
        res = complete_at(
            args.location, model=args.model, hypernet=args.hypernet, generation=gen, progress=bar
        )
    if args.json:
        print_json(res.__dict__)
        return 0
    if res.base_model_untrained:
        note("the base model is an UNTRAINED placeholder, so this completion is noise")
    print(res.text)
    return 0


def add_snapshot(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
        choices=GENERATORS,
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


def add_update(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    u = sub.add_parser(
        "update",
        help="follow the repository's history commit by commit, then write its adapter",
        description="Move the repository's stored state along every commit since the nearest "
        "stored one (a fresh snapshot when none is near), storing each step, and write the "
        "adapter of the target commit. Two states can follow history: the evolving state (one "
        "GRU step per commit's chunk diff, code2lora-evo) and the static state at every commit "
        "(the snapshot pooling moved exactly by each diff, code2lora-static). By default the "
        "hypernetwork decides: a code2lora-static checkpoint follows by its static state, a "
        "code2lora-evo one by its evolving state; with the embedded default, the network its "
        "card names (`repo2lora models --json`, update_follows): the one that scored best on "
        "the tasks after renames.",
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
    follow = u.add_mutually_exclusive_group()
    follow.add_argument(
        "--static-every-commit",
        dest="follow",
        action="store_const",
        const="static",
        default="auto",
        help="follow the static state of every commit, each commit at the cost of its diff "
        "(exact running pooling sums; default --hypernet: the shipped code2lora-static)",
    )
    follow.add_argument(
        "--evo",
        dest="follow",
        action="store_const",
        const="evo",
        help="follow the evolving state (default --hypernet: the shipped code2lora-evo)",
    )
    u.add_argument("--exclusion", choices=["source-only", "with-tests"], default="source-only")
    u.add_argument(
        "--rebuild", action="store_true", help="move a damaged state.db aside and start over"
    )
    u.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    model_args(u)
    target_modules_arg(u, "the adapter adapts")
    u.set_defaults(func=cmd_update)


def add_log(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    lg = sub.add_parser(
        "log",
        help="list the stored states `update` followed history with (the newest state's kind and "
        "hypernetwork), newest first",
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


def add_complete(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    c = sub.add_parser(
        "complete",
        help="print a completion at FILE:LINE:COL made with the repository's current adapter",
    )
    c.add_argument("location", help="FILE:LINE:COL, 1-based (e.g. src/app.py:12:5)")
    c.add_argument("--max-new-tokens", type=int, default=48)
    c.add_argument("--multiline", action="store_true", help="do not stop at the end of the line")
    model_args(c)
    c.set_defaults(func=cmd_complete)
