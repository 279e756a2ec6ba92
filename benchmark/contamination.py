"""The contamination check of `bench --generator-dir`: every test repository compared with the
training manifests of the base model and of the checkpoints being scored, by name/URL and by
the sha256 of each `.py` file's text at HEAD. Pure comparison functions, and a small edge that
reads the manifests and the repositories.

Manifests read
* base model: `data/pretrain-manifest.json` or `manifest.json` (the pretraining packages: import
  and distribution names), and a corpus's `corpus.json` (distribution names) with
  `file-sha256.tsv` (sha256 of each training file's text), in the model directory or its `data/`;
* a checkpoint: the repositories its card lists (`training_repositories`), or a hypernetwork
  manifest (`hypernet-manifest.json` in the checkpoint, or the shipped layout's
  `../../data/hypernet-manifest.json`); every section but the held-out ones, with optional
  `file_sha256` lists."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import git

from repo2lora.reserved import normalize_distribution, repository_key
from repo2lora.tasks.provenance import python_file_hashes
from repo2lora.training.baselines import BASELINE_CARD
from repo_encoder.errors import UserError

HASHES = "file-sha256.tsv"
# a test file shared with a training manifest counts as evidence of contamination only with at
# least this many non-blank lines: an empty `__init__.py` or a one-line version stub is in
# almost every repository and says nothing about where this one's code went
EVIDENCE_LINES = 5


@dataclass(frozen=True)
class TrainingManifest:
    """What one model was trained on: repository keys ("owner/name"), bare names (normalised
    repository, distribution and import names) and file-text hashes."""

    source: str  # the manifest file, as the refusal line names it
    keys: frozenset[str] = frozenset()
    names: frozenset[str] = frozenset()
    hashes: frozenset[str] = frozenset()


@dataclass(frozen=True)
class RepoIdentity:
    """A test repository as the check sees it: its label, keys, bare names and .py hashes."""

    label: str
    keys: frozenset[str]
    names: frozenset[str]
    hashes: dict[str, str] = field(default_factory=dict)  # sha256 -> path at HEAD


@dataclass(frozen=True)
class Collision:
    repo: str
    manifest: str
    by: str  # "url", "name" or "file"
    detail: str

    def line(self) -> str:
        return f"{self.repo} collides with {self.manifest} by {self.by} ({self.detail})"


def norm_name(name: str) -> str:
    return normalize_distribution(name.strip().lower().removesuffix(".git"))


def collisions(repo: RepoIdentity, manifest: TrainingManifest) -> list[Collision]:
    """How `repo` collides with `manifest`: the first shared key, name and file, if any."""
    out = []
    if key := sorted(repo.keys & manifest.keys):
        out.append(Collision(repo.label, manifest.source, "url", key[0]))
    if name := sorted(repo.names & manifest.names):
        out.append(Collision(repo.label, manifest.source, "name", name[0]))
    if shared := sorted(set(repo.hashes) & manifest.hashes):
        first = repo.hashes[shared[0]]
        out.append(
            Collision(repo.label, manifest.source, "file", f"{len(shared)} files, e.g. {first}")
        )
    return out


def screen(
    repos: Sequence[RepoIdentity], manifests: Sequence[TrainingManifest], allow: bool
) -> dict[str, list[Collision]]:
    """Per contaminated repository, its collisions. Without `allow`, a UserError whose one line
    names the first contaminated repository and the manifest it collides with."""
    found: dict[str, list[Collision]] = {}
    for r in repos:
        hits = [c for mf in manifests for c in collisions(r, mf)]
        if hits:
            found[r.label] = hits
    if found and not allow:
        first = next(iter(found.values()))[0]
        more = f" (and {len(found) - 1} more repositories)" if len(found) > 1 else ""
        raise UserError(
            f"contaminated test repository: {first.line()}{more}; drop it, or pass "
            "--allow-contaminated to score it marked as such"
        )
    return found


# --- the I/O edge -----------------------------------------------------------------------------


def _entry_key(source: str) -> str | None:
    s = source.strip()
    return repository_key(s) if "://" in s or s.count("/") == 1 else None


def manifest_from_entries(source: str, entries: Iterable[dict[str, Any]]) -> TrainingManifest:
    """A hypernetwork manifest's repository entries ({name, source|url, file_sha256?})."""
    keys: set[str] = set()
    names: set[str] = set()
    hashes: set[str] = set()
    for e in entries:
        if e.get("name"):
            names.add(norm_name(str(e["name"])))
        for k in ("source", "url", "repo"):
            if isinstance(e.get(k), str) and (key := _entry_key(e[k])):
                keys.add(key)
                names.add(norm_name(key.split("/")[-1]))
        hashes.update(str(h) for h in e.get("file_sha256", ()))
    return TrainingManifest(source, frozenset(keys), frozenset(names), frozenset(hashes))


