"""Renders a benchmark report as Markdown: the compact summary table, a table per track (and
the evolution track's after-rename subsets and per-commit decay), overlap, adapter spread,
costs, and the skip lines."""

from __future__ import annotations

import math
from typing import Any

from benchmark.report import SPLITS, find_row


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


def _share(report: dict[str, Any], track: str, key: str = "names_target") -> str:
    """The share of a track's targets that hold a name the repository defines (`key`
    "names_unseen": one the prompt does not show), by split."""
    parts = [
        f"{o['split']} {_pct(o[key])}%"
        for o in report["overlap"]
        if o["track"] == track and o["split"] != "all" and o.get(key) is not None
    ]
    return ", ".join(parts) + " of the tasks" if parts else "share unknown"


def _contamination_lines(report: dict[str, Any]) -> list[str]:
    """A scoring run's (`--generator-dir`) contamination check, and what it kept."""
    check = report.get("contamination")
    if check is None:
        return []
    found = check["contaminated"]
    lines = [
        "## Contamination check",
        "",
        f"Test repositories compared with {len(check['manifests'])} training manifests "
        "(base model and scored checkpoints) by name/URL and by .py file sha256: "
        + (f"{len(found)} CONTAMINATED, kept by --allow-contaminated:" if found else "all clean."),
    ]
    lines += [f"- **CONTAMINATED** {line}" for hits in found.values() for line in hits]
    return [*lines, ""]


def _edits(src: dict[str, Any]) -> str:
    """ " (with local edits: a.py, b.py)" for a dirty source revision, "" for a clean one."""
    if not src.get("dirty"):
        return ""
    edited = src.get("edited")
    return f" (with local edits: {', '.join(edited)})" if edited else " (with local edits)"


def render_markdown(report: dict[str, Any]) -> str:
    cfg = report["config"]
    src = report["source"]
    lines = [
        "# repo2lora bench",
        "",
        f"- suite: `{' '.join(cfg['suite'])}`; base model: {report['base_model']['description']}",
        f"- seed {cfg['seed']}; source {str(src.get('sha'))[:12]}"
        + _edits(src)
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
    lines += _contamination_lines(report)
    titles = {"static": "Static track (snapshot of HEAD)", "evo": "Evolution track"}
    for track in ("static", "evo"):
        table = _track_table(report, track)
        if not table:
            continue
        lines += [f"## {titles[track]}", "", *table, "", _overlap_line(report, track), ""]
        named = _track_table(report, track, "repo-name")
        if named:
            title = "Tasks whose target holds a name the repository defines"
            lines += [f"### {title} ({_share(report, track)})", "", *named, ""]
        unseen = _track_table(report, track, "repo-name-unseen")
        if unseen:
            title = "Of those, tasks where that name is not in the prompt the model sees"
            lines += [f"### {title} ({_share(report, track, 'names_unseen')})", "", *unseen, ""]
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
                + (
                    f", of their weight updates (scaling * B A) {sp['delta_cosine']:.4f}"
                    if "delta_cosine" in sp
                    else ""
                )
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
        if "checkpoint" in cost:  # scored as given (--generator-dir), not trained here
            lines.append(
                f"- `{name}`: the given checkpoint {cost['checkpoint']} (not trained here), "
                f"{cost['params'] / 1e6:.2f}M parameters"
            )
            continue
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
