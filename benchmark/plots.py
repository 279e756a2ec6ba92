"""Draws a benchmark report's plots (PNG): strict EM and target NLL by method and split per
track, and the evolution track's per-commit-distance decay."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmark.report import SPLITS, find_row


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