def read_hypernet_manifest(path: Path) -> TrainingManifest:
    """Every training section of a hypernetwork manifest (held-out sections are not training)."""
    data = json.loads(path.read_text())
    entries: list[dict[str, Any]] = []
    sections = data.items() if isinstance(data, dict) else [("train", data)]
    for section, rows in sections:
        if "held" not in section and isinstance(rows, list):
            entries += [r for r in rows if isinstance(r, dict)]
    return manifest_from_entries(str(path), entries)


def checkpoint_manifests(ckpt: Path) -> list[TrainingManifest]:
    """What a generator checkpoint (or a shared-LoRA baseline) records of its training
    repositories."""
    src = ckpt / BASELINE_CARD if (ckpt / BASELINE_CARD).is_file() else ckpt / "hypernet.json"
    card = json.loads(src.read_text())
    listed = card.get("training_repositories")
    if isinstance(listed, list):
        return [manifest_from_entries(str(src), listed)]
    for p in (
        ckpt / "hypernet-manifest.json",
        ckpt.parent.parent / "data" / "hypernet-manifest.json",
    ):
        if p.is_file():
            return [read_hypernet_manifest(p)]
    return []


def base_model_manifests(model_dir: Path | None) -> list[TrainingManifest]:
    """The base model's pretraining manifest (packages) and corpus (names, file hashes)."""
    if model_dir is None:
        return []
    out = []
    for p in (model_dir / "data" / "pretrain-manifest.json", model_dir / "manifest.json"):
        if p.is_file():
            packages = json.loads(p.read_text()).get("packages", {})
            names = {norm_name(k) for k in packages}
            names |= {
                norm_name(v["distribution"])
                for v in packages.values()
                if isinstance(v, dict) and v.get("distribution") not in (None, "?")
            }
            out.append(TrainingManifest(str(p), names=frozenset(names)))
            break
    for d in (model_dir, model_dir / "data"):
        hashes_file = d / HASHES
        if not hashes_file.is_file():
            continue
        hashes = {
            ln.split("\t", 1)[0].strip()
            for ln in hashes_file.read_text().splitlines()
            if ln.strip()
        }
        names = set()
        if (d / "corpus.json").is_file():
            corpus = json.loads((d / "corpus.json").read_text())
            names = {norm_name(x["name"]) for x in corpus.get("distributions", []) if "name" in x}
        out.append(
            TrainingManifest(str(hashes_file), names=frozenset(names), hashes=frozenset(hashes))
        )
    return out


def repo_identity(label: str, path: Path) -> RepoIdentity:
    """A local git repository's keys (its `origin` URL), names (directory and URL) and the
    sha256 of each `.py` file's text at HEAD."""
    repo = git.Repo(path, search_parent_directories=False)
    keys: set[str] = set()
    names = {norm_name(path.resolve().name), norm_name(label)}
    for remote in repo.remotes:
        for url in remote.urls:
            key = repository_key(url)
            if "/" in key:
                keys.add(key)
                names.add(norm_name(key.split("/")[-1]))
    head = repo.head.commit if repo.head.is_valid() else None
    hashes = python_file_hashes(head, EVIDENCE_LINES) if head is not None else {}
    return RepoIdentity(label, frozenset(keys), frozenset(names), hashes)
