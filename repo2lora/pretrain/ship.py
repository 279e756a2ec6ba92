"""Assembles the embedded default from a `repo2lora pretrain` run and a `repo2lora bench` run that
trained the hypernetworks for that model: copies the files into the package, draws the held-out
loss curve, and writes the card (data manifests, tokens seen, wall time, hardware, losses,
benchmark numbers, the sha256 of every file).

    python -m repo2lora.pretrain.ship --pretrain RUN --bench BENCH_OUT [--origin LABEL=URL ...]

or, with hypernetworks trained by `repo2lora train --dataset` and scored by `repo2lora bench
--generator-dir` (BENCH_OUT then holds the scoring run):

    python -m repo2lora.pretrain.ship --pretrain RUN --bench BENCH_OUT --static DIR --evo DIR
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from repo2lora.atomic import atomic_directory
from repo2lora.hypernet.checkpoint import CARD, WEIGHTS
from repo2lora.models import embedded

MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)
HYPERNET_FILES = (CARD, WEIGHTS)
CORPUS_HASHES = "file-sha256.tsv"  # the sha256 of every pretraining file (`corpus build`)
# where the benchmark run keeps each generator it trained
BENCH_MODELS = {
    "code2lora-static": "models/static/code2lora-static",
    "code2lora-evo": "models/evo/code2lora-evo",
}


def loss_curve(log_path: Path) -> list[dict[str, float]]:
    """The held-out evaluations of a pretraining log, in order."""
    out = []
    for line in log_path.read_text().splitlines():
        event = json.loads(line)
        if event.get("event") == "eval":
            keys = ("step", "tokens", "val_loss", "bits_per_byte")
            out.append({k: event[k] for k in keys if k in event})
    return out


def plot_curve(curve: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
    bpb = all("bits_per_byte" in c for c in curve)
    key = "bits_per_byte" if bpb else "val_loss"
    ax.plot([c["tokens"] / 1e6 for c in curve], [c[key] for c in curve], marker="o")
    ax.set_xlabel("training tokens (millions)")
    ax.set_ylabel("held-out bits per byte" if bpb else "held-out loss (nats/token)")
    ax.set_title("embedded default: held-out packages")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def benchmark_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The summary rows of a bench report (all tasks), rounded for the card."""
    rows = []
    for r in report["summary"]:
        if r["subset"] != "all" or r["split"] == "all":
            continue
        rows.append(
            {
                "track": r["track"],
                "split": r["split"],
                "method": r["method"],
                "n": r["n"],
                "strict_em": round(r["strict_em"], 4),
                "edit_similarity": round(r["edit_similarity"], 4),
                "nll": None if r["nll"] is None else round(r["nll"], 4),
            }
        )
    return rows


# the ways the shipped networks can follow history: (bench row, generator, state)
FOLLOWERS = (
    ("code2lora-evo", "code2lora-evo", "evo"),
    ("code2lora-evo@commit", "code2lora-evo", "static"),
    ("code2lora-static@commit", "code2lora-static", "static"),
)


