"""The evaluation-reserved list: reads `eval-reserved.tsv` at run time and says whether a
distribution, a file path or a repository is reserved, so no builder of training data (the
pretraining corpus, the tokenizer, the hypernetworks' repositories) can take one in.

The file has one line per reserved distribution, tab-separated: PyPI distribution, import
names (comma-separated), GitHub repository. Lines starting with `#` are comments; the first
non-comment line is the header. A file of a reserved distribution is out wherever it appears,
vendored copies included: a path whose directory components contain one of the import names
(`pip/_vendor/packaging/version.py`), or a single-module file named after one
(`six.py`) at the top of a distribution or inside a vendoring directory."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from repo_encoder.errors import UserError

# The default place of the list: `shared/` beside the checkout.
DEFAULT_RESERVED_PATH = (
    Path(__file__).resolve().parent.parent.parent / "shared" / "eval-reserved.tsv"
)

# Directory names under which projects vendor other distributions.
VENDOR_DIRS = frozenset(
    {
        "_vendor",
        "vendor",
        "vendored",
        "_vendored",
        "extern",
        "_extern",
        "externals",
        "third_party",
        "thirdparty",
        "_thirdparty",
        "packages",
        "_lib",
        "compat",
    }
)


class ReservedListError(UserError):
    """The reserved list could not be read; the message says which file and why."""


def normalize_distribution(name: str) -> str:
    """PEP 503 normalisation: `Python_Dateutil` -> `python-dateutil`."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class ReservedList:
    """Reserved distributions (normalised names), their import names and GitHub repositories."""

    source: str
    distributions: frozenset[str] = frozenset()
    import_names: frozenset[str] = frozenset()
    repositories: frozenset[str] = frozenset()  # "owner/name", lower case
    by_import: dict[str, str] = field(default_factory=dict)  # import name -> distribution

    def distribution_reserved(self, name: str) -> bool:
        return normalize_distribution(name) in self.distributions

    def repository_reserved(self, repo: str) -> bool:
        """`repo` as "owner/name" or a URL ending in it (".git" allowed)."""
        return repository_key(repo) in self.repositories

    def name_reserved(self, name: str) -> bool:
        """A bare repository or package name equal to a reserved distribution or import name."""
        n = name.lower().removesuffix(".git")
        return normalize_distribution(n) in self.distributions or n.replace("-", "_") in {
            i.lower() for i in self.import_names
        }

    def path_reservation(self, path: str) -> str | None:
        """The reserved distribution a file inside a distribution belongs to, or None.
        `path` is relative to the distribution's root (`pip/_vendor/six.py`)."""
        parts = PurePosixPath(path.replace("\\", "/")).parts
        for part in parts[:-1]:
            if part in self.by_import:
                return self.by_import[part]
        stem = PurePosixPath(parts[-1]).stem if parts else ""
        top_level = len(parts) == 1
        vendored = len(parts) >= 2 and parts[-2] in VENDOR_DIRS
        if stem in self.by_import and (top_level or vendored):
            return self.by_import[stem]
        return None


def repository_key(repo: str) -> str:
    """ "owner/name" (lower case) from "owner/name", a GitHub URL or a path ending in them."""
    r = repo.strip().rstrip("/").removesuffix(".git")
    parts = [p for p in re.split(r"[/:]", r) if p]
    return "/".join(parts[-2:]).lower()


def load_reserved(path: str | Path | None = None) -> ReservedList:
    """Read the reserved list (default: `shared/eval-reserved.tsv` beside the checkout)."""
    p = Path(path) if path is not None else DEFAULT_RESERVED_PATH
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ReservedListError(
            f"cannot read the evaluation-reserved list {p} ({e.strerror or e}); pass its path "
            "with --reserved"
        ) from e
    return parse_reserved(text, str(p))


def parse_reserved(text: str, source: str = "<text>") -> ReservedList:
    dists: set[str] = set()
    imports: dict[str, str] = {}
    repos: set[str] = set()
    rows = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    for ln in rows[1:] if rows and rows[0].lower().startswith("distribution") else rows:
        cols = ln.split("\t")
        if len(cols) < 2:
            raise ReservedListError(
                f"{source}: the line {ln!r} has no tab-separated import names; each line is "
                "'distribution<TAB>import_names<TAB>github'"
            )
        dist = normalize_distribution(cols[0].strip())
        dists.add(dist)
        for name in _split_names(cols[1]):
            imports[name] = dist
        if len(cols) > 2 and cols[2].strip():
            repos.add(repository_key(cols[2]))
    if not dists:
        raise ReservedListError(f"{source} lists no reserved distribution")
    return ReservedList(
        source=source,
        distributions=frozenset(dists),
        import_names=frozenset(imports),
        repositories=frozenset(repos),
        by_import=imports,
    )


def _split_names(cell: str) -> Iterable[str]:
    return (n.strip() for n in cell.split(",") if n.strip())
