"""Assembles a training run's data from repositories (given paths or a generated synthetic
suite): encodings, in-repo train/test examples, and the data manifest for the model card."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repo2lora.models.loading import LoadedModel
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
