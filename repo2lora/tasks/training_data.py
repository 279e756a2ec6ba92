"""Assembles a training run's data from repositories (given paths or a generated synthetic
suite) or from a built dataset (`repo2lora dataset build`): encodings, in-repo train/test
examples, and the data manifest for the model card."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from repo2lora.models.loading import LoadedModel
from repo2lora.tasks.dataset_build import (
    MANIFEST,
    built_repo_dirs,
    check_encoded_by,
    load_built_repo,
)
from repo2lora.tasks.datasets import RepoData, encode_repo, in_repo_split
from repo2lora.tasks.provenance import (
    Provenance,
    owner_name_of_url,
    remote_url,
    training_repository,
)
from repo2lora.training.data import RepoEncoding, TaskExample
from repo_encoder.snapshot import open_repository


@dataclass
class TrainingData:
    encodings: dict[str, RepoEncoding]
    train: list[TaskExample]
    test: list[TaskExample]
    manifest: list[dict[str, Any]] = field(default_factory=list)
    # name, URL, commit and .py file hashes of each repository (a card's
    # `training_repositories`, what the benchmark's contamination check reads)
    repositories: list[dict[str, Any]] = field(default_factory=list)


def build_training_data(
    paths: list[Path], model: LoadedModel, evolving: bool, test_share: float = 0.3, seed: int = 0
) -> TrainingData:
    """Static: tasks mined at HEAD; evolving: the snapshot of the root commit, every commit
    after it, and the assertions each commit adds. Tasks are split in-repo by test function."""
    datas: list[RepoData] = []
    for p in paths:
        repo_root = Path(p)
        first = None
        if evolving:
            repo = open_repository(repo_root)
            first = repo.git.rev_list("--max-parents=0", "--first-parent", "HEAD").split()[-1]
        datas.append(encode_repo(repo_root, model, evolving_from=first, name=repo_root.name))
    train: list[TaskExample] = []
    test: list[TaskExample] = []
    manifest = []
    for d in datas:
        tasks = [(i, t) for i, t in d.evo_tasks] if evolving else [(-1, t) for t in d.static_tasks]
        for step, t in tasks:
            ex = TaskExample(d.name, t.prefix, t.target, step, t.task_id)
            (test if in_repo_split(t, test_share, seed) == "test" else train).append(ex)
        manifest.append(
            {
                "name": d.name,
                "commits": [d.encoding.commits[0], d.encoding.commits[-1]],
                "chunks": int(d.encoding.vectors.shape[0]),
                "tasks": len(tasks),
            }
        )
    repositories = [
        training_repository_of(Path(p), d.encoding.commits[-1])
        for p, d in zip(paths, datas, strict=True)
    ]
    return TrainingData({d.name: d.encoding for d in datas}, train, test, manifest, repositories)


def training_repository_of(path: Path, commit: str) -> dict[str, Any]:
    """A work tree's `training_repositories` entry: owner/name and URL from its network remote
    (else its directory name and no URL), the commit, the file hashes there."""
    repo = open_repository(path)
    url = remote_url(repo)
    name = (owner_name_of_url(url) if url else None) or Path(str(repo.working_tree_dir)).name
    return training_repository(Provenance(name, url, commit), repo.commit(commit))


def _split_of(key: str, test_share: float, seed: int) -> str:
    u = int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if u < test_share else "train"


def training_data_from_dataset(
    directory: str | Path,
    model_key: str,
    evolving: bool,
    test_share: float = 0.3,
    seed: int = 0,
    names: bool = False,
    vectors: bool = True,
) -> TrainingData:
    """A built dataset's training data, encoded by the base model `model_key` (its chunk
    vectors are that model's; another's is a UserError, unless `vectors` is False: a caller
    that reads only the tasks and texts, as a shared LoRA does, can train any base model on
    any built dataset). Static: the assertion tasks at each
    repository's commit and its cross-file line tasks (each line task's encoder input is the
    snapshot without its file); evolving: the walk's tasks, each at its commit. Split in-repo
    by test function (line tasks: by file), never splitting one. With `names` (static only),
    each encoding also carries the names its snapshot defines (a line task's: without its
    file's), for a generator that reads them."""
    root = Path(directory)
    built = built_repo_dirs(root)
    doc = json.loads((root / MANIFEST).read_text())
    encodings: dict[str, RepoEncoding] = {}
    train: list[TaskExample] = []
    test: list[TaskExample] = []
    manifest: list[dict[str, Any]] = []
    repositories: list[dict[str, Any]] = []
    for d in built:
        repo = load_built_repo(d)
        if vectors:
            check_encoded_by(repo, root, model_key)
        name = repo.summary["name"]
        examples: list[tuple[str, TaskExample]] = []
        for t in repo.tasks:
            kind = t["kind"]
            if evolving and kind == "evo" and repo.walk is not None:
                encodings.setdefault(name, repo.walk)
                ex = TaskExample(name, t["prefix"], t["target"], int(t["step"]), t["task_id"])
                examples.append((f"{name}:{t['path']}:{t['line']}", ex))
            elif not evolving and kind == "static":
                if vectors and name not in encodings:
                    snap = repo.snapshot
                    encodings[name] = (
                        replace(snap, names=[repo.names()], texts=repo.texts()) if names else snap
                    )
                ex = TaskExample(name, t["prefix"], t["target"], -1, t["task_id"])
                examples.append((f"{name}:{t['path']}:{t['test_qualname']}", ex))
            elif not evolving and kind == "line":
                key = f"{name}-{t['path']}"
                if vectors and key not in encodings:
                    encodings[key] = repo.without(t["path"], names=names)
                ex = TaskExample(key, t["prefix"], t["target"], -1, t["task_id"])
                examples.append((f"{name}:{t['path']}", ex))
        for key, ex in examples:
            (test if _split_of(key, test_share, seed) == "test" else train).append(ex)
        manifest.append(
            {
                "name": name,
                "commits": [repo.summary["walk"][0], repo.summary["commit"]],
                "chunks": len(repo.chunk_paths),
                "tasks": len(examples),
                "dataset": str(root),
            }
        )
    entries = {e["name"]: e for e in doc.get("training_repositories", [])}
    repositories = [entries[m["name"]] for m in manifest if m["name"] in entries]
    return TrainingData(encodings, train, test, manifest, repositories)
