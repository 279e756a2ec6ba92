"""Screens local git repositories for the hypernetwork pool and splits them into train and
held-out lists, printed as JSON and written as TSV (a data-gathering script, not a test).

It reads git only (`ls-tree`, `cat-file`, `rev-list`): never checks a repository out, never runs
or installs its code. A repository is usable when it is mostly Python (by bytes of source
code), of a size that encodes quickly, has test files (the encoder's test globs) with assertion
lines, and has history (commits on HEAD's first-parent chain). Usable repositories are split by
a seeded hash of owner/name, so adding a repository never moves another one.

Repositories reserved for evaluation (`eval-reserved.tsv`: a GitHub repository, or a repository
name equal to a reserved distribution or import name) are refused before anything is read or
written. Repositories in a shipped hypernetwork manifest are kept out of both lists and
reported on their own.

    python -m benchmark.repo_pool /work/.mirror/owner+name/repo ... --out-dir data/hypernet-pool
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from benchmark.reserved import (
    CHECKOUT,
    PoolError,
    Reserved,
    default_reserved_path,
    load_reserved,
    manifest_repositories,
    reserved_reason,
)
from repo_encoder.exclusion import ExclusionConfig, is_test_path

DEFAULT_MANIFEST = CHECKOUT / "repo2lora" / "models" / "default" / "data" / "hypernet-manifest.json"

# Source-code extensions whose bytes decide "mostly Python" (markup, data and notebooks do not
# count: a Django app's templates or a data repository's CSVs say nothing about its language).
# fmt: off
CODE_EXTENSIONS = frozenset({
    ".py", ".pyx", ".pxd", ".pyi", ".c", ".h", ".cc", ".cpp", ".cxx", ".hpp", ".hh", ".cu",
    ".js", ".jsx", ".ts", ".tsx", ".mjs", ".vue", ".go", ".rs", ".java", ".kt", ".scala", ".rb",
    ".php", ".cs", ".swift", ".m", ".mm", ".f", ".f90", ".for", ".jl", ".r", ".lua", ".pl",
    ".sh", ".bash", ".ps1", ".hs", ".ml", ".ex", ".exs", ".erl", ".clj", ".dart", ".groovy",
    ".sql", ".tcl", ".v", ".sv", ".vhd",
})
# Bundled, generated or documentation code that would swamp a repository's own source: files
# under these directories, and non-Python files larger than `_MAX_CODE_FILE_BYTES`.
_NOT_SOURCE_DIRS = frozenset({
    "docs", "doc", "_build", "build", "dist", "node_modules", "static", "vendor", "third_party",
    "site-packages",
})
# fmt: on
_MAX_CODE_FILE_BYTES = 256 * 1024
# A line holding an assertion in one of the forms benchmark.miner turns into tasks: `assert`,
# `self.assert*(`, an `assert_*(` helper (not a mock's `assert_called*`-style check), or
# `pytest.raises(`/`pytest.warns(`.
_ASSERT_LINE = re.compile(
    r"^\s*assert\b|\bself\.assert\w*\s*\("
    r"|\b(?!assert_(?:called|not_called|any_call|has_calls|awaited|not_awaited|any_await|has_awaits))"
    r"assert_\w+\s*\("
    r"|\bpytest\.(?:raises|warns)\s*\("
)
_LICENSE_NAME = re.compile(r"^(LICEN[CS]E|COPYING|UNLICENSE)([.\-_].*)?$", re.IGNORECASE)
_SYMLINK = "120000"

COLUMNS = (
    "owner_name",
    "url",
    "git_dir",
    "head",
    "commits",
    "py_files",
    "py_lines",
    "py_share",
    "test_files",
    "assert_lines",
    "license",
    "vendored_reserved",
    "missing_files",
)


@dataclass(frozen=True)
class PoolCriteria:
    """What makes a repository usable for the pool."""

    min_commits: int = 30
    min_py_lines: int = 500
    max_py_lines: int = 30_000
    min_py_share: float = 0.5
    min_test_files: int = 1
    min_assert_lines: int = 20


@dataclass(frozen=True)
class RepoFacts:
    """One repository at HEAD, as read with git.

    `test_files` counts test `.py` files (the encoder's test globs) with at least one assertion
    line; `py_share` is Python's share of source-code bytes (bundles, docs and vendored
    directories left out); `vendored_reserved` counts files under a directory named like a
    reserved import name (the reserved list's path rule drops them; most are name collisions
    such as a `packaging/` folder); `missing_files` counts blobs the git directory lacks (a
    `fetch` snapshot has no file of 4 MiB or more)."""

    owner_name: str
    url: str
    git_dir: str
    head: str
    commits: int
    py_files: int
    py_lines: int
    py_share: float
    test_files: int
    assert_lines: int
    license: str
    vendored_reserved: int
    missing_files: int


def owner_name_of(git_dir: Path) -> str:
    """owner/name from a `fetch` mirror path (`.../owner+name/repo`)."""
    for part in reversed(git_dir.resolve().parts):
        if "+" in part:
            owner, _, name = part.partition("+")
            if owner and name:
                return f"{owner}/{name}"
    raise PoolError(f"cannot tell owner/name from {git_dir}; give it as owner/name=PATH")


def parse_spec(spec: str) -> tuple[str, Path]:
    """`owner/name=PATH` or a mirror `PATH` -> (owner/name, git dir)."""
    if "=" in spec:
        owner_name, _, path = spec.partition("=")
        if owner_name.count("/") != 1:
            raise PoolError(f"{owner_name!r} is not owner/name")
        return owner_name, Path(path)
    return owner_name_of(Path(spec)), Path(spec)


def _git(git_dir: Path, *args: str, stdin: bytes | None = None) -> bytes:
    proc = subprocess.run(
        ["git", "--git-dir", str(git_dir), *args],
        input=stdin,
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        msg = proc.stderr.decode(errors="replace").strip().splitlines()
        raise PoolError(f"git {args[0]} failed in {git_dir}: {msg[-1] if msg else proc.returncode}")
    return proc.stdout


def _blobs(git_dir: Path, shas: Sequence[str]) -> Iterable[bytes | None]:
    """The contents of `shas`, in order, from one `git cat-file --batch` (None for a blob the
    repository lacks: `fetch` snapshots leave out files of 4 MiB and more)."""
    if not shas:
        return
    out = _git(git_dir, "cat-file", "--batch", stdin=("\n".join(shas) + "\n").encode())
    pos = 0
    for _ in shas:
        header_end = out.index(b"\n", pos)
        header = out[pos:header_end].split()
        if header[-1] == b"missing":
            pos = header_end + 1
            yield None
            continue
        size = int(header[2])
        start = header_end + 1
        yield out[start : start + size]
        pos = start + size + 1


def inspect_repo(owner_name: str, git_dir: Path, reserved: Reserved) -> RepoFacts:
    """Reads one repository's facts at HEAD with git."""
    if not (git_dir / "HEAD").is_file() and not (git_dir / ".git").exists():
        raise PoolError(f"{git_dir} is not a git directory")
    if (git_dir / ".git").exists():
        git_dir = git_dir / ".git"
    head = _git(git_dir, "rev-parse", "HEAD").decode().strip()
    commits = int(_git(git_dir, "rev-list", "--first-parent", "--count", "HEAD").decode())
    listing = _git(git_dir, "ls-tree", "-r", "-l", "-z", "HEAD").split(b"\0")
    tests = ExclusionConfig(mode="with-tests")
    code_bytes = py_bytes = 0
    py_paths: list[tuple[str, str]] = []  # (path, sha)
    license_name = ""
    vendored = missing = 0
    for item in filter(None, listing):
        meta, _, raw_path = item.partition(b"\t")
        mode, kind, sha, size = meta.decode().split()
        path = raw_path.decode(errors="replace")
        if kind != "blob" or mode == _SYMLINK:
            continue  # submodules and symlinks are never followed
        if not size.isdigit():
            missing += 1  # ls-tree -l has no size for a blob the snapshot left out
            continue
        if "/" not in path and _LICENSE_NAME.match(path) and not license_name:
            license_name = path
        dirs = path.split("/")[:-1]
        if any(d in reserved.import_names for d in dirs):
            vendored += 1
        ext = os.path.splitext(path)[1].lower()
        own_source = not any(d.lower() in _NOT_SOURCE_DIRS for d in dirs) and (
            ext == ".py" or int(size) <= _MAX_CODE_FILE_BYTES
        )
        if ext in CODE_EXTENSIONS and own_source and not path.endswith(".min.js"):
            code_bytes += int(size)
            if ext == ".py":
                py_bytes += int(size)
        if ext == ".py":
            py_paths.append((path, sha))
    py_files = py_lines = test_files = assert_lines = 0
    for (path, _), blob in zip(py_paths, _blobs(git_dir, [s for _, s in py_paths]), strict=True):
        if blob is None:
            missing += 1
            continue
        py_files += 1
        text = blob.decode("utf-8", errors="replace")
        py_lines += text.count("\n") + (0 if not text or text.endswith("\n") else 1)
        if is_test_path(path, tests):
            n = sum(1 for line in text.splitlines() if _ASSERT_LINE.search(line))
            if n:
                test_files += 1
                assert_lines += n
    return RepoFacts(
        owner_name=owner_name,
        url=f"https://github.com/{owner_name}",
        git_dir=str(git_dir),
        head=head,
        commits=commits,
        py_files=py_files,
        py_lines=py_lines,
        py_share=round(py_bytes / code_bytes, 3) if code_bytes else 0.0,
        test_files=test_files,
        assert_lines=assert_lines,
        license=license_name,
        vendored_reserved=vendored,
        missing_files=missing,
    )


