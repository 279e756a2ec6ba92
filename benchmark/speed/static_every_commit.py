"""Times the static state of every commit two ways on one real repository's last commits: at
the cost of the diff (`update --static-every-commit`: the pooling sums moved by each commit's
chunk diff) and by a fresh snapshot of every commit (read, chunk, every chunk's vector from the
cache, pool them all), and checks that both give the same states. Prints one JSON object.

A first pass snapshots every commit of the walk (encoding what is not cached yet), so both timed
passes find every vector cached: the comparison is of the per-commit work with a warm cache,
not of encoding (the O(diff) step also stores its sums and state, one transaction).

    python -m benchmark.speed.static_every_commit --repo /work/.mirror/owner+name/repo \
        [--commits 30] [--model M] [--threads 1] [--out F.json]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmark.speed.scaffold import SpeedRun, run_speed_benchmark
from evo_state.store import open_store
from repo2lora.hypernet.checkpoint import load_hypernet, shipped_hypernet_dir
from repo2lora.models.loading import describe_base_model, load_base_model
from repo2lora.snapshot import STATIC_KIND, encode_snapshot, open_context
from repo2lora.update import update_repository


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repo", required=True, help="a work tree or a bare git directory")
    parser.add_argument("--commits", type=int, default=30, help="the walk's last commits")
    parser.add_argument("--model", default=None, help="base model (default: the embedded one)")


def _work_tree(path: Path, tmp: Path) -> Path:
    if not ((path / "HEAD").is_file() and (path / "objects").is_dir()):
        return path
    out = tmp / "work"
    subprocess.run(
        ["git", "clone", "-q", "--shared", "--no-checkout", str(path), str(out)], check=True
    )
    return out


def _spread(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 4),
        "mean": round(statistics.fmean(values), 4),
        "max": round(max(values), 4),
    }


def _measure(run: SpeedRun) -> dict[str, Any]:
    info = describe_base_model(run.args.model)
    base = load_base_model(info)
    shipped = shipped_hypernet_dir(info, "code2lora-static")
    hyper = load_hypernet(str(shipped) if shipped else None, info)
    with tempfile.TemporaryDirectory() as tmp:
        root = _work_tree(Path(run.args.repo), Path(tmp))
        ctx = open_context(root, loaded_model=base, loaded_hypernet=hyper)
        n = min(
            run.args.commits, int(ctx.repo.git.rev_list("--first-parent", "--count", "HEAD")) - 1
        )
        start = ctx.repo.commit(f"HEAD~{n}").hexsha
        commits = ctx.repo.git.rev_list("--first-parent", "--reverse", f"{start}..HEAD").split()
        run.log(f"warming the vector cache: {n + 1} snapshots")
        t = time.perf_counter()
        with open_store(root) as store:
            for sha in [start, *commits]:
                encode_snapshot(ctx, store, ctx.repo.commit(sha))
        warm_s = time.perf_counter() - t
        run.log(f"fresh snapshot of HEAD~{n}, then {n} commits at the cost of the diff")
        t = time.perf_counter()
        first = update_repository(
            root, start, loaded_model=base, loaded_hypernet=hyper, static_every_commit=True
        )
        start_s = time.perf_counter() - t
        walk = update_repository(
            root, "HEAD", loaded_model=base, loaded_hypernet=hyper, static_every_commit=True
        )
        diff_s = [s.seconds for s in walk.steps]
        run.log("a fresh snapshot of every commit (vectors cached)")
        fresh_s: list[float] = []
        worst = 0.0
        chunks = 0
        with open_store(root) as store:
            for step in walk.steps:
                t = time.perf_counter()
                snap = encode_snapshot(ctx, store, ctx.repo.commit(step.commit))
                with torch.no_grad():
                    h = hyper.net.encode(snap.encoded.vectors)
                fresh_s.append(time.perf_counter() - t)
                chunks = len(snap.chunks)
                rec = store.get_state(step.commit, hyper.key, STATIC_KIND)
                assert rec is not None
                worst = max(worst, float((torch.from_numpy(rec.vector) - h).abs().max()))
    changed = [s.added + s.removed + s.modified for s in walk.steps]
    return {
        "repo": str(run.args.repo),
        "model": info.description,
        "hypernet": hyper.description,
        "commits": len(walk.steps),
        "chunks_at_head": chunks,
        "cache_warming_s": round(warm_s, 2),
        "start_snapshot_s": round(start_s, 2),
        "start_chunks": first.steps[0].added if first.steps else 0,
        "chunks_changed_per_commit": _spread([float(c) for c in changed]),
        "o_diff_s_per_commit": _spread(diff_s),
        "fresh_snapshot_s_per_commit": _spread(fresh_s),
        "speedup_median": round(statistics.median(fresh_s) / statistics.median(diff_s), 1),
        "max_abs_state_difference": worst,
    }


def main(argv: list[str] | None = None) -> int:
    return run_speed_benchmark("static_every_commit", __doc__, _options, _measure, argv)


if __name__ == "__main__":
    raise SystemExit(main())
