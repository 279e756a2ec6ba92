"""Gathers the pretraining corpus: every `.py` file of the standard library and the installed
distributions, de-duplicated by content, split into train/validation by package (never by
file, so validation code is from packages the model never saw), with a data manifest."""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class SourceDoc:
    package: str  # top-level package ("stdlib:<module>" for the standard library)
    path: str
    text: str


@dataclass
class Corpus:
    train: list[SourceDoc]
    val: list[SourceDoc]
    manifest: dict[str, object] = field(default_factory=dict)


def _distributions() -> dict[str, tuple[str, str]]:
    """top-level module name -> (distribution name, version)."""
    out: dict[str, tuple[str, str]] = {}
    for dist in md.distributions():
        name = dist.metadata["Name"] or "?"
        top = (dist.read_text("top_level.txt") or "").split()
        if not top and dist.files:
            top = sorted({str(f).split("/")[0] for f in dist.files if str(f).endswith(".py")})
        for t in top:
            out.setdefault(t.removesuffix(".py"), (name, dist.version))
    return out


def _iter_py(root: Path) -> Iterator[Path]:
    for p in sorted(root.rglob("*.py")):
        if p.is_file() and not p.is_symlink():
            yield p


def is_val_package(package: str, val_share: float) -> bool:
    u = int(hashlib.sha256(package.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return u < val_share


def gather_corpus(
    max_bytes: int = 200_000_000,
    val_share: float = 0.03,
    max_file_bytes: int = 500_000,
    exclude: tuple[str, ...] = (
        "repo2lora",
        "repo_encoder",
        "evo_state",
        "lsp_server",
        "benchmark",
    ),
) -> Corpus:
    """Read, de-duplicate and split the machine's Python source, up to `max_bytes`."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    site = {Path(sysconfig.get_paths()[k]) for k in ("purelib", "platlib")}
    dists = _distributions()
    seen: set[str] = set()
    train: list[SourceDoc] = []
    val: list[SourceDoc] = []
    used: dict[str, dict[str, object]] = {}
    total = 0
    roots = [(stdlib, True), *((s, False) for s in sorted(site))]
    for root, is_stdlib in roots:
        for p in _iter_py(root):
            rel = p.relative_to(root)
            if is_stdlib and rel.parts[0] in ("site-packages", "dist-packages"):
                continue
            top = rel.parts[0].removesuffix(".py")
            package = f"stdlib:{top}" if is_stdlib else top
            if package in exclude or p.stat().st_size > max_file_bytes:
                continue
            try:
                text = p.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            h = hashlib.sha256(text.encode()).hexdigest()
            if h in seen or not text.strip():
                continue
            seen.add(h)
            doc = SourceDoc(package, str(rel), text)
            (val if is_val_package(package, val_share) else train).append(doc)
            entry = used.setdefault(
                package,
                {
                    "distribution": "python-stdlib"
                    if is_stdlib
                    else dists.get(package, ("?", "?"))[0],
                    "version": sysconfig.get_python_version()
                    if is_stdlib
                    else dists.get(package, ("?", "?"))[1],
                    "files": 0,
                    "bytes": 0,
                    "split": "val" if is_val_package(package, val_share) else "train",
                },
            )
            entry["files"] = int(entry["files"]) + 1  # type: ignore[call-overload]
            entry["bytes"] = int(entry["bytes"]) + len(text.encode())  # type: ignore[call-overload]
            total += len(text.encode())
            if total >= max_bytes:
                break
        if total >= max_bytes:
            break
    if not val or not train:
        raise ValueError(
            f"the corpus of {total} bytes has no {'validation' if not val else 'training'} "
            "package; raise the corpus size or the validation share"
        )
    return Corpus(train, val, {"packages": used, "bytes": total, "files": len(train) + len(val)})
