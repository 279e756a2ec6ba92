"""The contamination check of `bench --generator-dir`, on real git repositories made in a temp
dir and fake manifests: a clean repository passes; one whose name or origin URL is in a
manifest, and one holding a file whose text hash is in one, are refused with one line naming
the repository and the manifest, and kept (marked) with --allow-contaminated."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from benchmark import contamination as c
from repo_encoder.errors import UserError
from tests.gitrepo import GitRepo

LEAKED = (
    "def leaked_helper(x):\n    y = x * 6\n    z = y * 7\n    # 42 in two steps\n    return z\n"
)
OWN = "def own(a):\n    b = a + 1\n    c = b + 1\n    d = c + 1\n    return d\n"


def _manifests(tmp: Path) -> list[c.TrainingManifest]:
    model = tmp / "model"
    (model / "data").mkdir(parents=True)
    (model / "data" / "pretrain-manifest.json").write_text(
        json.dumps({"packages": {"attr": {"distribution": "attrs", "files": 3}}})
    )
    digest = hashlib.sha256(LEAKED.encode()).hexdigest()
    (model / "data" / "file-sha256.tsv").write_text(f"{'0' * 64}\ttrain\n{digest}\ttrain\n")
    ckpt = tmp / "hypernets" / "static"
    ckpt.mkdir(parents=True)
    (ckpt / "hypernet.json").write_text(json.dumps({"generator": "code2lora-static"}))
    (tmp / "data").mkdir()
    (tmp / "data" / "hypernet-manifest.json").write_text(
        json.dumps(
            {
                "train": [{"name": "toolz", "source": "https://github.com/pytoolz/toolz"}],
                "benchmark_held_out": [
                    {"name": "boltons", "source": "https://github.com/m/boltons"}
                ],
            }
        )
    )
    return c.base_model_manifests(model) + c.checkpoint_manifests(ckpt)


def _repo(root: Path, files: dict[str, str | bytes], url: str | None = None) -> Path:
    r = GitRepo(root)
    r.commit(files)
    if url:
        r.git("remote", "add", "origin", url)
    return root


def test_clean_passes_and_collisions_are_refused_or_marked(tmp_path: Path) -> None:
    manifests = _manifests(tmp_path)
    assert {Path(m.source).name for m in manifests} == {
        "pretrain-manifest.json",
        "file-sha256.tsv",
        "hypernet-manifest.json",
    }
    clean = _repo(tmp_path / "boltons", {"pkg/a.py": "def own():\n    return 1\n"})
    by_url = _repo(
        tmp_path / "my-fork", {"b.py": "X = 1\n"}, url="git@github.com:PyToolz/toolz.git"
    )
    by_name = _repo(tmp_path / "attrs", {"c.py": "Y = 2\n"})
    by_file = _repo(tmp_path / "innocent", {"src/util.py": LEAKED, "d.py": "Z = 3\n"})

    ids = {p.name: c.repo_identity(p.name, p) for p in (clean, by_url, by_name, by_file)}
    assert c.screen([ids["boltons"]], manifests, allow=False) == {}  # held out is not training

    for name, by, manifest in (
        ("my-fork", "url", "hypernet-manifest.json"),
        ("attrs", "name", "pretrain-manifest.json"),
        ("innocent", "file", "file-sha256.tsv"),
    ):
        with pytest.raises(UserError) as err:
            c.screen([ids["boltons"], ids[name]], manifests, allow=False)
        msg = str(err.value)
        assert "\n" not in msg and name in msg and manifest in msg and f"by {by}" in msg

    kept = c.screen(list(ids.values()), manifests, allow=True)
    assert set(kept) == {"my-fork", "attrs", "innocent"}
    assert "src/util.py" in kept["innocent"][0].detail


def test_a_repository_is_hashed_at_head_not_in_its_work_tree(tmp_path: Path) -> None:
    root = _repo(tmp_path / "r", {"a.py": OWN})
    (root / "a.py").write_text(LEAKED)  # an uncommitted edit is not what is scored
    ident = c.repo_identity("r", root)
    assert set(ident.hashes) == {hashlib.sha256(OWN.encode()).hexdigest()}


def test_a_trivial_file_shared_with_a_manifest_is_not_evidence(tmp_path: Path) -> None:
    """An empty `__init__.py` or a short stub is in almost every repository: files with fewer
    than EVIDENCE_LINES non-blank lines are not hashed for the check."""
    stub = "__version__ = '1.0'\n"
    digests = [hashlib.sha256(t.encode()).hexdigest() for t in ("", stub)]
    manifest = c.TrainingManifest("m", hashes=frozenset(digests))
    root = _repo(tmp_path / "r", {"pkg/__init__.py": "", "pkg/v.py": stub, "pkg/a.py": OWN})
    ident = c.repo_identity("r", root)
    assert set(ident.hashes) == {hashlib.sha256(OWN.encode()).hexdigest()}
    assert c.collisions(ident, manifest) == []


def test_a_card_lists_its_training_repositories_and_their_file_hashes(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    digest = hashlib.sha256(LEAKED.encode()).hexdigest()
    repos = [{"name": "proj", "source": "https://github.com/acme/proj", "file_sha256": [digest]}]
    (ckpt / "hypernet.json").write_text(json.dumps({"training_repositories": repos}))
    (manifest,) = c.checkpoint_manifests(ckpt)
    assert manifest.keys == {"acme/proj"} and digest in manifest.hashes
    copy = _repo(tmp_path / "vendored", {"third/leak.py": LEAKED})
    (hit,) = c.collisions(c.repo_identity("vendored", copy), manifest)
    assert (hit.by, hit.manifest) == ("file", str(ckpt / "hypernet.json"))
    assert (
        c.collisions(c.repo_identity("other", _repo(tmp_path / "o", {"a.py": OWN})), manifest) == []
    )


def test_a_trained_card_lists_its_repositories_so_the_check_finds_them(tmp_path: Path) -> None:
    """`repo2lora train` writes `training_repositories` (name, URL, commit, file hashes) into
    the card it saves; the check then refuses the training repository itself, by URL and by
    file, and a copy of it under another name by file."""
    from tests.cli import run_cli

    repo = GitRepo(tmp_path / "sample")
    repo.commit(
        {
            "pkg/core.py": LEAKED,
            "tests/test_core.py": "from pkg.core import leaked_helper\n\n\n"
            "def test_it():\n    assert leaked_helper(1) == 42\n",
        }
    )
    repo.git("remote", "add", "origin", "https://github.com/acme/sample.git")
    out = tmp_path / "run"
    proc = run_cli(
        "train", "--model", "tiny-random", "--repos", str(repo.root), "--out", str(out),
        "--steps", "1", "--batch-size", "1", "--threads", "1", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    card = json.loads((out / "hypernet.json").read_text())
    (entry,) = card["training_repositories"]
    assert entry["name"] == "acme/sample" and entry["url"].endswith("acme/sample.git")
    assert entry["commit"] == repo.git("rev-parse", "HEAD")
    assert hashlib.sha256(LEAKED.encode()).hexdigest() in entry["file_sha256"]
    (manifest,) = c.checkpoint_manifests(out)
    hits = c.collisions(c.repo_identity("sample", repo.root), manifest)
    assert {h.by for h in hits} >= {"url", "file"}
    copy = GitRepo(tmp_path / "elsewhere")
    copy.commit({"lib/copied.py": LEAKED})
    assert [h.by for h in c.collisions(c.repo_identity("elsewhere", copy.root), manifest)] == [
        "file"
    ]
