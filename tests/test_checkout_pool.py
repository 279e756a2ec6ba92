"""`scripts/checkout_pool.sh`: a pool list's repositories checked out at their screened
commits from local mirrors (bare or not), a rerun keeping them, and a commit that cannot be had
reported in one line with exit 1."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.gitrepo import GitRepo

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "checkout_pool.sh"
HEADER = "owner_name\turl\tgit_dir\thead\tcommits\n"


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=120
    )


def test_checks_out_each_repository_at_its_screened_commit(tmp_path: Path) -> None:
    mirrors = tmp_path / "mirrors"
    work = GitRepo(mirrors / "acme+tool" / "repo")
    screened = work.commit({"tool.py": "def f():\n    return 1\n"})
    work.commit({"tool.py": "def f():\n    return 2\n"})  # the mirror's HEAD moved on since
    bare = mirrors / "acme+lib" / "repo"
    subprocess.run(["git", "clone", "-q", "--bare", str(work.root), str(bare)], check=True)
    tsv = tmp_path / "pool.tsv"
    tsv.write_text(
        HEADER
        + f"acme/tool\thttps://example.invalid/acme/tool\t-\t{screened}\t2\n"
        + f"acme/lib\thttps://example.invalid/acme/lib\t-\t{screened}\t2\n"
    )
    out = tmp_path / "out"
    proc = _run(tsv, out, mirrors)
    assert proc.returncode == 0, proc.stderr
    for slug in ("acme+tool", "acme+lib"):
        tree = GitRepo(out / slug)
        assert tree.git("rev-parse", "HEAD").strip() == screened
        assert (out / slug / "tool.py").read_text() == "def f():\n    return 1\n"
    (out / "acme+tool" / "kept").write_text("a rerun keeps a work tree at its commit")
    assert _run(tsv, out, mirrors).returncode == 0
    assert (out / "acme+tool" / "kept").exists()
    # a commit the mirror does not hold: one line naming it, exit 1, nothing half-made
    tsv.write_text(HEADER + f"acme/tool\t-\t-\t{'0' * 40}\t2\n")
    proc = _run(tsv, tmp_path / "out2", mirrors)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"checkout_pool: acme/tool: cannot check out {'0' * 40} from "
        f"{mirrors / 'acme+tool' / 'repo' / '.git'}"
    ]
    assert not (tmp_path / "out2" / "acme+tool").exists()
    assert not (tmp_path / "out2" / "acme+tool.part").exists()
    missing = _run(tmp_path / "nope.tsv", out)
    assert missing.returncode == 1 and "is not a file" in missing.stderr
