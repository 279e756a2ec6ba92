"""The embedded default: the base model and hypernetworks shipped inside the package, the card
that lists every shipped file's sha256, the check of those hashes before anything is used, and
the listing behind `repo2lora models`."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from repo_encoder.errors import UserError

DEFAULT_DIR = Path(__file__).parent / "default"  # the base model's files, and hypernets/
CARD = "card.json"
# the generator -> its shipped checkpoint, relative to DEFAULT_DIR
HYPERNETS = {"code2lora-static": "hypernets/static", "code2lora-evo": "hypernets/evo"}
# the card's record of which shipped network follows a repository's history, and why
UPDATE_FOLLOWS = "update_follows"

_verified: dict[str, str] = {}  # root -> the file stamps it verified with, once per process


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def shipped_files(root: Path) -> list[Path]:
    """Every file of the default except its card, sorted."""
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != CARD)


def write_card(root: Path, card: dict[str, Any]) -> dict[str, Any]:
    """Write `card` to `root/card.json` with the sha256 and size of every shipped file."""
    files: dict[str, dict[str, Any]] = {
        str(p.relative_to(root)): {"sha256": file_sha256(p), "bytes": p.stat().st_size}
        for p in shipped_files(root)
    }
    total = sum(int(f["bytes"]) for f in files.values())
    full = {**card, "files": files, "total_bytes": total}
    (root / CARD).write_text(json.dumps(full, indent=2, sort_keys=True) + "\n")
    _verified.pop(str(root), None)
    return full


def is_installed(root: Path | None = None) -> bool:
    root = root or DEFAULT_DIR
    return (root / CARD).is_file() and (root / "config.json").is_file()


def verify(root: Path | None = None) -> dict[str, Any]:
    """The default's card, after checking every file it lists against its sha256 (once per
    process while the files are unchanged). A damaged or missing file is a UserError."""
    root = root or DEFAULT_DIR
    card_path = root / CARD
    try:
        card = json.loads(card_path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read the embedded default's card {card_path}: {exc}") from None
    listed = [card_path, *(root / p for p in card.get("files", {}))]
    stamp = json.dumps([(str(p), p.stat().st_mtime_ns) for p in listed if p.exists()])
    key = str(root)
    if _verified.get(key) == stamp:
        return card
    for rel, meta in card.get("files", {}).items():
        path = root / rel
        if not path.is_file():
            raise UserError(
                f"the embedded default is incomplete: {path} is missing; reinstall repo2lora"
            )
        if file_sha256(path) != meta["sha256"]:
            raise UserError(
                f"the embedded default is damaged: {path} does not match the sha256 in "
                f"{card_path}; reinstall repo2lora"
            )
    _verified[key] = stamp
    return card


def describe_installed(root: Path | None = None) -> dict[str, Any]:
    """What `repo2lora models` says of the embedded default: where it is, whether its files
    verify, and the card's summary (model, hypernetworks, data, benchmark)."""
    root = root or DEFAULT_DIR
    out: dict[str, Any] = {"name": "default", "path": str(root), "installed": is_installed(root)}
    if not out["installed"]:
        return out
    try:
        card = verify(root)
        out["verified"] = True
    except UserError as exc:
        try:
            card = json.loads((root / CARD).read_text())
        except (OSError, ValueError):
            card = {}
        out["verified"] = False
        out["error"] = str(exc)
    out["total_bytes"] = card.get("total_bytes")
    out["model"] = card.get("model", {})
    out["hypernets"] = card.get("hypernets", {})
    out["benchmark"] = card.get("benchmark", {})
    out[UPDATE_FOLLOWS] = card.get(UPDATE_FOLLOWS)
    return out


def update_follows(root: Path | None = None) -> tuple[str, str]:
    """(shipped generator, state) that follows a repository's history (`update`, the server):
    ("code2lora-evo", "evo") the evolving state; ("code2lora-evo", "static") the evolving
    network's snapshot state at every commit; ("code2lora-static", "static") the static
    network's. The card records the choice (`update_follows`, made by the benchmark when the
    default is shipped); without one, the evolving state."""
    found = verify(root).get(UPDATE_FOLLOWS) or {}
    generator = found.get("generator", "code2lora-evo")
    if generator not in HYPERNETS:
        return "code2lora-evo", "evo"
    if generator != "code2lora-evo":  # no GRU step: only its static state can follow
        return generator, "static"
    state = found.get("state", "evo")
    return generator, state if state in ("evo", "static") else "evo"