def python_blob_ids(git_dir: Path, min_bytes: int = 200) -> set[str]:
    """The blob ids of the `.py` files at HEAD of at least `min_bytes` (smaller ones, such as
    empty `__init__.py` files, are shared by unrelated repositories)."""
    ids = set()
    for item in filter(None, _git(git_dir, "ls-tree", "-r", "-l", "-z", "HEAD").split(b"\0")):
        meta, _, raw_path = item.partition(b"\t")
        _, kind, sha, size = meta.decode().split()
        if (
            kind == "blob"
            and raw_path.endswith(b".py")
            and size.isdigit()
            and int(size) >= min_bytes
        ):
            ids.add(sha)
    return ids


def heldout_overlap(result: PoolResult) -> dict[str, int]:
    """For each held-out repository that has any: how many of its `.py` files are
    byte-identical to a file of a training repository (a copy or a shared template would let
    the hypernetwork see held-out code)."""
    seen: set[str] = set()
    for facts in result.train:
        seen |= python_blob_ids(Path(facts.git_dir))
    overlap = {}
    for facts in result.heldout:
        n = len(python_blob_ids(Path(facts.git_dir)) & seen)
        if n:
            overlap[facts.owner_name] = n
    return overlap


def rejections(facts: RepoFacts, criteria: PoolCriteria) -> list[str]:
    """Why a repository is not usable (empty when it is)."""
    why = []
    if facts.py_share < criteria.min_py_share:
        why.append(f"not mostly Python ({facts.py_share:.0%} of code bytes)")
    if facts.py_lines < criteria.min_py_lines:
        why.append(f"too small ({facts.py_lines} lines of Python)")
    if facts.py_lines > criteria.max_py_lines:
        why.append(f"too large ({facts.py_lines} lines of Python)")
    if facts.test_files < criteria.min_test_files or facts.assert_lines < criteria.min_assert_lines:
        why.append(f"too few tests ({facts.test_files} files, {facts.assert_lines} assert lines)")
    if facts.commits < criteria.min_commits:
        why.append(f"short history ({facts.commits} first-parent commits)")
    return why


