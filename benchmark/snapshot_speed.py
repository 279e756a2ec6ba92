"""Times `snapshot_repository` on generated git repositories of growing size (tiny-random model,
CPU) and prints one JSON object: chunking throughput, cold and cached snapshot seconds, the
stage split, and how the numbers compare with the targets. Never fails on a missed target.

    python -m benchmark.snapshot_speed [--sizes 1000,10000,50000] [--repeats 3] [--out F.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmark.common import machine_info, setup_model
from repo2lora.hypernet.checkpoint import LoadedHypernet
from repo2lora.models.loading import LoadedModel
from repo2lora.snapshot import SnapshotConfig, SnapshotResult, snapshot_repository
from repo_encoder.chunker import chunk_files
from repo_encoder.snapshot import open_repository, read_snapshot, resolve_commit

MODEL = "tiny-random"
SEED = 1234
MB = 1_000_000  # throughput is in 10^6 bytes per second
TARGET_CHUNK_MB_S = 5.0
TARGET_CACHED_S = 2.0  # for the 50k-line repository
TARGET_LINEAR_RATIO = 1.5  # cold cost per line, largest size over smallest

# ---------------------------------------------------------------------------------------------
# Repository generator: seeded, syntactically valid Python that looks like an ordinary package.

WORDS = (
    "account", "batch", "buffer", "cache", "channel", "client", "config", "cursor", "delta",
    "digest", "event", "field", "filter", "frame", "graph", "handle", "index", "item", "job",
    "ledger", "limit", "match", "metric", "node", "offset", "order", "packet", "page", "parser",
    "payload", "policy", "queue", "record", "region", "report", "request", "route", "sample",
    "schema", "score", "session", "shard", "signal", "source", "span", "stage", "token", "topic",
    "tracker", "user", "value", "vector", "window", "worker",
)  # fmt: skip
TYPES = ("int", "str", "float", "list[int]", "dict[str, int]", "bytes")
FUNC_DECORATORS = ("functools.lru_cache(maxsize=128)", "functools.cache", "staticmethod")


def _sentence(rng: random.Random) -> str:
    return " ".join(rng.sample(WORDS, rng.randint(4, 9))).capitalize()


def _camel(rng: random.Random) -> str:
    return "".join(w.capitalize() for w in rng.sample(WORDS, 2))


def _statements(rng: random.Random, pad: str, names: list[str], budget: int) -> list[str]:
    """About `budget` lines of loops, conditionals, formatting and error handling."""
    out: list[str] = []
    while len(out) < budget:
        old, new, n = rng.choice(names), f"{rng.choice(WORDS)}_{len(out)}", rng.randint(2, 99)
        kind = rng.randrange(6)
        if kind == 0:
            out.append(f"{pad}{new} = {old} * {n} + len(str({rng.choice(names)}))")
        elif kind == 1:
            out += [
                f"{pad}{new} = []",
                f"{pad}for {new}_item in {old}:",
                f"{pad}    if {new}_item > {n}:",
                f"{pad}        {new}.append({new}_item - {n})",
                f"{pad}    elif {new}_item == {n // 2}:",
                f"{pad}        continue",
                f"{pad}    else:",
                f"{pad}        {new}.append({new}_item)",
            ]
        elif kind == 2:
            word = rng.choice(WORDS)
            out += [
                f'{pad}{new} = f"{word} {{{old}!r}} at {{{rng.choice(names)}}} ({n}%)"',
                f'{pad}logger.debug("%s: %s", {word.upper()!r}, {new})',
            ]
        elif kind == 3:
            out.append(f"{pad}{new} = {{k: v for k, v in {old}.items() if v > {n}}}")
        elif kind == 4:
            out += [
                f"{pad}try:",
                f"{pad}    {new} = int({old}) // {n}",
                f"{pad}except (TypeError, ValueError) as exc:",
                f'{pad}    raise ValueError(f"bad {old}: {{exc}}") from exc',
            ]
        else:
            out += [f"{pad}while {old} > {n}:", f"{pad}    {old} -= {rng.randint(1, 9)}"]
            continue  # defines no new name
        names.append(new)
    return out


def _function(rng: random.Random, pad: str, name: str, method: bool) -> list[str]:
    params = rng.sample(WORDS, rng.randint(1, 3))
    lines = []
    choices = FUNC_DECORATORS if method else FUNC_DECORATORS[:-1]  # staticmethod: methods only
    decorator = rng.choice(choices) if rng.random() < 0.25 else None
    if decorator is not None:
        lines.append(f"{pad}@{decorator}")
    self_ = ["self"] if method and decorator != "staticmethod" else []
    args = ", ".join(self_ + [f"{p}: {rng.choice(TYPES)}" for p in params])
    lines.append(f"{pad}def {name}({args}) -> {rng.choice(TYPES)}:")
    lines.append(f'{pad}    """{_sentence(rng)}."""')
    lines += _statements(rng, pad + "    ", list(params), rng.choice((3, 6, 10, 18, 30)))
    lines.append(f"{pad}    return {rng.choice(params)}")
    return lines


def _class(rng: random.Random, name: str) -> list[str]:
    fields = rng.sample(WORDS, rng.randint(2, 4))
    if rng.random() < 0.4:
        lines = ["@dataclasses.dataclass", f"class {name}:", f'    """{_sentence(rng)}."""', ""]
        lines += [f"    {f}: {rng.choice(TYPES)} = {rng.randint(0, 9)}" for f in fields]
    else:
        args = ", ".join(f"{f}: int" for f in fields)
        lines = [f"class {name}:", f'    """{_sentence(rng)}."""', ""]
        lines += [f"    def __init__(self, {args}) -> None:"]
        lines += [f"        self.{f} = {f}" for f in fields]
    for _ in range(rng.randint(3, 6)):
        lines += ["", *_function(rng, "    ", f"{rng.choice(WORDS)}_{rng.choice(WORDS)}", True)]
    return lines


def _module(rng: random.Random, module: str, earlier: list[tuple[str, str]]) -> str:
    """One module of 150-400 lines that imports a few names from modules written before it."""
    lines = [f'"""{_sentence(rng)}."""', "", "from __future__ import annotations", ""]
    lines += ["import dataclasses", "import functools", "import logging", ""]
    lines += [
        f"from {mod} import {name}" for mod, name in rng.sample(earlier, min(3, len(earlier)))
    ]
    lines += ["", "logger = logging.getLogger(__name__)", ""]
    for word in rng.sample(WORDS, rng.randint(2, 5)):
        lines.append(f"{word.upper()}_LIMIT = {rng.randint(1, 4096)}")
    target, defined = rng.randint(150, 400), []
    while len(lines) < target - 20:
        if rng.random() < 0.35:
            name = _camel(rng)
            body = _class(rng, name)
        else:
            name = f"{rng.choice(WORDS)}_{rng.choice(WORDS)}_{len(lines)}"
            body = _function(rng, "", name, False)
        lines += ["", "", *body]
        defined.append(name)
    earlier += [(module, name) for name in rng.sample(defined, min(2, len(defined)))]
    return "\n".join(lines) + "\n"


def generate_repository(root: Path, target_lines: int, seed: int = SEED) -> None:
    """Write a package of modules under `root` until it holds `target_lines` lines of Python,
    and commit it (git identity and dates fixed, global git config ignored)."""
    rng = random.Random(seed)
    earlier: list[tuple[str, str]] = []
    total, sub = 0, root
    while total < target_lines:
        if sub == root or len(list(sub.iterdir())) > 12:  # a new subpackage every dozen modules
            sub = root / "src" / "acme" / f"{rng.choice(WORDS)}_{total // 1000}"
            sub.mkdir(parents=True)
            (sub / "__init__.py").write_text(f'"""{_sentence(rng)}."""\n')
            total += 1
        name = f"{rng.choice(WORDS)}_{rng.choice(WORDS)}"
        while (sub / f"{name}.py").exists():
            name = f"{rng.choice(WORDS)}_{rng.choice(WORDS)}"
        module = f"acme.{sub.name}.{name}"
        text = _module(rng, module, earlier)
        (sub / f"{name}.py").write_text(text)
        total += text.count("\n")
    (root / "README.md").write_text("# acme\n\nGenerated for a benchmark.\n")
    env = {
        **os.environ,
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "bench",
        "GIT_AUTHOR_EMAIL": "bench@example.com",
        "GIT_COMMITTER_NAME": "bench",
        "GIT_COMMITTER_EMAIL": "bench@example.com",
        "GIT_AUTHOR_DATE": "2024-01-01T00:00:00+00:00",
        "GIT_COMMITTER_DATE": "2024-01-01T00:00:00+00:00",
    }
    for cmd in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "generate"]):
        subprocess.run(["git", *cmd], cwd=root, env=env, check=True)


# ---------------------------------------------------------------------------------------------
# Measurement.


def _log(message: str) -> None:
    print(f"[snapshot_speed] {message}", file=sys.stderr, flush=True)


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
    root: Path, lines: int, repeats: int, model: LoadedModel, hyper: LoadedHypernet
) -> dict[str, Any]:
    cfg = SnapshotConfig()
    t = time.perf_counter()
    generate_repository(root, lines)
    _log(f"{lines} lines: generated and committed in {time.perf_counter() - t:.1f}s")

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
    _log(f"{lines} lines: chunked {len(chunked.chunks)} chunks in {chunk_s:.3f}s (median)")

    cold_all, cold = _timed_snapshots(root, model, hyper, repeats, cold=True)
    cold_s = statistics.median(cold_all)
    _log(f"{lines} lines: cold snapshot {cold_s:.2f}s (median), stages {cold.seconds}")
    cached_all, cached = _timed_snapshots(root, model, hyper, repeats, cold=False)
    cached_s = statistics.median(cached_all)
    _log(f"{lines} lines: cached snapshot {cached_s:.3f}s (median), stages {cached.seconds}")

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="1000,10000,50000", help="lines per generated repo")
    parser.add_argument("--repeats", type=int, default=3, help="runs per median")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    args = parser.parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(",") if s.strip())
    repeats = max(1, args.repeats)
    if not sizes or min(sizes) < 1:
        parser.error("--sizes takes positive line counts, e.g. 1000,10000,50000")

    setup = setup_model(MODEL, args.threads)
    model, hyper, setup_s, load_before = setup.model, setup.hyper, setup.seconds, setup.load_before
    _log(f"model {MODEL} and untrained hypernetwork ready in {setup_s:.2f}s")

    results = []
    for lines in sizes:
        with tempfile.TemporaryDirectory(prefix=f"r2l-bench-{lines}-") as tmp:
            results.append(measure_size(Path(tmp), lines, repeats, model, hyper))

    report = {
        "benchmark": "snapshot_speed",
        "machine": machine_info(load_before),
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
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
