"""Times `snapshot_repository` on generated git repositories of growing size (tiny-random model,
CPU) and prints one JSON object: chunking throughput, cold and cached snapshot seconds, the
stage split, and how the numbers compare with the targets. Never fails on a missed target.

    python -m benchmark.speed.snapshot [--sizes 1000,10000,50000] [--repeats 3] [--out F.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmark.speed.repos import SEED, generate_repository
from benchmark.speed.scaffold import SpeedRun, run_speed_benchmark, setup_model
from repo2lora.hypernet.checkpoint import LoadedHypernet
from repo2lora.models.loading import LoadedModel
from repo2lora.snapshot import SnapshotConfig, SnapshotResult, snapshot_repository
from repo_encoder.chunker import chunk_files
from repo_encoder.snapshot import open_repository, read_snapshot, resolve_commit

MODEL = "tiny-random"
MB = 1_000_000  # throughput is in 10^6 bytes per second
TARGET_CHUNK_MB_S = 5.0
TARGET_CACHED_S = 2.0  # for the 50k-line repository
TARGET_LINEAR_RATIO = 1.5  # cold cost per line, largest size over smallest


def _timed_snapshots(
    root: Path, model: LoadedModel, hyper: LoadedHypernet, repeats: int, cold: bool
) -> tuple[list[float], SnapshotResult]:
    """Wall seconds of `repeats` snapshot calls (in run order) and the median run's result.
    `cold` removes the state directory first, so every chunk is encoded."""
    runs = []
    for _ in range(repeats):
        if cold:
            shutil.rmtree(root / ".repo2lora", ignore_errors=True)
        t = time.perf_counter()
        result = snapshot_repository(root, loaded_model=model, loaded_hypernet=hyper)
        runs.append((time.perf_counter() - t, result))
    return [s for s, _ in runs], sorted(runs, key=lambda r: r[0])[len(runs) // 2][1]


def measure_size(
    root: Path,
    lines: int,
    repeats: int,
    model: LoadedModel,
    hyper: LoadedHypernet,
    log: Callable[[str], None],
) -> dict[str, Any]:
    cfg = SnapshotConfig()
    t = time.perf_counter()
    generate_repository(root, lines)
    log(f"{lines} lines: generated and committed in {time.perf_counter() - t:.1f}s")

    repo = open_repository(root)
    snap = read_snapshot(repo, resolve_commit(repo, "HEAD"), cfg.exclusion)
    py_bytes = sum(len(data) for _, data in snap.files)
    py_lines = sum(data.count(b"\n") for _, data in snap.files)
    chunk_times = []
    for _ in range(repeats):
        t = time.perf_counter()
        chunked = chunk_files(snap.files, cfg.chunker)
        chunk_times.append(time.perf_counter() - t)
    chunk_s = statistics.median(chunk_times)
    log(f"{lines} lines: chunked {len(chunked.chunks)} chunks in {chunk_s:.3f}s (median)")

    cold_all, cold = _timed_snapshots(root, model, hyper, repeats, cold=True)
    cold_s = statistics.median(cold_all)
    log(f"{lines} lines: cold snapshot {cold_s:.2f}s (median), stages {cold.seconds}")
    cached_all, cached = _timed_snapshots(root, model, hyper, repeats, cold=False)
    cached_s = statistics.median(cached_all)
    log(f"{lines} lines: cached snapshot {cached_s:.3f}s (median), stages {cached.seconds}")

    encode_s = cold.seconds.get("encode", 0.0)
    return {
        "requested_lines": lines,
        "lines": py_lines,
        "files": len(snap.files),
        "python_bytes": py_bytes,
        "chunks": len(chunked.chunks),
        "unique_chunks": cold.unique_chunks,
        "chunking": {
            "seconds_median": round(chunk_s, 4),
            "mb_per_s": round(py_bytes / MB / chunk_s, 2),
            "seconds_all": [round(s, 4) for s in chunk_times],
        },
        "cold": {
            "seconds_median": round(cold_s, 3),
            "seconds_all": [round(s, 3) for s in cold_all],
            "seconds_per_1k_lines": round(cold_s / py_lines * 1000, 4),
            "encoded": cold.encoded,
            "encode_chunks_per_s": round(cold.encoded / encode_s, 1) if encode_s else None,
            "stages": cold.seconds,
        },
        "cached": {
            "seconds_median": round(cached_s, 4),
            "seconds_all": [round(s, 4) for s in cached_all],
            "cache_hits": cached.cache_hits,
            "encoded": cached.encoded,
            "stages": cached.seconds,
        },
    }


def _targets(results: list[dict[str, Any]]) -> dict[str, Any]:
    slowest_chunking = min(r["chunking"]["mb_per_s"] for r in results)
    largest, smallest = results[-1], results[0]
    ratio = largest["cold"]["seconds_per_1k_lines"] / smallest["cold"]["seconds_per_1k_lines"]
    return {
        "chunking_mb_per_s": {
            "target_min": TARGET_CHUNK_MB_S,
            "measured_slowest": slowest_chunking,
            "met": slowest_chunking >= TARGET_CHUNK_MB_S,
        },
        "cached_resnapshot_largest": {
            "target_max_seconds": TARGET_CACHED_S,
            "target_lines": 50_000,
            "lines": largest["lines"],
            "seconds": largest["cached"]["seconds_median"],
            "met": largest["cached"]["seconds_median"] <= TARGET_CACHED_S,
        },
        "cold_linear_growth": {
            "target_max_ratio": TARGET_LINEAR_RATIO,
            "per_1k_lines_largest_over_smallest": round(ratio, 3),
            "lines": [smallest["lines"], largest["lines"]],
            "met": ratio <= TARGET_LINEAR_RATIO,
        },
    }


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", default="1000,10000,50000", help="lines per generated repo")
    parser.add_argument("--repeats", type=int, default=3, help="runs per median")


def _measure(run: SpeedRun) -> dict[str, Any]:
    sizes = sorted(int(s) for s in run.args.sizes.split(",") if s.strip())
    repeats = max(1, run.args.repeats)
    if not sizes or min(sizes) < 1:
        run.error("--sizes takes positive line counts, e.g. 1000,10000,50000")

    setup = setup_model(MODEL)
    model, hyper, setup_s = setup.model, setup.hyper, setup.seconds
    run.log(f"model {MODEL} and untrained hypernetwork ready in {setup_s:.2f}s")

    results = []
    for lines in sizes:
        with tempfile.TemporaryDirectory(prefix=f"r2l-bench-{lines}-") as tmp:
            results.append(measure_size(Path(tmp), lines, repeats, model, hyper, run.log))
    return {
        "config": {
            "sizes": sizes,
            "repeats": repeats,
            "seed": SEED,
            "model": MODEL,
            "hypernet": hyper.description,
            "device": "cpu",
            "snapshot": dataclasses.asdict(SnapshotConfig()),
            "notes": (
                "model and hypernetwork are loaded once (setup_seconds) and passed in; "
                "cold = median of `repeats` runs, each on a fresh .repo2lora (stages and "
                "encode rate: the median run); cached = median of `repeats` re-runs on the "
                "unchanged repo; chunking = chunk_files alone, median of `repeats`; "
                "MB = 10^6 bytes; a busy shared machine (see load_average_1m) slows torch most"
            ),
        },
        "setup_seconds": round(setup_s, 3),
        "sizes": results,
        "targets": _targets(results),
    }


def main(argv: list[str] | None = None) -> int:
    return run_speed_benchmark("snapshot", __doc__, _options, _measure, argv, default_threads=0)


if __name__ == "__main__":
    sys.exit(main())