def split_of(owner_name: str, seed: int, heldout_fraction: float) -> str:
    """The split of a repository, "train" or "heldout", from a seeded hash of its lower-case
    owner/name: the first 8 hex digits of sha256("SEED:owner/name") over 0xFFFFFFFF, held out
    below `heldout_fraction`."""
    key = f"{seed}:{owner_name.lower()}".encode()
    u = int(hashlib.sha256(key).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "heldout" if u < heldout_fraction else "train"


@dataclass
class PoolResult:
    """The screened pool: usable repositories by split, the rest with their reasons."""

    train: list[RepoFacts]
    heldout: list[RepoFacts]
    in_manifest: list[tuple[RepoFacts, str]]
    rejected: list[tuple[RepoFacts, list[str]]]


def build_pool(
    specs: Sequence[tuple[str, Path]],
    reserved: Reserved,
    manifest: dict[str, str],
    criteria: PoolCriteria,
    seed: int = 0,
    heldout_fraction: float = 0.2,
) -> PoolResult:
    """Screens `specs` ((owner/name, git dir) pairs). Raises PoolError, before reading any
    repository, if one is reserved for evaluation or named twice."""
    seen: set[str] = set()
    for owner_name, _ in specs:
        reason = reserved_reason(owner_name, reserved)
        if reason:
            raise PoolError(
                f"{owner_name} is reserved for evaluation: {reason}; remove it from the list"
            )
        if owner_name.lower() in seen:
            raise PoolError(f"{owner_name} is listed twice")
        seen.add(owner_name.lower())
    result = PoolResult(train=[], heldout=[], in_manifest=[], rejected=[])
    for owner_name, git_dir in sorted(specs, key=lambda s: s[0].lower()):
        facts = inspect_repo(owner_name, git_dir, reserved)
        section = manifest.get(owner_name.lower())
        why = rejections(facts, criteria)
        if section is not None:
            result.in_manifest.append((facts, section))
        elif why:
            result.rejected.append((facts, why))
        elif split_of(owner_name, seed, heldout_fraction) == "heldout":
            result.heldout.append(facts)
        else:
            result.train.append(facts)
    return result


def _tsv(rows: Sequence[RepoFacts], why: Sequence[str] | None = None) -> str:
    """Rows under a header of `COLUMNS`, plus a `why` column when reasons are given."""
    lines = ["\t".join([*COLUMNS, "why"] if why is not None else COLUMNS)]
    for i, row in enumerate(rows):
        values = [str(getattr(row, c)) for c in COLUMNS]
        lines.append("\t".join(values if why is None else [*values, why[i]]))
    return "\n".join(lines) + "\n"


def write_pool(result: PoolResult, out_dir: Path) -> list[Path]:
    """Writes train.tsv, heldout.tsv and rejected.tsv (the last with a `why` column) into
    `out_dir`; each file appears whole or not at all."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rejected = [r for r, _ in result.rejected] + [r for r, _ in result.in_manifest]
    why = ["; ".join(w) for _, w in result.rejected] + [
        f"in a hypernetwork manifest ({section})" for _, section in result.in_manifest
    ]
    texts = {
        "train.tsv": _tsv(result.train),
        "heldout.tsv": _tsv(result.heldout),
        "rejected.tsv": _tsv(rejected, why),
    }
    written = []
    for name, text in texts.items():
        fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{name}.")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, out_dir / name)
        written.append(out_dir / name)
    return written


def read_pool_tsv(path: Path) -> list[dict[str, str]]:
    """The rows of a pool TSV as dicts by column name."""
    lines = path.read_text().splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:]]


def summary(result: PoolResult) -> dict[str, Any]:
    """The JSON report: counts, lines of Python, reasons for rejection, and every row."""
    usable = result.train + result.heldout
    reasons: dict[str, int] = {}
    for _, why in result.rejected:
        for w in why:
            key = w.split(" (")[0]
            reasons[key] = reasons.get(key, 0) + 1
    return {
        "screened": len(usable) + len(result.rejected) + len(result.in_manifest),
        "train": len(result.train),
        "heldout": len(result.heldout),
        "in_manifest": len(result.in_manifest),
        "rejected": len(result.rejected),
        "rejection_reasons": reasons,
        "py_lines_train": sum(r.py_lines for r in result.train),
        "py_lines_heldout": sum(r.py_lines for r in result.heldout),
        "heldout_py_files_identical_to_train": heldout_overlap(result),
        "rows": {
            "train": [asdict(r) for r in result.train],
            "heldout": [asdict(r) for r in result.heldout],
            "in_manifest": [{**asdict(r), "section": s} for r, s in result.in_manifest],
            "rejected": [{**asdict(r), "why": w} for r, w in result.rejected],
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark.repo_pool", description=__doc__)
    p.add_argument("repos", nargs="*", help="git dirs: a fetch mirror PATH or owner/name=PATH")
    p.add_argument("--list", type=Path, help="a file of such specs, one per line (# comments)")
    p.add_argument(
        "--reserved", type=Path, help="eval-reserved.tsv (default: ../shared/ of the checkout)"
    )
    p.add_argument("--manifest", type=Path, action="append", help="hypernetwork manifest(s)")
    p.add_argument("--out-dir", type=Path, help="write train.tsv, heldout.tsv, rejected.tsv")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--heldout-fraction", type=float, default=0.2)
    p.add_argument("--rows", action="store_true", help="include every row in the JSON")
    defaults = PoolCriteria()
    for f in fields(PoolCriteria):
        p.add_argument(
            "--" + f.name.replace("_", "-"), type=type(getattr(defaults, f.name)), default=None
        )
    args = p.parse_args(argv)
    try:
        raw = list(args.repos)
        if args.list:
            if not args.list.is_file():
                raise PoolError(f"no list file at {args.list}")
            for line in args.list.read_text().splitlines():
                line = line.split("#", 1)[0].strip()
                if line:
                    raw.append(line)
        if not raw:
            raise PoolError("no repositories given; pass git dirs or --list FILE")
        if not 0.0 <= args.heldout_fraction <= 1.0:
            raise PoolError("--heldout-fraction must be between 0 and 1")
        criteria = PoolCriteria(
            **{
                f.name: getattr(args, f.name)
                for f in fields(PoolCriteria)
                if getattr(args, f.name) is not None
            }
        )
        reserved = load_reserved(args.reserved or default_reserved_path())
        manifest: dict[str, str] = {}
        for m in args.manifest or [DEFAULT_MANIFEST]:
            manifest.update(manifest_repositories(m))
        specs = [parse_spec(s) for s in raw]
        result = build_pool(specs, reserved, manifest, criteria, args.seed, args.heldout_fraction)
    except PoolError as exc:
        print(f"repo2lora: error: {exc}", file=sys.stderr)
        return 1
    if args.out_dir:
        write_pool(result, args.out_dir)
    report = summary(result)
    if not args.rows:
        report.pop("rows")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
