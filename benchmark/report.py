"""Turns a benchmark run's per-task records into its report (what bench.json holds): aggregate
rows (track x split x subset x method), overlap statistics, per-commit-distance decay, target
kinds and costs, with the config, seeds, versions and git sha. `benchmark.markdown` renders it
and `benchmark.plots` draws it."""

from __future__ import annotations

import collections
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from benchmark.config import BenchConfig
    from benchmark.prepare import PreparedRepo, Skip
    from benchmark.train import Trained
    from repo2lora.models.loading import LoadedModel

Record = dict[str, Any]
SPLITS = ("in-repo", "cross-repo")
# Evolution-track subsets (synthetic suites know their renames from the manifest): tasks
# added at or after the walk's first rename, and tasks whose target is a renamed-to name; on
# both tracks, tasks whose target holds a name the repository defines (`repo-name`), and those
# of them where that name is not in the prompt the model sees (`repo-name-unseen`).
SUBSETS = ("all", "after-rename", "renamed-target", "repo-name", "repo-name-unseen")
STATIC_SUBSETS = ("all", "repo-name", "repo-name-unseen")
METRICS = (
    "strict_em",
    "reference_cut_em",
    "edit_similarity",
    "nll",
    "prompt_tokens",
    "retrieved_tokens",
    "seconds",
)


