"""Where pretraining source comes from: the standard library, the installed environment, and
pinned PyPI distributions fetched with pip by name (download and unpack only; their code is
never installed or run). Each source yields its `.py` files as (path, bytes) with the
distribution's name, version and license."""

from __future__ import annotations

import email.parser
import importlib.metadata as md
import io
import re
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from repo_encoder.errors import UserError

# Nothing of this project goes into its own training data.
OWN_PACKAGES = frozenset({"repo2lora", "repo_encoder", "evo_state", "lsp_server", "benchmark"})
MAX_MEMBER_BYTES = 1_000_000
ARCHIVE_SUFFIXES = (".whl", ".zip", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar")


@dataclass(frozen=True)
class Requirement:
    """One pinned line of the package list: `name==version`."""

    name: str
    version: str

    @property
    def spec(self) -> str:
        return f"{self.name}=={self.version}"


@dataclass
class Distribution:
    """One named source of files: a PyPI distribution, the standard library, or an installed
    distribution of the running environment."""

    name: str
    version: str
    origin: str  # "stdlib" | "installed" | "pypi"
    license: str = "unknown"
    archive: str = ""  # the downloaded file, for "pypi"


class PackageListError(UserError):
    """The pinned package list is malformed; the message names the line."""


def read_package_list(path: str | Path) -> list[Requirement]:
    """`name==version` per line; `#` comments and blank lines ignored; every line pinned."""
    out: list[Requirement] = []
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise PackageListError(f"cannot read the package list {p} ({e.strerror or e})") from e
    for n, raw in enumerate(lines, 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([A-Za-z0-9.+!_-]+)", line)
        if not m:
            raise PackageListError(
                f"{p}:{n}: {line!r} is not pinned; write each distribution as name==version"
            )
        out.append(Requirement(m.group(1), m.group(2)))
    return out


def download(req: Requirement, dest: Path, timeout: float = 600) -> Path:
    """Fetch one distribution file with pip (wheel or sdist, no dependencies, nothing built or
    installed) into `dest`; returns the file. Raises RuntimeError with pip's last line."""
    dest.mkdir(parents=True, exist_ok=True)
    have = _find_archive(dest, req)
    if have is not None:
        return have
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "--disable-pip-version-check",
            "--dest",
            str(dest),
            req.spec,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    found = _find_archive(dest, req)
    if proc.returncode != 0 or found is None:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and "WARNING" not in ln]
        raise RuntimeError(lines[-1].strip() if lines else f"pip exited {proc.returncode}")
    return found


def _find_archive(dest: Path, req: Requirement) -> Path | None:
    key = re.sub(r"[-_.]+", "_", req.name).lower()
    for f in sorted(dest.iterdir()) if dest.is_dir() else []:
        name = re.sub(r"[-_.]+", "_", f.name).lower()
        if name.startswith(f"{key}_{re.sub(r'[-_.]+', '_', req.version).lower()}") and (
            f.name.endswith(ARCHIVE_SUFFIXES)
        ):
            return f
    return None


def archive_files(archive: Path) -> Iterator[tuple[str, bytes | None]]:
    """The `.py` members of a wheel or sdist, as (path inside the distribution, bytes; None for
    a member over 1 MB). An sdist's top folder (`name-1.0/`) is dropped; links are skipped."""
    name = archive.name
    if name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if info.is_dir() or not info.filename.endswith(".py"):
                    continue
                if info.file_size > MAX_MEMBER_BYTES:
                    yield _strip_top(info.filename, name), None
                    continue
                yield _strip_top(info.filename, name), zf.read(info)
        return
    with tarfile.open(archive) as tf:
        for member in tf:
            if not member.isfile() or not member.name.endswith(".py"):
                continue
            if member.size > MAX_MEMBER_BYTES:
                yield _strip_top(member.name, name), None
                continue
            fh = tf.extractfile(member)
            if fh is not None:
                yield _strip_top(member.name, name), fh.read()


def _strip_top(member: str, archive_name: str) -> str:
    parts = member.split("/")
    if not archive_name.endswith(".whl") and len(parts) > 1:
        return "/".join(parts[1:])  # sdist: drop "name-version/"
    return member


def archive_license(archive: Path) -> str:
    """License from the distribution's metadata (License-Expression, License, or the license
    classifiers), "unknown" when it names none."""
    meta = b""
    try:
        if archive.name.endswith((".whl", ".zip")):
            with zipfile.ZipFile(archive) as zf:
                for n in zf.namelist():
                    if n.endswith((".dist-info/METADATA", "PKG-INFO")) and n.count("/") <= 1:
                        meta = zf.read(n)
                        break
        else:
            with tarfile.open(archive) as tf:
                for m in tf:
                    if m.isfile() and m.name.endswith("PKG-INFO") and m.name.count("/") == 1:
                        fh = tf.extractfile(m)
                        meta = fh.read() if fh else b""
                        break
    except (OSError, zipfile.BadZipFile, tarfile.TarError):
        return "unknown"
    return license_from_metadata(meta.decode("utf-8", "replace"))


def license_from_metadata(text: str) -> str:
    msg = email.parser.Parser().parse(io.StringIO(text), headersonly=True)
    for key in ("License-Expression", "License"):
        v = (msg.get(key) or "").strip()
        if v and v.upper() != "UNKNOWN" and len(v) < 120:
            return v.splitlines()[0]
    classifiers = [
        c.split("::")[-1].strip()
        for c in msg.get_all("Classifier") or []
        if c.startswith("License ::")
    ]
    return "; ".join(classifiers) if classifiers else "unknown"


def stdlib_distribution() -> tuple[Distribution, Path]:
    v = sysconfig.get_python_version()
    return Distribution("python-stdlib", v, "stdlib", "PSF-2.0"), Path(
        sysconfig.get_paths()["stdlib"]
    )


def stdlib_files(root: Path) -> Iterator[tuple[str, bytes | None]]:
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root)
        if rel.parts[0] in ("site-packages", "dist-packages") or p.is_symlink():
            continue
        yield str(rel), _read_capped(p)


