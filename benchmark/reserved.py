"""The repositories the hypernetwork pool must refuse or keep apart: the evaluation-reserved
list (`eval-reserved.tsv`: GitHub repositories and distribution/import names, compared loosely)
and the repositories a shipped hypernetwork manifest already trained on."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent


class PoolError(Exception):
    """Input the script cannot use (a reserved repository, a path that is no git repository)."""


@dataclass(frozen=True)
class Reserved:
    """The evaluation-reserved list: GitHub owner/name and distribution/import names, all
    normalised (see `normalise_name`)."""

    github: dict[str, str]  # lower-case owner/name -> distribution
    names: dict[str, str]  # normalised distribution or import name -> distribution
    import_names: frozenset[str]


def default_reserved_path(checkout: Path = CHECKOUT) -> Path:
    """`../shared/eval-reserved.tsv` beside the checkout, or beside the nearest ancestor that has
    one (a worktree at /work/wt/NAME finds /work/shared)."""
    for parent in checkout.parents:
        candidate = parent / "shared" / "eval-reserved.tsv"
        if candidate.is_file():
            return candidate
    return checkout.parent / "shared" / "eval-reserved.tsv"


def normalise_name(name: str) -> str:
    """A repository, distribution or import name compared loosely: lower case, `_`/`.` as `-`,
    without a `python-`/`py-` prefix or a `-python`/`.py` suffix (`jmespath.py` is `jmespath`)."""
    n = name.strip().lower()
    if n.endswith(".py"):
        n = n[: -len(".py")]
    n = re.sub(r"[_.]+", "-", n)
    for prefix in ("python-", "py-"):
        if n.startswith(prefix) and len(n) > len(prefix):
            n = n[len(prefix) :]
    if n.endswith("-python") and len(n) > len("-python"):
        n = n[: -len("-python")]
    return n


def load_reserved(path: Path) -> Reserved:
    """Reads eval-reserved.tsv (comment lines start with `#`; a header line names the columns
    distribution, import_names, github)."""
    if not path.is_file():
        raise PoolError(f"no reserved list at {path}; pass --reserved PATH")
    github: dict[str, str] = {}
    names: dict[str, str] = {}
    imports: set[str] = set()
    header_seen = False
    for raw in path.read_text().splitlines():
        if not raw.strip() or raw.startswith("#"):
            continue
        cols = raw.split("\t")
        if not header_seen:
            header_seen = True
            if cols[0].strip() == "distribution":
                continue
        if len(cols) < 3:
            raise PoolError(f"{path}: a line without 3 tab-separated columns: {raw!r}")
        dist, import_col, repo = (c.strip() for c in cols[:3])
        github[repo.lower()] = dist
        names[normalise_name(dist)] = dist
        for imp in filter(None, (s.strip() for s in import_col.split(","))):
            names[normalise_name(imp)] = dist
            imports.add(imp)
    return Reserved(github=github, names=names, import_names=frozenset(imports))


def reserved_reason(owner_name: str, reserved: Reserved) -> str | None:
    """Why `owner_name` is reserved for evaluation, or None if it is not."""
    key = owner_name.lower()
    if key in reserved.github:
        return f"its GitHub repository is reserved (distribution {reserved.github[key]})"
    repo = owner_name.split("/")[-1]
    dist = reserved.names.get(normalise_name(repo))
    if dist is not None:
        return f"its name {repo!r} is a reserved distribution/import name ({dist})"
    return None


def manifest_repositories(path: Path) -> dict[str, str]:
    """owner/name (lower case) -> the manifest section, for every GitHub source in a
    hypernetwork manifest (synthetic entries have no URL and are skipped)."""
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    out: dict[str, str] = {}
    for section, entries in data.items():
        if not isinstance(entries, list):
            continue
        for entry in entries:
            url = str(entry.get("source") or entry.get("url") or "")  # `train` cards: url
            m = re.match(r"https?://github\.com/([^/\s]+/[^/\s]+?)(?:\.git)?/?$", url)
            if m:
                out[m.group(1).lower()] = section
    return out
