"""Times `update_repository` (the evolving state followed commit by commit) on generated git
repositories of growing size with a seeded history of small commits on top (tiny-random model,
CPU), and prints one JSON object: the h_0 snapshot, the per-commit update cost and how it
compares with the targets. Never fails on a missed target.

    python -m benchmark.update_speed [--sizes 5000,50000] [--commits 200] [--threads 1]
                                     [--out F.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmark.common import machine_info, setup_model
from benchmark.snapshot_speed import (
    MODEL,
    SEED,
    WORDS,
    _function,
    _sentence,
    generate_repository,
)
from repo2lora.hypernet.checkpoint import LoadedHypernet
from repo2lora.models.loading import LoadedModel
from repo2lora.update import UpdateConfig, UpdateResult, update_repository
from repo_encoder.snapshot import open_repository, read_snapshot, resolve_commit

TARGET_SIZE_RATIO = 1.5  # median per-commit seconds, largest repository over smallest
TARGET_MEDIAN_COMMIT_S = 0.5
DEFAULT_THREADS = 1  # torch's default oversubscribes the shared 2-core machine (snapshot_speed)

# The identity and clock generate_repository commits with; history continues from its date.
GIT_ENV = {
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
}

# ---------------------------------------------------------------------------------------------
# History generator: seeded edits of the kind ordinary commits make, one git commit each.

DEF_RE = re.compile(r"^( {0,4})def (\w+)\((.*)\)")
INT_RE = re.compile(r"\b\d+\b")
BASE_DATE = 1_704_067_200  # 2024-01-01T00:00:00Z, generate_repository's commit date
EDITS = ("modify", "add", "delete", "module", "rename")
EDIT_WEIGHTS = (58, 18, 12, 10, 2)


def _defs(lines: list[str]) -> list[tuple[int, int, int, list[str]]]:
    """(first line incl. decorators, end line exclusive, body indent, parameter names) of every
    top-level function and method."""
    out = []
    for i, line in enumerate(lines):
        m = DEF_RE.match(line)
        if m is None:
            continue
        indent = len(m.group(1))
        start = i
        while start > 0 and lines[start - 1].startswith(" " * indent + "@"):
            start -= 1
        end = i + 1
        while end < len(lines) and (
            not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > indent
        ):
            end += 1
        while end > i + 1 and not lines[end - 1].strip():  # trailing blank lines stay outside
            end -= 1
        params = re.findall(r"(\w+):", m.group(3)) or ["value"]
        out.append((start, end, indent + 4, params))
    return out


def _modify_function(rng: random.Random, lines: list[str]) -> bool:
    """New statements before one function's `return`, and one of its numbers changed."""
    defs = _defs(lines)
    if not defs:
        return False
    start, end, body, params = rng.choice(defs)
    for j in range(start, end):
        if INT_RE.search(lines[j]) and not lines[j].lstrip().startswith(("def ", "@")):
            lines[j] = INT_RE.sub(str(rng.randint(2, 999)), lines[j], count=1)
            break
    ret = end - 1  # every generated function ends in `return <param>`
    new = _statements_for(rng, " " * body, params, rng.randint(1, 4))
    lines[ret:ret] = new
    return True


def _statements_for(rng: random.Random, pad: str, params: list[str], n: int) -> list[str]:
    word = rng.choice(WORDS)
    out = []
    for k in range(n):
        name = f"{word}_{rng.randint(0, 9999)}_{k}"
        out.append(f"{pad}{name} = {rng.choice(params)} * {rng.randint(2, 99)} + {k}")
    return out


def _add_function(rng: random.Random, lines: list[str], tag: str) -> bool:
    name = f"{rng.choice(WORDS)}_{rng.choice(WORDS)}_{tag}"
    while lines and not lines[-1].strip():
        lines.pop()
    lines += ["", "", *_function(rng, "", name, False)]
    return True


def _delete_function(rng: random.Random, lines: list[str]) -> bool:
    defs = [d for d in _defs(lines) if not lines[d[0]].lstrip().startswith("def __init__")]
    if len(defs) < 4:  # keep every module (and class) with a body
        return False
    start, end, _, _ = rng.choice(defs)
    while start > 0 and not lines[start - 1].strip():  # the blank lines before it go too
        start -= 1
    del lines[start:end]
    return True


def _small_module(rng: random.Random, tag: str) -> str:
    lines = [f'"""{_sentence(rng)}."""', "", "from __future__ import annotations", ""]
    lines += ["import functools", "import logging", "", "logger = logging.getLogger(__name__)"]
    for k in range(rng.randint(1, 3)):
        lines += ["", "", *_function(rng, "", f"{rng.choice(WORDS)}_{tag}_{k}", False)]
    return "\n".join(lines) + "\n"