def installed_distributions() -> list[tuple[Distribution, list[Path]]]:
    """Every distribution installed in the running environment with the `.py` files it owns
    (from its RECORD), this project's own packages excluded."""
    out: list[tuple[Distribution, list[Path]]] = []
    seen: set[str] = set()
    for dist in sorted(md.distributions(), key=lambda d: (d.metadata["Name"] or "").lower()):
        name = dist.metadata["Name"] or ""
        if not name or name.lower() in seen or name.lower() == "repo2lora":
            continue
        seen.add(name.lower())
        files = [
            Path(str(dist.locate_file(f)))
            for f in dist.files or []
            if str(f).endswith(".py") and str(f).split("/")[0] not in OWN_PACKAGES
        ]
        lic = license_from_metadata(dist.read_text("METADATA") or dist.read_text("PKG-INFO") or "")
        out.append((Distribution(name, dist.version, "installed", lic), files))
    return out


def installed_files(files: list[Path]) -> Iterator[tuple[str, bytes | None]]:
    for p in sorted(files):
        if not p.is_file() or p.is_symlink():
            continue
        parts = p.parts
        # The path inside the distribution: from the top-level package on.
        idx = max(
            (i for i, s in enumerate(parts) if s in ("site-packages", "dist-packages")),
            default=len(parts) - 2,
        )
        yield "/".join(parts[idx + 1 :]), _read_capped(p)


def _read_capped(p: Path) -> bytes | None:
    """The file's bytes, or None when it is over 1 MB or cannot be read."""
    try:
        if p.stat().st_size > MAX_MEMBER_BYTES:
            return None
        return p.read_bytes()
    except OSError:
        return None
