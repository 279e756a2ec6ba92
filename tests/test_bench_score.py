"""`repo2lora bench --generator-dir default` end to end, as a user runs it: the shipped static
and evolving checkpoints scored beside the base model on a tiny repository they never saw,
training nothing; and a repository named in the shipped hypernetwork manifest refused before
anything is written, or kept and marked with --allow-contaminated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmark.report import find_row
from repo2lora.models import embedded
from tests.cli import run_cli
from tests.gitrepo import SAMPLE_V1, SAMPLE_V2, GitRepo

pytestmark = pytest.mark.slow

MORE_TESTS: dict[str, str | bytes] = {
    "tests/test_shapes.py": (
        "from pkg.geometry import Vector\nfrom pkg.shapes import Polygon\n\n\n"
        "def test_perimeter():\n    square = Polygon([Vector(1, 0), Vector(0, 1)])\n"
        "    assert square.perimeter() == 2.0\n    assert square.points[0].x == 1\n"
    ),
}


def _repo(root: Path) -> Path:
    r = GitRepo(root)
    r.commit(SAMPLE_V1)
    r.commit(SAMPLE_V2)
    r.commit(MORE_TESTS)
    return root


def test_scores_the_shipped_checkpoints_without_training(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "shapes-demo")
    out = tmp_path / "out"
    proc = run_cli(
        "bench", "--generator-dir", "default", "--test-repos", str(repo),
        "--methods", "base,constant", "--out", str(out), "-q", timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "bench.json").read_text())
    assert not (out / "models").exists()  # nothing trained
    assert report["contamination"]["contaminated"] == {}
    # the base model's packages and corpus file hashes, and each hypernetwork's card
    assert len(report["contamination"]["manifests"]) == 4
    assert [r["contaminated"] for r in report["repos"]] == [False]
    for track, method in (
        ("static", "base"),
        ("static", "code2lora-static"),
        ("evo", "code2lora-evo"),
        ("evo", "code2lora-static"),
    ):
        row = find_row(report["summary"], track, "cross-repo", method)
        assert row is not None and row["n"] >= 1, (track, method)
        assert row["nll"] is not None
    assert not any(r["method"] == "constant" for r in report["summary"])
    assert any(n.startswith("constant: skipped") for n in report["notes"])
    shipped = {str(embedded.DEFAULT_DIR / d) for d in embedded.HYPERNETS.values()}
    assert {c["checkpoint"] for c in report["training"].values()} == shipped
    assert "Contamination check" in (out / "bench.md").read_text()


def test_a_contaminated_repository_is_refused_or_kept_marked(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "spectree")  # a training repository of the shipped hypernetworks
    out = tmp_path / "out"
    args = ("bench", "--generator-dir", "default", "--test-repos", str(repo), "--track",
            "static", "--methods", "base", "--max-tasks", "1", "--out", str(out), "-q")  # fmt: skip
    proc = run_cli(*args, timeout=240)
    assert proc.returncode == 1
    err = proc.stderr.strip()
    assert err.startswith("repo2lora: error: contaminated test repository: spectree")
    assert "hypernets/static/hypernet.json" in err and "\n" not in err
    assert not out.exists()

    proc = run_cli(*args, "--allow-contaminated", timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "bench.json").read_text())
    assert list(report["contamination"]["contaminated"]) == ["spectree"]
    assert report["repos"][0]["contaminated"] and report["records"][0]["contaminated"]
    assert "**CONTAMINATED** spectree" in (out / "bench.md").read_text()