def _fresh_name(rng: random.Random, folder: Path, tag: str) -> Path:
    path = folder / f"{rng.choice(WORDS)}_{rng.choice(WORDS)}_{tag}.py"
    while path.exists():
        path = folder / f"{rng.choice(WORDS)}_{rng.choice(WORDS)}_{tag}_{rng.randint(0, 999)}.py"
    return path


def _git(root: Path, *args: str, date: str) -> None:
    env = {**os.environ, **GIT_ENV, "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
    subprocess.run(["git", *args], cwd=root, env=env, check=True)


def generate_history(root: Path, commits: int, seed: int) -> dict[str, int]:
    """Add `commits` commits to the repository at `root`, each touching 1-5 modules (modify a
    function, add one, delete one, add a small module, rename a module); the count of each
    edit made."""
    rng = random.Random(seed)
    modules = sorted(p for p in (root / "src").rglob("*.py") if p.name != "__init__.py")
    made = dict.fromkeys(EDITS, 0)
    for c in range(commits):
        tag = f"c{c}"
        for path in rng.sample(modules, min(len(modules), rng.randint(1, 5))):
            edit = rng.choices(EDITS, EDIT_WEIGHTS)[0]
            if edit == "module":
                new = _fresh_name(rng, path.parent, tag)
                new.write_text(_small_module(rng, tag))
                modules.append(new)
            elif edit == "rename":
                new = _fresh_name(rng, path.parent, tag)
                path.rename(new)
                modules[modules.index(path)] = new
            else:
                lines = path.read_text().split("\n")[:-1]
                if edit == "modify":
                    changed = _modify_function(rng, lines)
                elif edit == "add":
                    changed = _add_function(rng, lines, tag)
                else:
                    changed = _delete_function(rng, lines)
                if not changed:
                    edit = "modify"
                    _modify_function(rng, lines)
                path.write_text("\n".join(lines) + "\n")
            made[edit] += 1
        date = f"{BASE_DATE + 3600 * (c + 1)} +0000"  # one commit an hour
        _git(root, "add", "-A", date=date)
        _git(root, "commit", "-q", "-m", f"commit {c}: {_sentence(rng).lower()}", date=date)
    return made


# ---------------------------------------------------------------------------------------------
# Measurement.


def _log(message: str) -> None:
    print(f"[update_speed] {message}", file=sys.stderr, flush=True)


def _spread(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "p95": None, "max": None, "mean": None}
    p95 = statistics.quantiles(values, n=20, method="inclusive")[18] if len(values) > 1 else None
    return {
        "median": round(statistics.median(values), 4),
        "p95": round(p95 if p95 is not None else values[0], 4),
        "max": round(max(values), 4),
        "mean": round(statistics.fmean(values), 4),
    }


def _source_size(root: Path, rev: str) -> tuple[int, int]:
    """(lines, files) of the encoder-visible Python at `rev`."""
    repo = open_repository(root)
    snap = read_snapshot(repo, resolve_commit(repo, rev), UpdateConfig().snapshot.exclusion)
    return sum(data.count(b"\n") for _, data in snap.files), len(snap.files)


def _timed_update(
    root: Path, start: str, model: LoadedModel, hyper: LoadedHypernet
) -> tuple[UpdateResult, list[float], float]:
    """The update from `start` to HEAD, the wall seconds between consecutive step starts (a
    step's own `seconds` plus storing it), and the whole call's wall seconds."""
    marks: list[float] = []

    def progress(stage: str, done: int, total: int) -> None:
        if stage == "update":
            marks.append(time.perf_counter())

    t = time.perf_counter()
    result = update_repository(
        root, "HEAD", start=start, loaded_model=model, loaded_hypernet=hyper, progress=progress
    )
    wall = time.perf_counter() - t
    between = [b - a for a, b in itertools.pairwise(marks[1:])]  # diff steps only
    return result, between, wall


def measure_size(
    root: Path, lines: int, commits: int, model: LoadedModel, hyper: LoadedHypernet
) -> dict[str, Any]:
    t = time.perf_counter()
    generate_repository(root, lines)
    start = resolve_commit(open_repository(root), "HEAD").hexsha
    gen_s = time.perf_counter() - t
    t = time.perf_counter()
    edits = generate_history(root, commits, SEED + lines)
    history_s = time.perf_counter() - t
    _log(f"{lines} lines: repo in {gen_s:.1f}s, {commits} commits in {history_s:.1f}s")
    start_lines, start_files = _source_size(root, start)
    head_lines, head_files = _source_size(root, "HEAD")

    result, between, wall = _timed_update(root, start, model, hyper)
    snap, steps = result.steps[0], result.steps[1:]
    assert snap.source == "snapshot" and all(s.source == "diff" for s in steps)
    per_commit = [s.seconds for s in steps]
    _log(
        f"{lines} lines: h_0 {snap.seconds:.2f}s ({snap.added} chunks), {len(steps)} updates "
        f"median {statistics.median(per_commit) if steps else 0:.4f}s, wall {wall:.1f}s"
    )
    return {
        "requested_lines": lines,
        "lines": start_lines,
        "files": start_files,
        "lines_at_head": head_lines,
        "files_at_head": head_files,
        "commits": len(steps),
        "edits": edits,
        "generate_seconds": {"repository": round(gen_s, 2), "history": round(history_s, 2)},
        "snapshot_h0": {"seconds": snap.seconds, "chunks": snap.added, "files": snap.files},
        "per_commit_seconds": _spread(per_commit),
        "per_commit_seconds_with_store": _spread(between),
        "per_commit_median": {
            "chunks_added": statistics.median(s.added for s in steps) if steps else None,
            "chunks_removed": statistics.median(s.removed for s in steps) if steps else None,
            "chunks_modified": statistics.median(s.modified for s in steps) if steps else None,
            "files": statistics.median(s.files for s in steps) if steps else None,
        },
        "update_wall_seconds": round(wall, 3),
        "update_result_seconds": result.seconds,
    }


def _targets(results: list[dict[str, Any]]) -> dict[str, Any]:
    smallest, largest = results[0], results[-1]
    small_s = smallest["per_commit_seconds"]["median"]
    large_s = largest["per_commit_seconds"]["median"]
    ratio = round(large_s / small_s, 3) if small_s and large_s is not None else None
    typical = max((r["per_commit_seconds"]["median"] or 0.0) for r in results)
    return {
        "size_independence": {
            "target_max_ratio": TARGET_SIZE_RATIO,
            "median_per_commit_largest_over_smallest": ratio,
            "lines": [smallest["lines"], largest["lines"]],
            "met": ratio is not None and ratio <= TARGET_SIZE_RATIO,
        },
        "median_commit": {
            "target_max_seconds": TARGET_MEDIAN_COMMIT_S,
            "measured_slowest_size": round(typical, 4),
            "met": typical <= TARGET_MEDIAN_COMMIT_S,
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="5000,50000", help="lines per generated repo")
    parser.add_argument("--commits", type=int, default=200, help="commits on top of each repo")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument(
        "--threads", type=int, default=DEFAULT_THREADS, help="torch threads (0: torch default)"
    )
    args = parser.parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(",") if s.strip())
    if not sizes or min(sizes) < 1:
        parser.error("--sizes takes positive line counts, e.g. 5000,50000")
    if args.commits < 1:
        parser.error("--commits takes a positive count, e.g. 200")

    setup = setup_model(MODEL, args.threads)
    model, hyper, setup_s, load_before = setup.model, setup.hyper, setup.seconds, setup.load_before
    _log(f"model {MODEL} and untrained hypernetwork ready in {setup_s:.2f}s")

    results = []
    for lines in sizes:
        with tempfile.TemporaryDirectory(prefix=f"r2l-update-{lines}-") as tmp:
            results.append(measure_size(Path(tmp), lines, args.commits, model, hyper))

    report = {
        "benchmark": "update_speed",
        "machine": machine_info(load_before),
        "config": {
            "sizes": sizes,
            "commits": args.commits,
            "seed": SEED,
            "model": MODEL,
            "hypernet": hyper.description,
            "device": "cpu",
            "threads_requested": args.threads,
            "edit_weights": dict(zip(EDITS, EDIT_WEIGHTS, strict=True)),
            "update": dataclasses.asdict(UpdateConfig()),
            "notes": (
                f"torch threads default to {DEFAULT_THREADS} (--threads): torch's own default "
                "oversubscribes this shared 2-core machine and makes per-commit timings "
                "jumpy; model and hypernetwork are loaded once (setup_seconds) and passed in; "
                "one update_repository call per size from the generated commit to HEAD: step "
                "0 is the h_0 snapshot (snapshot_h0), the others are GRU updates "
                "(per_commit_seconds, from each step's own `seconds`); "
                "per_commit_seconds_with_store adds storing the step (measured between "
                "progress calls); each commit touches 1-5 modules; a busy shared machine "
                "(see load_average_1m) slows torch most"
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
