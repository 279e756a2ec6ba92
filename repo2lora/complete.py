"""`repo2lora complete FILE:LINE:COL`: a completion at a cursor made with the repository's
current adapter, so a terminal user can see the whole path work."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from repo2lora.adapters.apply import attach_lora
from repo2lora.adapters.peft_dir import load_peft_adapter
from repo2lora.adapters.weights import LoraWeights
from repo2lora.decoding import prepare_for_decoding
from repo2lora.generation import GenerationConfig, generate_completion
from repo2lora.hypernet.checkpoint import LoadedHypernet, load_history_hypernet
from repo2lora.models.loading import LoadedModel, describe_base_model, load_base_model
from repo2lora.progress import ProgressFn, no_progress
from repo2lora.snapshot import SnapshotConfig
from repo2lora.update import UpdateConfig, update_repository
from repo_encoder.errors import UserError
from repo_encoder.snapshot import open_repository


@dataclass
class Completion:
    file: str
    line: int
    column: int
    text: str
    commit: str
    adapter_path: str
    prompt_chars: int
    seconds: float
    base_model_untrained: bool
    hypernet_untrained: bool


def parse_location(location: str) -> tuple[str, int, int]:
    """`path:line:col` (1-based line and column) -> its parts."""
    parts = location.rsplit(":", 2)
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        raise UserError(f"{location!r} is not FILE:LINE:COL (e.g. src/app.py:12:5, 1-based)")
    line, col = int(parts[1]), int(parts[2])
    if line < 1 or col < 1:
        raise UserError(f"{location!r}: line and column are 1-based")
    return parts[0], line, col


def prefix_at(text: str, line: int, col: int) -> str:
    """The text before (line, col), both 1-based; a column past the line's end means its end."""
    lines = text.split("\n")
    if line > len(lines):
        raise UserError(f"line {line} is past the end of the file ({len(lines)} lines)")
    before = "\n".join(lines[: line - 1])
    cur = lines[line - 1][: col - 1]
    return (before + "\n" + cur) if line > 1 else cur


def complete_at(
    location: str,
    *,
    model: str | None = None,
    hypernet: str | None = None,
    generation: GenerationConfig | None = None,
    config: SnapshotConfig | None = None,
    progress: ProgressFn = no_progress,
) -> Completion:
    t0 = time.perf_counter()
    file, line, col = parse_location(location)
    path = Path(file).expanduser()
    if not path.is_file():
        raise UserError(f"{file} is not a file")
    repo = open_repository(path.parent)
    root = Path(str(repo.working_tree_dir)).resolve()
    real = path.resolve()
    if not real.is_relative_to(root):
        raise UserError(f"{file} resolves outside the repository {root}; it is not read")
    try:
        text = real.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError) as exc:
        raise UserError(f"cannot read {file} as UTF-8 text: {exc}") from None
    prefix = prefix_at(text.replace("\r\n", "\n"), line, col)
    base = describe_base_model(model)
    loaded = load_base_model(base)
    hyper = load_history_hypernet(hypernet, base)
    commit, adapter_path, weights = current_adapter(root, loaded, hyper, config, progress)
    prepare_for_decoding(loaded.model)  # after encoding: chunk vectors as `snapshot` makes them
    peft_model = attach_lora(loaded.model, weights, base.spec)
    out = generate_completion(
        peft_model, loaded.tokenizer, prefix, generation or GenerationConfig()
    )
    return Completion(
        file=str(real.relative_to(root)),
        line=line,
        column=col,
        text=out,
        commit=commit,
        adapter_path=adapter_path,
        prompt_chars=len(prefix),
        seconds=round(time.perf_counter() - t0, 3),
        base_model_untrained=base.untrained,
        hypernet_untrained=hyper.untrained,
    )


def current_adapter(
    root: Path,
    loaded: LoadedModel,
    hyper: LoadedHypernet,
    config: SnapshotConfig | None,
    progress: ProgressFn,
) -> tuple[str, str, LoraWeights]:
    """(commit, adapter directory, weights) of the repository's current adapter at HEAD: its
    stored state brought up to HEAD as `repo2lora update` does (the evolving state, or the
    static state at every commit, whichever `hyper` follows history with). Nothing is written
    when it is there already (after `repo2lora update`, or with the server following the
    repository)."""
    cfg = UpdateConfig(snapshot=config or SnapshotConfig())
    res = update_repository(
        root, "HEAD", config=cfg, progress=progress, loaded_model=loaded, loaded_hypernet=hyper
    )
    if res.weights is None:  # the stored adapter was current: read it back
        return res.target, res.adapter_path, load_peft_adapter(res.adapter_path)
    return res.target, res.adapter_path, res.weights
