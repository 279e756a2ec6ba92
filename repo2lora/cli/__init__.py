"""The `repo2lora` command: a thin shell over the library steps. `main` builds the parser from
one `add_<command>` per command (each command group's module holds its arguments and its
handler, which parses, calls the library, and prints), and turns user mistakes into one-line
errors. A new command: a module here with `add_<name>(sub)` and its `cmd_<name>`, listed in
`COMMANDS`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from repo2lora.cli import bench, dataset, models, pretraining, repository, serving, training
from repo2lora.cli.output import quiet_libraries
from repo_encoder.errors import UserError

EXIT_USER_ERROR = 1
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a tool whose reader left

# in the order `repo2lora --help` lists them
COMMANDS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = [
    repository.add_snapshot,
    repository.add_update,
    models.add_models,
    repository.add_log,
    training.add_train,
    dataset.add_dataset,
    pretraining.add_corpus,
    pretraining.add_pretrain,
    repository.add_complete,
    serving.add_serve,
    bench.add_bench,
]


def build_parser() -> argparse.ArgumentParser:
    from repo2lora import __version__

    p = argparse.ArgumentParser(
        prog="repo2lora",
        description="Turn a git repository into a LoRA adapter for a code language model.",
    )
    p.add_argument("--version", action="version", version=f"repo2lora {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        quiet_libraries()
        return int(args.func(args))
    except UserError as exc:
        print(f"repo2lora: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(
            "repo2lora: interrupted; the stored state is the last completed step", file=sys.stderr
        )
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader went away (`repo2lora snapshot . --json | head`): the work is done and
        # stored; stop writing quietly, as a shell tool does, instead of a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