def _mean(values: Iterable[float | None]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def in_subset(rec: Record, subset: str) -> bool:
    if subset == "all":
        return True
    if subset == "after-rename":
        return bool(rec.get("after_rename"))
    if subset == "repo-name":
        return bool(rec.get("names_target"))
    if subset == "repo-name-unseen":
        return bool(rec.get("names_unseen"))
    return bool(rec.get("renamed_target"))


def method_order(records: Sequence[Record]) -> list[str]:
    """Methods in the order the records first name them."""
    seen: dict[str, None] = {}
    for rec in records:
        for name in rec["methods"]:
            seen.setdefault(name, None)
    return list(seen)


def aggregate(records: Sequence[Record]) -> list[dict[str, Any]]:
    """One row per (track, split, subset, method) that has tasks: mean of every metric over
    the tasks (NLL over the tasks that have one). Split "all" pools both splits."""
    rows: list[dict[str, Any]] = []
    for track in sorted({r["track"] for r in records}, key=lambda t: (t != "static", t)):
        in_track = [r for r in records if r["track"] == track]
        names = method_order(in_track)
        for split in (*SPLITS, "all"):
            for subset in SUBSETS if track == "evo" else STATIC_SUBSETS:
                group = [
                    r
                    for r in in_track
                    if (split == "all" or r["split"] == split) and in_subset(r, subset)
                ]
                if not group:
                    continue
                for name in names:
                    res = [r["methods"][name] for r in group if name in r["methods"]]
                    if not res:
                        continue
                    row: dict[str, Any] = {
                        "track": track,
                        "split": split,
                        "subset": subset,
                        "method": name,
                        "n": len(res),
                    }
                    for metric in METRICS:
                        row[metric] = _mean(x[metric] for x in res)
                    rows.append(row)
    return rows


def find_row(
    rows: Sequence[dict[str, Any]], track: str, split: str, method: str, subset: str = "all"
) -> dict[str, Any] | None:
    for row in rows:
        if (row["track"], row["split"], row["subset"], row["method"]) == (
            track,
            split,
            subset,
            method,
        ):
            return row
    return None


def overlap(records: Sequence[Record]) -> list[dict[str, Any]]:
    """Per (track, split): the share of targets found verbatim in the prompt the model sees,
    in the retrieval prompt's retrieved chunks too (when run), and among the training targets.
    High shares mean a method can score by copying rather than by knowing the repository."""
    out = []
    for track in sorted({r["track"] for r in records}, key=lambda t: (t != "static", t)):
        for split in (*SPLITS, "all"):
            group = [
                r
                for r in records
                if r["track"] == track and (split == "all" or r["split"] == split)
            ]
            if not group:
                continue
            out.append(
                {
                    "track": track,
                    "split": split,
                    "n": len(group),
                    "target_in_prompt": _mean(float(r["target_in_prompt"]) for r in group),
                    "target_in_training": _mean(float(r["target_in_training"]) for r in group),
                    # the share of targets that hold a name the repository defines
                    "names_target": _mean(
                        float(r["names_target"]) for r in group if r.get("names_target") is not None
                    ),
                    # the share whose target holds a defined name the prompt does not show
                    "names_unseen": _mean(
                        float(r["names_unseen"]) for r in group if r.get("names_unseen") is not None
                    ),
                }
            )
    return out


def decay(records: Sequence[Record]) -> dict[str, dict[int, dict[str, float | int | None]]]:
    """Evolution track, both splits pooled: per method, per commits since the walk's start
    snapshot, the number of tasks, strict EM and mean NLL."""
    evo = [r for r in records if r["track"] == "evo"]
    out: dict[str, dict[int, dict[str, float | int | None]]] = {}
    for name in method_order(evo):
        by_step: dict[int, list[dict[str, Any]]] = collections.defaultdict(list)
        for r in evo:
            if name in r["methods"]:
                by_step[int(r["step"])].append(r["methods"][name])
        out[name] = {
            step: {
                "n": len(res),
                "strict_em": _mean(float(x["strict_em"]) for x in res),
                "nll": _mean(x["nll"] for x in res),
            }
            for step, res in sorted(by_step.items())
        }
    return out


def target_kinds(records: Sequence[Record]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for track in sorted({r["track"] for r in records}):
        counts = collections.Counter(r["target_kind"] for r in records if r["track"] == track)
        out[track] = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return out


def adapter_costs(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per track and method: mean adapter-making seconds over repositories (generated
    adapters: state + LoRA generation + hot swap; per-repo LoRA: training wall time/steps)."""
    out: dict[str, dict[str, Any]] = {}
    for track, repos in results.items():
        per: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
        for res in repos.values():
            for name, cost in res.get("adapters", {}).items():
                per[name].append(cost)
        track_out: dict[str, Any] = {}
        for name, costs in per.items():
            if "adapter_seconds" in costs[0]:
                track_out[name] = {
                    "adapter_seconds_mean": _mean(c["adapter_seconds"] for c in costs),
                    "repos": len(costs),
                }
            else:
                track_out[name] = {
                    "train_seconds_mean": _mean(c.get("seconds") for c in costs),
                    "train_seconds_total": sum(float(c.get("seconds") or 0.0) for c in costs),
                    "steps": _mean(c.get("steps") for c in costs),
                    "repos": len(costs),
                    "cached": sum(1 for c in costs if c.get("cached")),
                }
        out[track] = track_out
    return out


def build_report(
    *,
    cfg: BenchConfig,
    base: LoadedModel,
    prepared: list[PreparedRepo],
    split_of: dict[str, str],
    skips: list[Skip],
    failures: list[dict[str, str]],
    trained: Trained,
    notes: list[str],
    results: dict[str, dict[str, Any]],
    versions: dict[str, str],
    source: dict[str, Any],
    wall_seconds: float,
    timings: dict[str, float],
    spread: dict[str, Any],
) -> dict[str, Any]:
    """Everything the run measured, as one JSON-ready dict."""
    from dataclasses import asdict

    records = [
        rec for track in results.values() for res in track.values() for rec in res["records"]
    ]
    repos = []
    for p in prepared:
        repos.append(
            {
                "repo": p.label,
                "path": str(p.source.path),
                "split": split_of[p.label],
                "commit": p.static.commit if p.static else None,  # HEAD: the data's version
                "static_tasks": len(p.static.tasks) if p.static else 0,
                "evo_tasks": len(p.evo.data.evo_tasks) if p.evo else 0,
                "commits_walked": len(p.evo.data.encoding.diffs) if p.evo else 0,
                "commits_total": p.evo.commits_total if p.evo else None,
                "chunks": len(p.static.chunks) if p.static else 0,
                "notes": p.notes,
            }
        )
    return {
        "benchmark": "repo2lora RepoPeftBench-style",
        "config": cfg.to_json(),
        "seeds": {"suite": cfg.seed, "splits": cfg.seed, "training": cfg.seed},
        "versions": versions,
        "source": source,
        "base_model": {
            "spec": base.info.spec,
            "description": base.info.description,
            "identity": base.info.identity,
            "untrained": base.info.untrained,
        },
        "wall_seconds": wall_seconds,
        "timings": timings,
        "adapter_spread": spread,
        "repos": repos,
        "skipped": [asdict(s) for s in skips],
        "failures": failures,
        "notes": notes,
        "training": trained.costs,
        "constant_prediction": trained.constant,
        "summary": aggregate(records),
        "overlap": overlap(records),
        "decay": decay(records),
        "target_kinds": target_kinds(records),
        "adapter_costs": adapter_costs(results),
        "metric_notes": {
            "strict_em": "whitespace-normalised exact match of the syntax-cut prediction "
            "(never cut using the reference)",
            "reference_cut_em": "paper-style EM: the completion cut to the reference's length; "
            "inflated, reported only beside strict EM",
            "edit_similarity": "rapidfuzz fuzz.ratio / 100 of the syntax-cut prediction",
            "nll": "mean per-token NLL (nats) of the reference target after the prompt, "
            "teacher-forced",
            "prompt_tokens": "tokens of the prompt the model sees (budget-cut)",
            "retrieved_tokens": "tokens retrieval added (rag only)",
            "seconds": "wall seconds to produce one completion (retrieval included; adapter "
            "making is in adapter_costs)",
        },
        "records": records,
    }
