"""Generates the synthetic evolving-repository suite: small, real Python packages in real git
repositories, whose identifiers and constant values are specific to each repository and whose
histories add features, change constants and rename APIs (updating callers and tests).

Everything is a function of the seed: the same seed gives byte-identical files and identical
commit shas (fixed author, committer and dates; no global git config is read). A repository's
source and tests are rendered from an in-memory model of the package at every commit, so the
tests always agree with the code and pass under pytest. What each commit did is recorded in a
JSON manifest beside the repository directory (never inside it: it names the answers).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from repo2lora.tasks.synthetic_model import (
    ChangeKind,
    EvolveKind,
    Names,
    SyntheticChange,
    evolve,
    initial_package,
    package_name,
)
from repo2lora.tasks.synthetic_render import render_files
from repo_encoder.errors import UserError

__all__ = ["SyntheticChange", "SyntheticCommit", "SyntheticRepo", "generate_suite", "load_repo"]

_GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Synthetic Author",
    "GIT_AUTHOR_EMAIL": "author@synthetic.invalid",
    "GIT_COMMITTER_NAME": "Synthetic Author",
    "GIT_COMMITTER_EMAIL": "author@synthetic.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
}
_GIT_FLAGS = (
    "-c",
    "commit.gpgsign=false",
    "-c",
    "core.autocrlf=false",
    "-c",
    f"core.hooksPath={os.devnull}",
)
_EPOCH = 1_704_067_200  # 2024-01-01T00:00:00Z: commit dates are fixed so shas are reproducible


@dataclass(frozen=True)
class SyntheticCommit:
    """A commit of a synthetic repository: its position in the history (0 is the first), sha,
    message and what it changed."""

    index: int
    sha: str
    message: str
    changes: tuple[SyntheticChange, ...]


@dataclass(frozen=True)
class SyntheticRepo:
    """A generated repository: its work tree `path`, the importable `package` inside it, the
    manifest beside it, and its commits oldest first."""

    name: str
    path: Path
    package: str
    manifest_path: Path
    commits: tuple[SyntheticCommit, ...]

    def changes(self, kind: ChangeKind) -> list[tuple[SyntheticCommit, SyntheticChange]]:
        """Every change of `kind` with the commit that made it, oldest first."""
        return [(c, ch) for c in self.commits for ch in c.changes if ch.kind == kind]


def generate_suite(root: Path, n_repos: int, n_commits: int, seed: int) -> list[SyntheticRepo]:
    """Create `n_repos` git repositories of `n_commits` commits each under `root` (as
    `root/<name>/`, with `root/<name>.manifest.json` beside each). Deterministic by `seed`."""
    if n_repos < 1 or n_commits < 1:
        raise UserError(
            f"asked for {n_repos} repositories of {n_commits} commits; ask for at least 1 of each"
        )
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    repos: list[SyntheticRepo] = []
    packages: list[str] = []
    for index in range(n_repos):
        rng = random.Random(f"repo2lora-synthetic/{seed}/{index}")
        package = package_name(rng, packages)
        packages.append(package)
        name = f"synth{index:02d}-{package}"
        manifest = root / f"{name}.manifest.json"
        repos.append(_generate_repo(root / name, manifest, package, rng, n_commits))
    return repos


# --- git: the edge where the model becomes commits -------------------------------------------


def _git(path: Path, *args: str, date: int | None = None) -> str:
    # Inherited GIT_* variables (a hook's GIT_DIR, say) would point git at another repository.
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(_GIT_IDENTITY)
    if date is not None:
        env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = f"@{date} +0000"
    try:
        result = subprocess.run(
            ["git", *_GIT_FLAGS, *args], cwd=path, env=env, capture_output=True, text=True
        )
    except FileNotFoundError:
        raise UserError(
            "git is not installed; install git to generate the synthetic suite"
        ) from None
    if result.returncode != 0:
        raise UserError(
            f"git {args[0]} failed in {path}: {result.stderr.strip()}; "
            "check that the directory is writable"
        )
    return result.stdout.strip()


def _write_tree(path: Path, previous: dict[str, str], files: dict[str, str]) -> None:
    for rel in previous.keys() - files.keys():
        (path / rel).unlink()
    for rel, text in files.items():
        if previous.get(rel) != text:
            target = path / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(text.encode("utf-8"))


def _generate_repo(
    path: Path, manifest_path: Path, package_name: str, rng: random.Random, n_commits: int
) -> SyntheticRepo:
    if path.exists() and any(path.iterdir()):
        raise UserError(
            f"{path} already exists and is not empty; generate the suite into an empty directory"
        )
    path.mkdir(parents=True, exist_ok=True)
    _git(path, "init", "-q", "-b", "main")
    names = Names(rng)
    names.used.add(package_name)
    package = initial_package(package_name, names)
    # Every run of three commits has each kind of change once, so every repository with four
    # or more commits has a rename for the evolution track to follow.
    cycle: list[EvolveKind] = rng.sample(["add_feature", "change_constant", "rename"], 3)

    commits: list[SyntheticCommit] = []
    written: dict[str, str] = {}
    for index in range(n_commits):
        if index == 0:
            changes: tuple[SyntheticChange, ...] = (
                SyntheticChange("create", "package", package_name, new_name=package_name),
            )
        else:
            kinds = [cycle[(index - 1) % 3]]
            if rng.random() < 0.3:
                kinds.append(rng.choice([kind for kind in cycle if kind != kinds[0]]))
            changes = tuple(evolve(package, names, kind) for kind in kinds)
        files = render_files(package)
        _write_tree(path, written, files)
        written = files
        lines = [change.describe() for change in changes]
        message = lines[0] + ("\n\n" + "\n".join(lines[1:]) if len(lines) > 1 else "")
        _git(path, "add", "-A")
        _git(path, "commit", "-q", "--allow-empty", "-m", message, date=_EPOCH + index * 3600)
        sha = _git(path, "rev-parse", "HEAD")
        commits.append(SyntheticCommit(index, sha, message, changes))

    repo = SyntheticRepo(path.name, path, package_name, manifest_path, tuple(commits))
    manifest_path.write_bytes(_manifest_json(repo).encode("utf-8"))
    return repo


def _manifest_json(repo: SyntheticRepo) -> str:
    manifest = {
        "name": repo.name,
        "package": repo.package,
        "path": repo.path.name,
        "commits": [
            {
                "index": c.index,
                "sha": c.sha,
                "message": c.message,
                "changes": [dataclasses.asdict(ch) for ch in c.changes],
            }
            for c in repo.commits
        ],
    }
    return json.dumps(manifest, indent=2, sort_keys=True) + "\n"


def load_repo(manifest_path: Path) -> SyntheticRepo:
    """The `SyntheticRepo` a manifest written by `generate_suite` describes (for a run that
    resumes over a suite generated earlier)."""
    manifest_path = Path(manifest_path)
    data = json.loads(manifest_path.read_text(encoding="utf-8"))
    commits = tuple(
        SyntheticCommit(
            c["index"], c["sha"], c["message"], tuple(SyntheticChange(**ch) for ch in c["changes"])
        )
        for c in data["commits"]
    )
    return SyntheticRepo(
        data["name"], manifest_path.parent / data["path"], data["package"], manifest_path, commits
    )


def main(argv: list[str] | None = None) -> int:
    """`python -m repo2lora.tasks.synthetic OUT --repos N --commits M --seed S`: write a suite."""
    import argparse

    p = argparse.ArgumentParser(
        prog="python -m repo2lora.tasks.synthetic",
        description="Generate a deterministic synthetic suite of evolving Python repositories.",
    )
    p.add_argument("out", type=Path)
    p.add_argument("--repos", type=int, default=8)
    p.add_argument("--commits", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        repos = generate_suite(args.out, args.repos, args.commits, args.seed)
    except UserError as exc:
        print(f"synthetic: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps([str(r.path) for r in repos], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
