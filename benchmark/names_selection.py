"""Which names a code2lora-names generator's memory holds, against the names the held-out tasks
need: the memory can raise only the names it holds (`NameMemory.select`: best learned score
first, while their tokens fit the rank), so a target name left out cannot come out of it.

Per held-out repository of a built dataset (`repo2lora dataset build`): the names defined, how
many the memory holds, the scores' range, and for the static tasks whose target holds a defined
name, whether the memory holds that name. Across all names: the rank correlation between the
learned score and how often a name is mentioned. No generation; seconds. Prints one JSON object.

    python -m benchmark.names_selection --generator-dir DIR --dataset DIR
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

from benchmark.runners import target_names
from benchmark.speed.scaffold import SpeedRun, checkpoint_on_dataset_options, run_speed_benchmark
from repo2lora.hypernet.checkpoint import load_generator
from repo2lora.hypernet.names import NamesHypernet
from repo2lora.models.loading import describe_base_model, load_base_model
from repo2lora.tasks.dataset_build import built_repo_dirs, check_encoded_by, load_built_repo
from repo_encoder.errors import UserError


def spearman(xs: list[float], ys: list[float]) -> float | None:
    """Spearman's rank correlation (average ranks for ties); None for fewer than 3 pairs."""
    if len(xs) < 3:
        return None

    def ranks(v: list[float]) -> list[float]:
        order = sorted(range(len(v)), key=v.__getitem__)
        out = [0.0] * len(v)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                out[order[k]] = (i + j) / 2
            i = j + 1
        return out

    rx, ry = ranks(xs), ranks(ys)
    mx, my = statistics.mean(rx), statistics.mean(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    sx = math.sqrt(sum((a - mx) ** 2 for a in rx))
    sy = math.sqrt(sum((b - my) ** 2 for b in ry))
    return round(cov / (sx * sy), 4) if sx and sy else None


@torch.no_grad()
def selection_report(
    generator_dir: Path, dataset: Path, model: str | None, select_by: str | None = None
) -> dict[str, Any]:
    """The report; `select_by` ("score" or "prior") overrides the generator's own order."""
    info = describe_base_model(model)
    base = load_base_model(info)
    net = load_generator(str(generator_dir), info).net.eval()
    if not isinstance(net, NamesHypernet):
        raise UserError(f"{generator_dir}: not a code2lora-names generator")
    if select_by is not None:
        net.names.select_by = select_by
    probe = net.name_probe(base.model, base.tokenizer)
    assert probe is not None
    repos: list[dict[str, Any]] = []
    scores_all: list[float] = []
    mentions_all: list[float] = []
    needed = held_needed = 0
    for d in built_repo_dirs(dataset):
        built = load_built_repo(d)
        check_encoded_by(built, dataset, info.model_key)
        if not built.file_names:
            continue
        names = built.names().names()
        if not names:
            continue
        scores = net.names.scores(names).cpu()
        scores_all += scores.tolist()
        mentions_all += [float(n.mentions) for n in names]
        held = {n.name for n in net.names.select(names, probe).names}
        defined = {n.name for n in names}
        targets = [t["target"] for t in built.tasks if t.get("kind") == "static"]
        wanted = [target_names(t, defined) for t in targets]
        wanted = [w for w in wanted if w]
        n_held = sum(bool(w & held) for w in wanted)
        needed += len(wanted)
        held_needed += n_held
        repos.append(
            {
                "repo": built.summary["name"],
                "names_defined": len(names),
                "names_held": len(held),
                "score_max": round(float(scores.max()), 4),
                "score_median": round(float(scores.median()), 4),
                "name_target_tasks": len(wanted),
                "name_target_tasks_with_a_held_name": n_held,
            }
        )
    if not repos:
        raise UserError(f"{dataset}: no repository with names (build it with `dataset build`)")
    return {
        "generator": str(generator_dir),
        "dataset": str(dataset),
        "select_by": net.names.select_by,
        "repositories": len(repos),
        "name_target_tasks": needed,
        "held_pct": round(100 * held_needed / max(1, needed), 2),
        "names_held_median": statistics.median(r["names_held"] for r in repos),
        "names_defined_median": statistics.median(r["names_defined"] for r in repos),
        "score_median": round(statistics.median(scores_all), 4),
        "score_vs_mentions_spearman": spearman(scores_all, mentions_all),
        "per_repo": repos,
    }


def main(argv: list[str] | None = None) -> int:
    def add_options(parser: argparse.ArgumentParser) -> None:
        checkpoint_on_dataset_options(parser, "a code2lora-names dir")
        parser.add_argument(
            "--select",
            choices=("score", "prior"),
            help="hold names in this order instead of the generator's own (`--names-select`)",
        )

    def measure(run: SpeedRun) -> dict[str, Any]:
        args = run.args
        return selection_report(args.generator_dir, args.dataset, args.model, args.select)

    return run_speed_benchmark(
        "names_selection",
        __doc__,
        add_options,
        measure,
        argv,
        prog="python -m benchmark.names_selection",
    )


if __name__ == "__main__":
    sys.exit(main())
