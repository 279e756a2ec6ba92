"""`repo2lora bench --suite quick` end to end, as a user runs it: mine -> split -> train small
-> evaluate every method -> JSON, Markdown and PNG; then what the synthetic suite guarantees is
learnable, asserted on the smooth metric (mean target NLL) with strict EM reported beside it,
because a random-init 64-wide base model scores near 0 EM with every method. `quick` is the
`ci` suite's kind of repositories, fewer of them, with shorter training and completions (about
two minutes of CPU); the full `ci` run is `make bench`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmark.report import find_row
from tests.cli import run_cli

pytestmark = pytest.mark.slow

# "A clear margin" in nats per target token. The static adapter must beat the base model by
# this much on repositories it never saw; the evolving state must beat the stale snapshot (and
# its own start state) by EVO_MARGIN on tasks whose target a rename introduced.
STATIC_MARGIN = 0.5
EVO_MARGIN = 0.1


@pytest.fixture(scope="module")
def ci_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    out = tmp_path_factory.mktemp("bench") / "ci"
    proc = run_cli("bench", "--suite", "quick", "--out", str(out), timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out, json.loads((out / "bench.json").read_text()), proc.stderr


def _row(report: dict[str, Any], track: str, split: str, method: str, subset: str = "all") -> Any:
    row = find_row(report["summary"], track, split, method, subset)
    assert row is not None, f"no {method} row for {track}/{split}/{subset}"
    return row


def _em(row: dict[str, Any]) -> str:
    return f"{row['method']}: NLL {row['nll']:.3f}, strict EM {100 * row['strict_em']:.1f}%"


def test_ci_bench_writes_json_markdown_and_plots(
    ci_run: tuple[Path, dict[str, Any], str],
) -> None:
    out, report, stderr = ci_run
    assert report["config"]["suite"] == ["quick"] and report["config"]["seed"] == 0
    assert report["source"]["sha"] and report["versions"]["torch"]
    assert report["base_model"]["spec"] == "tiny-random"
    methods = {
        "constant",
        "base",
        "rag",
        "shared-lora",
        "per-repo-lora",
        "code2lora-static",
        "code2lora-evo",
        "code2lora-names",
        "shine",
        "dnd",
    }
    expected = {
        # the leakage rule's two settings side by side: rag and the static adapter again with
        # the test code visible (evaluated test functions removed)
        # the names memory is a static-track row: the snapshot's names
        "static": methods - {"code2lora-evo"} | {"rag+tests", "code2lora-static+tests"},
        # the evolution track adds the fresh-snapshot and start-state rows and rag and the
        # evolving state under with-tests (the evaluated commit's test changes hidden too); no
        # per-repository LoRA (one training run per commit is what it is measured against);
        # SHINE and DnD make snapshot adapters only, so they are static-track rows
        "evo": methods - {"per-repo-lora", "shine", "dnd", "code2lora-names"}
        | {"code2lora-static@commit", "code2lora-evo@start", "code2lora-evo@commit"}
        | {"code2lora-evo+tests", "rag+tests"},
    }
    for track in ("static", "evo"):
        seen = {r["method"] for r in report["summary"] if r["track"] == track}
        assert seen == expected[track], track
        for split in ("in-repo", "cross-repo"):
            assert _row(report, track, split, "base")["n"] > 0
    assert all(len(r["methods"]) >= 6 for r in report["records"])
    rag = _row(report, "static", "all", "rag")
    assert rag["retrieved_tokens"] > 0
    assert rag["prompt_tokens"] <= report["config"]["eval"]["prompt_tokens"]
    assert {o["track"] for o in report["overlap"]} == {"static", "evo"}
    # the tasks whose target holds a name the repository defines: their share and their rows
    shares = [o["names_target"] for o in report["overlap"] if o["split"] != "all"]
    assert all(0 < s < 1 for s in shares)
    assert _row(report, "static", "cross-repo", "code2lora-names", "repo-name")["n"] > 0
    assert _row(report, "evo", "cross-repo", "code2lora-evo", "repo-name")["n"] > 0
    # and of them, those whose defined name the prompt does not show (what only the names
    # memory can supply): every record says which
    assert all(isinstance(r["names_unseen"], bool) for r in report["records"])
    assert report["decay"]["code2lora-evo"]
    md = (out / "bench.md").read_text()
    assert "## Static track" in md and "## Evolution track" in md and "Overlap" in md
    assert "Tasks whose target holds a name the repository defines" in md
    for name in ("em_by_method", "evo_decay"):
        assert (out / "plots" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert "ETA" in stderr  # progress lines with an estimate, in a log as on a terminal


def test_static_adapter_beats_the_base_model_on_cross_repo_tasks(
    ci_run: tuple[Path, dict[str, Any], str],
) -> None:
    _, report, _ = ci_run
    static = _row(report, "static", "cross-repo", "code2lora-static")
    base = _row(report, "static", "cross-repo", "base")
    assert static["nll"] < base["nll"] - STATIC_MARGIN, f"{_em(static)}; {_em(base)}"


def test_the_evolving_state_follows_renames_in_the_histories_it_trained_on(
    ci_run: tuple[Path, dict[str, Any], str],
) -> None:
    """In-repo: held-out test functions of the training repositories whose target is a
    renamed-to name. The stale snapshot knows the old name; the state after the rename commit
    must do better, and better than the same network's state at the walk start, so that the
    gain is the walk's and not a better-fit network's."""
    _, report, _ = ci_run
    evolving = _row(report, "evo", "in-repo", "code2lora-evo", "renamed-target")
    stale = _row(report, "evo", "in-repo", "code2lora-static", "renamed-target")
    at_start = _row(report, "evo", "in-repo", "code2lora-evo@start", "renamed-target")
    assert evolving["n"] > 0
    assert evolving["nll"] < stale["nll"] - EVO_MARGIN, f"{_em(evolving)}; stale {_em(stale)}"
    assert evolving["nll"] < at_start["nll"] - EVO_MARGIN, f"{_em(evolving)}; {_em(at_start)}"


@pytest.mark.xfail(
    strict=True,
    reason="not learnable at tiny-random scale: on repositories it never saw, the evolving "
    "state does not beat the stale snapshot after renames (quick suite: target NLL 5.115 vs "
    "5.144; ci suite: 4.955 vs 4.824). `python -m benchmark.diff_probe` finds almost nothing "
    "about a task's target in its commit's chunk diff: cross-repo target-token cross-entropy "
    "3.60 from the prior, 3.58 from the diff's chunk counts, 3.72 (overfit) from its chunk "
    "vectors, on a 16x16 synthetic suite. "
    "When a change makes this pass, strict xfail turns it red: drop the marker",
)
def test_evolving_state_beats_the_stale_snapshot_after_renames_cross_repo(
    ci_run: tuple[Path, dict[str, Any], str],
) -> None:
    _, report, _ = ci_run
    evolving = _row(report, "evo", "cross-repo", "code2lora-evo", "after-rename")
    stale = _row(report, "evo", "cross-repo", "code2lora-static", "after-rename")
    assert evolving["n"] > 0
    assert evolving["nll"] < stale["nll"] - EVO_MARGIN, f"{_em(evolving)}; stale {_em(stale)}"


def test_an_interrupted_run_resumes_without_redoing_finished_repositories(
    ci_run: tuple[Path, dict[str, Any], str],
) -> None:
    out, report, _ = ci_run
    caches = sorted((out / "results").rglob("*.json"))
    assert len(caches) == 2 * len(report["repos"])
    unfinished = caches[0]  # results are written whole per repository, so this is a kill's state
    unfinished.unlink()
    stamps = {p: p.stat().st_mtime_ns for p in caches[1:]}
    proc = run_cli("bench", "--suite", "quick", "--out", str(out), "--json", timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    again = json.loads(proc.stdout)
    assert unfinished.is_file()
    assert {p: p.stat().st_mtime_ns for p in caches[1:]} == stamps
    assert all(cost.get("cached") for cost in again["training"].values()), again["training"]

    # the same numbers: the re-evaluated repository scores as it did the first time (all but
    # the wall-clock seconds)
    def scores(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]

    assert scores(again["summary"]) == scores(report["summary"])
