"""What every speed benchmark shares: one command-line shape (its own options, then `--out` and
`--threads`), progress lines on stderr, the model and untrained hypernetwork loaded once and
warmed up, and one JSON object on stdout with the machine it ran on beside every number."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import torch
import transformers

from benchmark.source import source_revision
from repo2lora.cli.output import quiet_libraries
from repo2lora.hypernet.checkpoint import LoadedHypernet, load_hypernet
from repo2lora.models.loading import LoadedModel, describe_base_model, load_base_model
from repo_encoder.embed import embed_texts
from repo_encoder.errors import UserError


@dataclass
class BenchSetup:
    model: LoadedModel
    hyper: LoadedHypernet
    seconds: float


def setup_model(spec: str) -> BenchSetup:
    """Load `spec` and the untrained hypernetwork once, with one full-size warm-up batch so
    the first size measured does not pay for allocator warm-up."""
    t = time.perf_counter()
    info = describe_base_model(spec)
    model = load_base_model(info)
    hyper = load_hypernet(None, info)
    embed_texts(model.model, model.tokenizer, ["value = value + 1\n" * 40] * 16)
    return BenchSetup(model, hyper, time.perf_counter() - t)


def machine_info(load_before: float) -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "load_average_1m": [load_before, round(os.getloadavg()[0], 2)],  # before, after
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "source": source_revision(),  # the commit the numbers were measured on
    }


@dataclass
class SpeedRun:
    """One benchmark invocation: its parsed options, and where it reports progress and bad
    options."""

    name: str
    args: argparse.Namespace
    parser: argparse.ArgumentParser

    def log(self, message: str) -> None:
        print(f"[{self.name}] {message}", file=sys.stderr, flush=True)

    def error(self, message: str) -> NoReturn:
        self.parser.error(message)


def checkpoint_on_dataset_options(parser: argparse.ArgumentParser, generator: str) -> None:
    """The options of a benchmark that reads one trained checkpoint (`generator` says which
    kind) on a built dataset: --generator-dir, --dataset, --model."""
    parser.add_argument("--generator-dir", required=True, type=Path, help=generator)
    parser.add_argument("--dataset", required=True, type=Path, help="a built dataset (held out)")
    parser.add_argument("--model", help="base model (default: the embedded default)")


def run_speed_benchmark(
    name: str,
    doc: str | None,
    add_options: Callable[[argparse.ArgumentParser], None],
    measure: Callable[[SpeedRun], dict[str, Any]],
    argv: list[str] | None = None,
    default_threads: int = 1,
    prog: str | None = None,
) -> int:
    """Parse the options, set the torch threads, run `measure` and print its numbers as one
    JSON object `{"benchmark": name, "machine": ..., **numbers}` (also written to `--out`).
    `prog`: the command's name, for a benchmark outside `benchmark.speed`."""
    parser = argparse.ArgumentParser(
        prog=prog or f"python -m benchmark.speed.{name}",
        description=doc.split("\n\n")[0] if doc else None,
    )
    add_options(parser)
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument(
        "--threads",
        type=int,
        default=default_threads,
        help=f"torch threads (0: torch's default, which oversubscribes a shared machine; "
        f"default {default_threads})",
    )
    args = parser.parse_args(argv)
    quiet_libraries()  # as the CLI: a library's deprecation notes are not the benchmark's output
    load_before = round(os.getloadavg()[0], 2)  # other work skews timings
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        numbers = measure(SpeedRun(name, args, parser))
    except UserError as exc:  # bad input: one line and exit 2, as argparse's own errors
        parser.error(str(exc))
    report = {"benchmark": name, "machine": machine_info(load_before), **numbers}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0
