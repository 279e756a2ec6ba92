"""What every command prints with: quiet libraries, rich progress bars on stderr (plain lines
in a log for the long commands), notes, and JSON for scripts."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from typing import Any

from repo2lora.progress import LineProgress


def quiet_libraries() -> None:
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
def progress_bars(enabled: bool, log: Collection[str] = ()) -> Iterator[Any]:
    """A ProgressFn on stderr: one rich bar per stage on a terminal when `enabled`; where stderr
    is not a terminal (a log, `nohup`), a plain line for each stage in `log` at its start, every
    tenth and its end, with an ETA, whether `enabled` or not (a long command run in the
    background shows where it is; stdout keeps its --json), and never a bar; nothing
    otherwise."""
    if not sys.stderr.isatty():
        if log:
            yield LineProgress(sys.stderr, stages=log)
        else:
            yield lambda stage, done, total: None
        return
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


def note(msg: str) -> None:
    print(f"note: {msg}", file=sys.stderr)


def print_json(obj: object) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))