def history_choice(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Which shipped network follows a repository's history, and by which state (the card's
    `update_follows`). The evolving state where it scored at least every static-at-every-commit
    row on the cross-repo tasks after renames (strict EM, the issue's measure); else the best of
    those rows (strict EM, then target NLL): the exact O(diff) static path, with the network
    whose snapshot state scored best. Unmeasured, the evolving state."""
    rows = {
        r["method"]: r
        for rep in reports
        for r in rep.get("summary", [])
        if r["track"] == "evo" and r["subset"] == "after-rename" and r["split"] == "cross-repo"
    }
    scored = [(rows[m], g, st) for m, g, st in FOLLOWERS if m in rows]
    if not scored or FOLLOWERS[0][0] not in rows:
        return {"generator": "code2lora-evo", "state": "evo", "evidence": None}
    evo = rows[FOLLOWERS[0][0]]
    static_rows = [x for x in scored if x[2] == "static"]
    best_static = max(static_rows, key=lambda x: (x[0]["strict_em"], -x[0]["nll"]), default=None)
    if best_static is None or evo["strict_em"] >= best_static[0]["strict_em"]:
        chosen: tuple[dict[str, Any], str, str] = (evo, "code2lora-evo", "evo")
    else:
        chosen = best_static
    evidence = {
        "subset": "after-rename",
        "split": "cross-repo",
        "n": evo["n"],
        "rows": {
            row["method"]: {"strict_em": round(row["strict_em"], 4), "nll": round(row["nll"], 4)}
            for row, _, _ in scored
        },
    }
    return {"generator": chosen[1], "state": chosen[2], "evidence": evidence}


def trained_hypernet(generator: str, src: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A `repo2lora train` checkpoint's card summary and the repositories it trained on."""
    meta = json.loads((src / CARD).read_text())
    if meta.get("generator") != generator:
        raise SystemExit(f"{src} holds {meta.get('generator')}, not {generator}")
    repos = [
        {k: r.get(k) for k in ("name", "url", "commit", "counts")}
        for r in meta.get("training_repositories", [])
    ]
    training = meta.get("training", {})
    summary = {
        "path": embedded.HYPERNETS[generator],
        "steps": training.get("step"),
        "train_examples": meta.get("train_examples"),
        "final_loss": training.get("loss"),
        "config": training.get("config"),
        "held_out_eval": meta.get("eval"),
        "repositories": len(repos),
    }
    return summary, repos


def ship_default(
    pretrain_dir: Path,
    bench_dir: Path,
    origins: dict[str, str],
    dest: Path = embedded.DEFAULT_DIR,
    hypernet_dirs: dict[str, Path] | None = None,
    replaces: dict[str, Any] | None = None,
    more_benches: list[Path] | None = None,
) -> dict[str, Any]:
    """Replace `dest` with the default assembled from the two runs (or from the pretraining
    run, `hypernet_dirs`' trained checkpoints and a scoring run); returns its card."""
    model_dir = pretrain_dir / "model"
    model_card = json.loads((model_dir / "model_card.json").read_text())
    report = json.loads((bench_dir / "bench.json").read_text())
    more = [json.loads((d / "bench.json").read_text()) for d in more_benches or []]
    with atomic_directory(dest) as tmp:
        for name in MODEL_FILES:
            if (model_dir / name).is_file():
                shutil.copy2(model_dir / name, tmp / name)
        (tmp / "data").mkdir()
        shutil.copy2(model_dir / "manifest.json", tmp / "data" / "pretrain-manifest.json")
        if (model_dir / CORPUS_HASHES).is_file():  # the contamination check's file hashes
            shutil.copy2(model_dir / CORPUS_HASHES, tmp / "data" / CORPUS_HASHES)
        curve = loss_curve(pretrain_dir / "pretrain_log.jsonl")
        plot_curve(curve, tmp / "val_loss.png")
        train_repos: list[dict[str, Any]] = [
            {
                "name": r["repo"],
                "commit": r["commit"],
                "source": origins.get(r["repo"], "synthetic suite (repo2lora.tasks.synthetic)"),
            }
            for r in report["repos"]
            if r["split"] == "train"
        ]
        held_out = [
            {"name": r["repo"], "commit": r["commit"], "source": origins.get(r["repo"], "")}
            for r in {x["repo"]: x for rep in (report, *more) for x in rep["repos"]}.values()
            if r["split"] == "test"
        ]
        (tmp / "data" / "hypernet-manifest.json").write_text(
            json.dumps({"train": train_repos, "benchmark_held_out": held_out}, indent=2) + "\n"
        )
        hypernets = {}
        if hypernet_dirs:
            by_name: dict[str, dict[str, Any]] = {}
            for generator, src in hypernet_dirs.items():
                d = tmp / embedded.HYPERNETS[generator]
                d.mkdir(parents=True)
                for name in HYPERNET_FILES:
                    shutil.copy2(src / name, d / name)
                hypernets[generator], repos = trained_hypernet(generator, src)
                by_name.update({r["name"]: r for r in repos})
            train_repos = [by_name[k] for k in sorted(by_name)]
            (tmp / "data" / "hypernet-manifest.json").write_text(
                json.dumps({"train": train_repos, "benchmark_held_out": held_out}, indent=2) + "\n"
            )
        for generator, rel in {} if hypernet_dirs else BENCH_MODELS.items():
            src = bench_dir / rel
            d = tmp / embedded.HYPERNETS[generator]
            d.mkdir(parents=True)
            for name in HYPERNET_FILES:
                shutil.copy2(src / name, d / name)
            meta = json.loads((src / CARD).read_text())
            cost = json.loads((src / "bench-train.json").read_text())
            hypernets[generator] = {
                "path": embedded.HYPERNETS[generator],
                "steps": meta.get("training", {}).get("step"),
                "train_examples": cost.get("examples"),
                "wall_seconds": round(cost.get("seconds", 0.0), 1),
                "final_loss": cost.get("final_loss"),
                "repositories": len(train_repos),
            }
        config = json.loads((model_dir / "config.json").read_text())
        card = {
            "kind": "repo2lora embedded default",
            "model": {
                "architecture": model_card.get("architecture"),
                "params": model_card.get("params"),
                "vocab_size": config.get("vocab_size"),
                "tokens_seen": model_card.get("tokens_seen"),
                "steps": model_card.get("steps"),
                "wall_seconds": model_card.get("wall_seconds"),
                "hardware": model_card.get("hardware"),
                "held_out_loss": model_card.get("held_out_loss_nats_per_token"),
                "held_out_bits_per_byte": model_card.get("held_out_bits_per_byte"),
                "held_out_xz_bits_per_byte": model_card.get("held_out_xz_bits_per_byte"),
                "tokens_per_param": model_card.get("tokens_per_param"),
                "held_out_loss_curve": curve,
                "loss_plot": "val_loss.png",
                "pretrain_config": model_card.get("config"),
                "data": model_card.get("data"),
                "data_manifest": "data/pretrain-manifest.json",
            },
            "hypernets": hypernets,
            embedded.UPDATE_FOLLOWS: history_choice([report, *more]),
            "hypernet_data_manifest": "data/hypernet-manifest.json",
            **({"replaces": replaces} if replaces else {}),
            "benchmark": {
                "config": report["config"],
                "source": report.get("source"),
                "rows": benchmark_rows(report),
                "more_runs": [
                    {"config": x["config"], "source": x.get("source"), "rows": benchmark_rows(x)}
                    for x in more
                ],
            },
        }
        full = embedded.write_card(tmp, card)
    return full


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m repo2lora.pretrain.ship", description=__doc__)
    p.add_argument("--pretrain", required=True, type=Path, help="`repo2lora pretrain --out` dir")
    p.add_argument("--bench", required=True, type=Path, help="`repo2lora bench --out` dir")
    p.add_argument(
        "--also-bench",
        type=Path,
        nargs="*",
        default=[],
        help="more `bench` runs of the same checkpoints (e.g. one per track), recorded beside",
    )
    p.add_argument("--origin", action="append", default=[], help="LABEL=URL of a repository")
    p.add_argument("--dest", type=Path, default=embedded.DEFAULT_DIR)
    p.add_argument("--static", type=Path, help="a `repo2lora train` code2lora-static checkpoint")
    p.add_argument("--evo", type=Path, help="a `repo2lora train` code2lora-evo checkpoint")
    p.add_argument(
        "--compare-bpb",
        type=Path,
        help="a `python -m benchmark.bpb_compare` JSON of the old and new base models (recorded)",
    )
    p.add_argument(
        "--compare-bench",
        type=Path,
        help="the old default's `bench --generator-dir default` run on the same repositories",
    )
    args = p.parse_args(argv)
    replaces: dict[str, Any] = {}
    if args.compare_bpb:
        replaces["bits_per_byte"] = json.loads(args.compare_bpb.read_text())
    if args.compare_bench:
        old = json.loads((args.compare_bench / "bench.json").read_text())
        replaces["benchmark"] = {"config": old["config"], "rows": benchmark_rows(old)}
    origins = dict(o.split("=", 1) for o in args.origin)
    given = {"code2lora-static": args.static, "code2lora-evo": args.evo}
    if any(given.values()) and not all(given.values()):
        p.error("give both --static and --evo, or neither (then --bench's trained models ship)")
    dirs = {k: v for k, v in given.items() if v is not None} or None
    card = ship_default(
        args.pretrain, args.bench, origins, args.dest, dirs, replaces, args.also_bench
    )
    print(f"shipped {len(card['files'])} files, {card['total_bytes'] / 1e6:.1f} MB to {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
