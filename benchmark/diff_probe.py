"""How much a commit's chunk diff says about the targets of the assertions it adds, measured
without any hypernetwork: linear probes from the diff (its chunk counts; its chunk vectors'
mean || max per side, as the GRU step reads them) to the target's token distribution, trained
on some repositories and scored on repositories they never saw. Prints one JSON object.

An evolving state can only help cross-repo on what the diff carries; when the vector probe does
no better than the prior, no GRU trained on the same data will either (the reason the CI test
of the evolving state after renames, cross-repo, is an expected failure at tiny-random scale).

    python -m benchmark.diff_probe [--repos 16] [--commits 16] [--model tiny-random] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from benchmark.prepare import split_repos
from benchmark.speed.scaffold import machine_info
from evo_state.gru import diff_features
from repo2lora.models.loading import LoadedModel, describe_base_model, load_base_model
from repo2lora.tasks.synthetic import generate_suite
from repo2lora.tasks.training_data import build_training_data

PROBES = ("prior", "counts", "vectors")
MAX_TARGET_TOKENS = 32


def probe_rows(
    paths: list[Path], base: LoadedModel
) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(repository, diff features [4d + 3], target token counts [vocab]) for every assertion a
    commit adds, the diff being that commit's (source-only chunks, as the encoder sees them)."""
    data = build_training_data(paths, base, evolving=True)
    vocab = len(base.tokenizer)
    rows = []
    for ex in data.train + data.test:
        if ex.step < 1:  # the walk's start: no diff
            continue
        ids = base.tokenizer(ex.target, add_special_tokens=False)["input_ids"]
        counts = torch.bincount(
            torch.tensor(ids[:MAX_TARGET_TOKENS], dtype=torch.long), minlength=vocab
        ).float()
        brought_in, taken_out, changed = data.encodings[ex.repo].diffs[ex.step - 1]
        rows.append((ex.repo, diff_features(brought_in, taken_out, *changed), counts))
    return rows


def fit_probe(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    steps: int = 1500,
    l2: float = 1e-3,
) -> dict[str, float]:
    """Softmax regression from features to the target-token distribution (features
    standardised by the training rows). Cross-entropy in nats per target token."""
    mu, sd = x_train.mean(0), x_train.std(0).clamp(min=1e-6)
    x_train, x_test = (x_train - mu) / sd, (x_test - mu) / sd
    torch.manual_seed(0)
    w = torch.zeros(x_train.shape[1], y_train.shape[1], requires_grad=True)
    b = torch.zeros(y_train.shape[1], requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=0.01)

    def ce(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return -(torch.log_softmax(x @ w + b, -1) * y).sum() / y.sum()

    for _ in range(steps):
        opt.zero_grad()
        (ce(x_train, y_train) + l2 * w.pow(2).sum()).backward()
        opt.step()
    with torch.no_grad():
        return {"train_ce": float(ce(x_train, y_train)), "test_ce": float(ce(x_test, y_test))}


def run_probes(
    rows: list[tuple[str, torch.Tensor, torch.Tensor]], share: float, seed: int
) -> dict[str, Any]:
    split = split_repos(sorted({r for r, _, _ in rows}), share, seed)
    train = [r for r in rows if split[r[0]] == "train"]
    test = [r for r in rows if split[r[0]] == "test"]
    out: dict[str, Any] = {
        "train_repos": sum(v == "train" for v in split.values()),
        "test_repos": sum(v == "test" for v in split.values()),
        "train_tasks": len(train),
        "test_tasks": len(test),
    }
    if not train or not test:
        return out
    # the distribution over the tokens that occur in some target (the same for every probe)
    used = torch.stack([y for _, _, y in rows]).sum(0) > 0
    y_train = torch.stack([y for _, _, y in train])[:, used]
    y_test = torch.stack([y for _, _, y in test])[:, used]
    out["target_vocabulary"] = int(used.sum())
    for probe in PROBES:
        if probe == "prior":
            x_train, x_test = torch.zeros(len(train), 1), torch.zeros(len(test), 1)
        elif probe == "counts":  # the last three features: log(1 + added / removed / modified)
            x_train = torch.stack([x[-3:] for _, x, _ in train])
            x_test = torch.stack([x[-3:] for _, x, _ in test])
        else:
            x_train = torch.stack([x for _, x, _ in train])
            x_test = torch.stack([x for _, x, _ in test])
        out[probe] = fit_probe(x_train, y_train, x_test, y_test)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("paths", nargs="*", help="git repositories (default: a synthetic suite)")
    p.add_argument("--repos", type=int, default=16, help="synthetic suite: repositories")
    p.add_argument("--commits", type=int, default=16, help="synthetic suite: commits each")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default="tiny-random")
    p.add_argument("--test-share", type=float, default=0.25)
    p.add_argument("--out", help="where the synthetic suite is generated (default: a temp dir)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    load_before = round(os.getloadavg()[0], 2)
    base = load_base_model(describe_base_model(args.model))
    with tempfile.TemporaryDirectory() as tmp:
        paths = [Path(x) for x in args.paths]
        if not paths:
            where = Path(args.out or tmp) / "suite"
            paths = [r.path for r in generate_suite(where, args.repos, args.commits, args.seed)]
        result = run_probes(probe_rows(paths, base), args.test_share, args.seed)
    report = {
        "benchmark": "diff_probe",
        "model": args.model,
        "suite": [str(p) for p in args.paths] or f"synthetic {args.repos}x{args.commits}",
        "seed": args.seed,
        "max_target_tokens": MAX_TARGET_TOKENS,
        "machine": machine_info(load_before),
        **result,
    }
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
