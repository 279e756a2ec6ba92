"""`repo2lora serve`: the language server over stdio or TCP."""

from __future__ import annotations

import argparse

from repo2lora.cli.arguments import HYPERNET_HELP, target_modules_arg


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


def add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
