"""Turns a benchmark run's per-task records into its report: aggregate rows (track x split x
subset x method), overlap statistics, per-commit-distance decay, costs, and the files a reader
gets: bench.json (every number, config, seeds, versions, git sha), bench.md (the tables) and
plots/ (PNG)."""

from __future__ import annotations

import collections
import json
import math
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from benchmark.harness import BenchConfig, PreparedRepo, Skip, Trained
    from repo2lora.models.loading import LoadedModel

Record = dict[str, Any]
SPLITS = ("in-repo", "cross-repo")
# Evolution-track subsets (synthetic suites know their renames from the manifest): tasks
# added at or after the walk's first rename, and tasks whose target is a renamed-to name.
SUBSETS = ("all", "after-rename", "renamed-target")
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
            for subset in SUBSETS if track == "evo" else ("all",):
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


# --- writing ---------------------------------------------------------------------------------


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _num(x: float | None, digits: int = 3) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _track_table(report: dict[str, Any], track: str, subset: str = "all") -> list[str]:
    rows = [r for r in report["summary"] if r["track"] == track and r["subset"] == subset]
    splits = [s for s in (*SPLITS, "all") if any(r["split"] == s for r in rows)]
    if not rows:
        return []
    names = list(dict.fromkeys(r["method"] for r in rows))
    head = ["method"]
    for s in splits:
        n = max(r["n"] for r in rows if r["split"] == s)
        head += [f"{s} EM (n={n})", "EM ref-cut†", "ES", "NLL"]
    head += ["prompt tok", "s/task"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in names:
        cells = [f"`{name}`"]
        pooled = None
        for s in splits:
            row = next((r for r in rows if r["split"] == s and r["method"] == name), None)
            if row is None:
                cells += ["–"] * 4
                continue
            pooled = row
            cells += [
                _pct(row["strict_em"]),
                _pct(row["reference_cut_em"]),
                _num(row["edit_similarity"]),
                _num(row["nll"]),
            ]
        cells += [
            _num(pooled["prompt_tokens"], 0) if pooled else "–",
            _num(pooled["seconds"], 3) if pooled else "–",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _overlap_line(report: dict[str, Any], track: str) -> str:
    parts = []
    for o in report["overlap"]:
        if o["track"] == track and o["split"] != "all":
            parts.append(
                f"{o['split']}: {_pct(o['target_in_prompt'])}% of targets appear verbatim in "
                f"the prompt, {_pct(o['target_in_training'])}% among the training targets"
            )
    return "Overlap — " + "; ".join(parts) + "." if parts else ""


def render_markdown(report: dict[str, Any]) -> str:
    cfg = report["config"]
    src = report["source"]
    lines = [
        "# repo2lora bench",
        "",
        f"- suite: `{' '.join(cfg['suite'])}`; base model: {report['base_model']['description']}",
        f"- seed {cfg['seed']}; source {str(src.get('sha'))[:12]}"
        + (" (with local edits)" if src.get("dirty") else "")
        + f"; wall time {report['wall_seconds']:.0f} s",
        f"- repositories: {len(report['repos'])} used "
        f"({sum(1 for r in report['repos'] if r['split'] == 'test')} held out for cross-repo), "
        f"{len(report['skipped'])} skip lines",
        "",
        "EM = strict exact match (%, whitespace-normalised, the prediction cut by its own "
        "syntax, never by the reference). †EM ref-cut = the reference paper's looser match "
        "(completion cut to the reference's length), shown only beside strict EM. "
        "ES = edit similarity (0–1). NLL = mean per-token NLL of the reference target (nats; "
        "lower is better; a smooth signal where EM is near 0).",
        "",
        "## Summary (strict EM % / ES / NLL)",
        "",
        compact_table(report),
        "",
    ]
    titles = {"static": "Static track (snapshot of HEAD)", "evo": "Evolution track"}
    for track in ("static", "evo"):
        table = _track_table(report, track)
        if not table:
            continue
        lines += [f"## {titles[track]}", "", *table, "", _overlap_line(report, track), ""]
        if track == "evo":
            for subset, title in (
                ("after-rename", "Tasks added at or after the walk's first rename"),
                ("renamed-target", "Tasks whose target is a renamed-to name"),
            ):
                sub = _track_table(report, track, subset)
                if sub:
                    lines += [f"### {title}", "", *sub, ""]
            lines += _decay_table(report)
    lines += _spread_lines(report)
    lines += _cost_lines(report)
    if report["skipped"] or report["notes"]:
        lines += ["## Skipped and notes", ""]
        lines += [
            f"- skipped `{s['repo']}` ({s['track']}): {s['reason']}" for s in report["skipped"]
        ]
        lines += [f"- {n}" for n in report["notes"]]
        for r in report["repos"]:
            lines += [f"- `{r['repo']}`: {n}" for n in r["notes"]]
        lines.append("")
    lines += [
        "Target kinds: "
        + "; ".join(
            f"{track}: " + ", ".join(f"{k} {v}" for k, v in kinds.items())
            for track, kinds in report["target_kinds"].items()
        ),
        "",
    ]
    return "\n".join(lines)


def _decay_table(report: dict[str, Any]) -> list[str]:
    dec = report["decay"]
    if not dec:
        return []
    steps = sorted({int(s) for per in dec.values() for s in per})
    lines = [
        "### Per-commit-distance decay (both splits; NLL, and strict EM % in brackets)",
        "",
        "| method | " + " | ".join(f"+{s}" for s in steps) + " |",
        "|---|" + "---|" * len(steps),
    ]
    for name, per in dec.items():
        if name == "constant":
            continue
        cells = []
        for s in steps:
            v = per.get(s) if s in per else per.get(str(s))
            cells.append("–" if not v else f"{_num(v['nll'], 2)} ({_pct(v['strict_em'])})")
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    n_row = []
    first = next(iter(dec.values()))
    for s in steps:
        v = first.get(s) if s in first else first.get(str(s))
        n_row.append(str(v["n"]) if v else "0")
    lines += ["| tasks | " + " | ".join(n_row) + " |", ""]
    return lines


def _spread_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    for name, sp in report.get("adapter_spread", {}).items():
        if "adapter_cosine" in sp:
            lines.append(
                f"- `{name}`: generated adapters of {sp['repos']} repositories have mean "
                f"pairwise cosine similarity {sp['adapter_cosine']:.4f}"
                + (f" (states {sp['state_cosine']:.4f})" if "state_cosine" in sp else "")
                + "; 1.0 would be one adapter for every repository"
            )
    return ["## Adapter spread", "", *lines, ""] if lines else []


def _cost_lines(report: dict[str, Any]) -> list[str]:
    lines = ["## Costs", ""]
    if report.get("timings"):
        lines.append(
            "- wall seconds by stage: "
            + ", ".join(f"{k} {v:.0f}" for k, v in report["timings"].items())
        )
    for name, cost in report["training"].items():
        secs = cost.get("seconds")
        lines.append(
            f"- train `{name}`: {cost.get('steps')} steps"
            + (f", {secs:.1f} s" if isinstance(secs, int | float) else "")
            + (f", {cost['params'] / 1e6:.2f}M parameters" if cost.get("params") else "")
            + (" (cached from an earlier run)" if cost.get("cached") else "")
        )
    for track, per in report["adapter_costs"].items():
        for name, c in per.items():
            if "adapter_seconds_mean" in c:
                lines.append(
                    f"- {track} `{name}`: {_num(c['adapter_seconds_mean'], 4)} s per adapter "
                    f"(state + LoRA generation + hot swap), {c['repos']} repositories"
                )
            else:
                lines.append(
                    f"- {track} `{name}`: {_num(c['train_seconds_mean'], 1)} s and "
                    f"{_num(c['steps'], 0)} steps of training per repository, "
                    f"{c['repos']} repositories"
                )
    lines.append("")
    return lines


def write_plots(report: dict[str, Any], plots: Path) -> list[Path]:
    """em_by_method.png (strict EM and NLL by method and split, per track) and, when the
    evolution track ran, evo_decay.png (by commits since the walk's start snapshot)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots.mkdir(parents=True, exist_ok=True)
    written = []
    tracks = [t for t in ("static", "evo") if any(r["track"] == t for r in report["summary"])]
    if tracks:
        fig, axes = plt.subplots(2, len(tracks), figsize=(7 * len(tracks), 8), squeeze=False)
        for col, track in enumerate(tracks):
            rows = [r for r in report["summary"] if r["track"] == track and r["subset"] == "all"]
            names = list(dict.fromkeys(r["method"] for r in rows))
            for row_i, metric in enumerate(("strict_em", "nll")):
                ax = axes[row_i][col]
                width = 0.8 / len(SPLITS)
                for k, split in enumerate(SPLITS):
                    vals = []
                    for name in names:
                        row = find_row(rows, track, split, name)
                        v = row[metric] if row else None
                        vals.append(float("nan") if v is None else v * (100 if row_i == 0 else 1))
                    ax.bar([i + k * width for i in range(len(names))], vals, width, label=split)
                ax.set_xticks([i + width / 2 for i in range(len(names))])
                ax.set_xticklabels(names, rotation=35, ha="right", fontsize=8)
                ax.set_ylabel("strict EM (%)" if row_i == 0 else "target NLL (nats)")
                ax.set_title(f"{track} track")
                ax.legend(fontsize=8)
        fig.tight_layout()
        path = plots / "em_by_method.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    if report["decay"]:
        fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
        for name, per in report["decay"].items():
            if name == "constant":
                continue
            steps = sorted(int(s) for s in per)
            get = lambda s, key, per=per: (per.get(s) or per.get(str(s)))[key]  # noqa: E731
            em = [100 * (get(s, "strict_em") or 0.0) for s in steps]
            nll = [get(s, "nll") for s in steps]
            axes[0].plot(steps, em, marker="o", label=name)
            axes[1].plot(
                steps, [float("nan") if v is None else v for v in nll], marker="o", label=name
            )
        axes[0].set_ylabel("strict EM (%)")
        axes[1].set_ylabel("target NLL (nats)")
        for ax in axes:
            ax.set_xlabel("commits since the start snapshot")
            ax.legend(fontsize=7)
        fig.suptitle("evolution track: per-commit-distance decay")
        fig.tight_layout()
        path = plots / "evo_decay.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def write_report(report: dict[str, Any], out: Path) -> dict[str, Path]:
    """bench.json, bench.md and the plots, each written atomically."""
    out = Path(out)
    paths = {"json": out / "bench.json", "markdown": out / "bench.md"}
    _atomic_write(paths["json"], json.dumps(report, indent=1, sort_keys=True, default=str) + "\n")
    _atomic_write(paths["markdown"], render_markdown(report))
    for p in write_plots(report, out / "plots"):
        paths[p.stem] = p
    return paths


def compact_table(report: dict[str, Any]) -> str:
    """One Markdown table of a report: a row per method, for each track and split its strict
    EM (%), edit similarity and target NLL; "–" where a method has no row (the evolution
    track has no per-repository LoRA, SHINE and DnD no evolving state)."""
    cols = [
        (t, s)
        for t in ("static", "evo")
        for s in SPLITS
        if any(r["track"] == t and r["split"] == s for r in report["summary"])
    ]
    methods: list[str] = []
    for r in report["summary"]:
        if r["subset"] == "all" and r["method"] not in methods:
            methods.append(r["method"])
    head = " | ".join(f"{t} {s}: EM / ES / NLL" for t, s in cols)
    lines = [f"| method | {head} |", "|---" * (len(cols) + 1) + "|"]
    for name in methods:
        cells = []
        for t, s in cols:
            row = find_row(report["summary"], t, s, name, "all")
            cells.append(
                "–"
                if row is None
                else f"{_pct(row['strict_em'])} / {_num(row['edit_similarity'], 2)} / "
                f"{_num(row['nll'], 2)}"
            )
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    n = {
        (t, s): max(r["n"] for r in report["summary"] if (r["track"], r["split"]) == (t, s))
        for t, s in cols
    }
    lines.append("")
    lines.append("Tasks: " + ", ".join(f"{t} {s} {n[(t, s)]}" for t, s in cols) + ".")
    return "\n".join(lines)
