"""Times what code2lora-names adds to making one adapter, on a generated 50k-line repository
(CPU, 2 threads by default), and prints one JSON object: extracting the definitions (the
chunker's parse, with and without the rest of the index), the names' index and list, one
commit's O(diff) update of the index, and generating the adapter (the names memory alone and
the whole adapter) with a cold probe (as `update` makes one) and a warm one (names and states
cached, as a long-lived server would). Never fails on a missed target.

    python -m benchmark.speed.names [--lines 50000] [--model PATH] [--hypernet CKPT]
                                    [--threads 2] [--out F.json]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import torch

from benchmark.speed.repos import generate_repository
from benchmark.speed.scaffold import SpeedRun, run_speed_benchmark
from repo2lora.hypernet.checkpoint import load_hypernet
from repo2lora.hypernet.name_memory import NameInput, NameProbe
from repo2lora.hypernet.names import NamesHypernet
from repo2lora.models.loading import describe_base_model, load_base_model
from repo_encoder.chunker import chunk_files
from repo_encoder.exclusion import ExclusionConfig
from repo_encoder.names import NameIndex
from repo_encoder.snapshot import open_repository, read_snapshot, resolve_commit

TARGET_ADAPTER_MS = 50.0  # per adapter, 2 cores, 50k-line repository


def _ms(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median wall milliseconds of `fn` over `repeats` runs, and its last result."""
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t) * 1000)
    return round(statistics.median(times), 2), out


def measure(lines: int, model: str | None, hypernet: str | None, repeats: int) -> dict[str, Any]:
    info = describe_base_model(model)
    base = load_base_model(info)
    hyper = load_hypernet(hypernet, info, generator="code2lora-names")
    net = hyper.net
    if not net.reads_names:
        raise SystemExit(f"{hypernet} is a {net.generator_name} checkpoint, not code2lora-names")
    net = cast(NamesHypernet, net)  # the kind that reads names: its memory is timed below
    if hyper.untrained:  # an untrained memory's gain is zero; timing is the same either way
        with torch.no_grad():
            net.names.gain.fill_(0.1)
    with tempfile.TemporaryDirectory(prefix="names-speed-") as tmp:
        root = Path(tmp) / "repo"
        generate_repository(root, lines)
        repo = open_repository(root)
        snap = read_snapshot(repo, resolve_commit(repo, "HEAD"), ExclusionConfig())
    n_lines = sum(data.count(b"\n") for _, data in snap.files)
    chunk_ms, chunked = _ms(lambda: chunk_files(snap.files), repeats)
    chunks = chunked.chunks
    index_ms, index = _ms(lambda: NameIndex.of(chunks), repeats)
    list_ms, names = _ms(index.names, repeats)

    # one commit: a file's chunks replaced by themselves with one function renamed
    path = chunks[len(chunks) // 2].path
    old = [c for c in chunks if c.path == path]
    data = dict(snap.files)[path]
    new = chunk_files([(path, data.replace(b"def ", b"def renamed_", 1))]).chunks

    def one_commit() -> list[Any]:
        moved = index.copy()
        moved.apply(new, old)
        return moved.names()

    diff_ms, _ = _ms(one_commit, repeats)
    state = torch.zeros(net.cfg.state_dim)
    texts = [c.text for c in chunks]  # where the names are used (read with names_contexts)

    def names_pair(probe: NameProbe) -> Any:
        with torch.no_grad():
            return net.names_pair(NameInput(names, probe, texts))

    def whole(probe: NameProbe) -> Any:
        with torch.no_grad():
            return net.generate(state, NameInput(names, probe, texts)).detached()

    def fresh() -> NameProbe:
        return NameProbe(base.model, base.tokenizer, net.cfg.names_tokens)

    cold_pair_ms, _ = _ms(lambda: names_pair(fresh()), repeats)
    cold_whole_ms, _ = _ms(lambda: whole(fresh()), repeats)
    warm = fresh()
    whole(warm)
    warm_pair_ms, _ = _ms(lambda: names_pair(warm), repeats)
    warm_whole_ms, weights = _ms(lambda: whole(warm), repeats)
    with torch.no_grad():
        sel = net.names.select(names, warm)
        state_only_ms, _ = _ms(lambda: net.head.to_lora_weights(net.head(state[None])), repeats)
    # after its diff step, `update` lists the names and generates: with a cold probe from the
    # command line, with the warm one the server keeps
    per_cold, per_warm = cold_whole_ms + list_ms, warm_whole_ms + list_ms
    return {
        "lines": n_lines,
        "files": len(snap.files),
        "chunks": len(chunks),
        "names": len(names),
        "names_held": len(sel.names),
        "tokens_raised": len(sel.values),
        "rank": net.cfg.names_rank,
        "head_pair_floats": sum(t.numel() for t in weights.tensors["lm_head"]),
        "ms": {
            "chunk_with_definitions": chunk_ms,
            "name_index": index_ms,
            "name_list": list_ms,
            "one_commit_index_update": diff_ms,
            "names_pair_cold_probe": cold_pair_ms,
            "names_pair_warm_probe": warm_pair_ms,
            "adapter_cold_probe": cold_whole_ms,
            "adapter_warm_probe": warm_whole_ms,
            "state_lora_only": state_only_ms,
            "per_adapter_cli_update": round(per_cold, 2),
            "per_adapter_server_update": round(per_warm, 2),
        },
        "target_ms": TARGET_ADAPTER_MS,
        "meets_target": {
            "cli": per_cold <= TARGET_ADAPTER_MS,
            "server": per_warm <= TARGET_ADAPTER_MS,
        },
        "model": info.description,
        "hypernet": hyper.description,
    }


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lines", type=int, default=50_000)
    parser.add_argument("--model", help="base model (default: the embedded default)")
    parser.add_argument("--hypernet", help="a code2lora-names checkpoint (default: untrained)")
    parser.add_argument("--repeats", type=int, default=5)


def main(argv: list[str] | None = None) -> int:
    def run(r: SpeedRun) -> dict[str, Any]:
        a = r.args
        return measure(a.lines, a.model, a.hypernet, a.repeats)

    return run_speed_benchmark("names", __doc__, _options, run, argv, default_threads=2)


if __name__ == "__main__":
    sys.exit(main())
