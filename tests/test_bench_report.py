"""The benchmark report: aggregate rows, overlap statistics, per-commit decay, and the JSON,
Markdown and PNG files written from per-task records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmark.markdown import compact_table, render_markdown
from benchmark.report import aggregate, decay, find_row, overlap
from benchmark.run import write_report
from benchmark.runners import names_unseen
from benchmark.source import source_revision
from repo_encoder.chunker import chunk_source
from repo_encoder.names import NameIndex
from tests.gitrepo import GitRepo


def _result(em: bool, nll: float | None, tokens: int = 10) -> dict[str, Any]:
    return {
        "completion": "x",
        "prediction": "x",
        "strict_em": em,
        "reference_cut_em": em,
        "edit_similarity": 1.0 if em else 0.5,
        "nll": nll,
        "prompt_tokens": tokens,
        "retrieved_tokens": 0,
        "seconds": 0.01,
    }


def _record(
    track: str, split: str, step: int, in_prompt: bool, in_train: bool, **scores: Any
) -> dict[str, Any]:
    """A per-task record; `scores` maps a method to (strict EM, NLL)."""
    return {
        "task_id": f"{track}-{split}-{step}-{in_prompt}-{in_train}",
        "repo": "r",
        "track": track,
        "split": split,
        "step": step,
        "target": "42",
        "target_kind": "literal",
        "target_in_prompt": in_prompt,
        "target_in_training": in_train,
        "after_rename": step >= 2 if track == "evo" else None,
        "renamed_target": False if track == "evo" else None,
        "methods": {name.replace("_", "-"): _result(*score) for name, score in scores.items()},
    }


RECORDS = [
    _record("static", "in-repo", -1, True, True, constant=(True, None), base=(True, 2.0)),
    _record("static", "in-repo", -1, False, True, constant=(False, None), base=(False, 4.0)),
    _record("static", "cross-repo", -1, False, False, constant=(False, None), base=(False, 6.0)),
    _record("static", "cross-repo", -1, False, False, constant=(False, None), base=(True, 2.0)),
    _record("evo", "in-repo", 1, True, False, base=(False, 5.0), code2lora_evo=(True, 1.0)),
    _record("evo", "cross-repo", 2, False, False, base=(False, 3.0), code2lora_evo=(False, 2.0)),
    _record("evo", "cross-repo", 3, False, True, base=(True, 3.0), code2lora_evo=(False, 4.0)),
]


def test_aggregate_means_per_split_and_subset() -> None:
    rows = aggregate(RECORDS)
    base_in = find_row(rows, "static", "in-repo", "base")
    assert base_in is not None and base_in["n"] == 2
    assert base_in["strict_em"] == 0.5 and base_in["nll"] == 3.0
    assert find_row(rows, "static", "all", "base")["nll"] == pytest.approx(3.5)  # type: ignore[index]
    constant = find_row(rows, "static", "cross-repo", "constant")
    assert constant is not None and constant["nll"] is None and constant["strict_em"] == 0.0
    after = find_row(rows, "evo", "all", "code2lora-evo", "after-rename")
    assert after is not None and after["n"] == 2 and after["nll"] == 3.0
    assert find_row(rows, "evo", "all", "code2lora-evo", "renamed-target") is None  # no tasks
    assert [r["method"] for r in rows if r["track"] == "static" and r["split"] == "in-repo"] == [
        "constant",
        "base",
    ]


def test_overlap_shares() -> None:
    by = {(o["track"], o["split"]): o for o in overlap(RECORDS)}
    assert by[("static", "in-repo")]["target_in_prompt"] == 0.5
    assert by[("static", "in-repo")]["target_in_training"] == 1.0
    assert by[("static", "cross-repo")]["target_in_training"] == 0.0
    assert by[("evo", "all")]["target_in_prompt"] == pytest.approx(1 / 3)
    assert by[("evo", "all")]["target_in_training"] == pytest.approx(1 / 3)


def test_decay_by_commits_since_the_snapshot() -> None:
    dec = decay(RECORDS)
    assert set(dec) == {"base", "code2lora-evo"}
    assert dec["code2lora-evo"][1] == {"n": 1, "strict_em": 1.0, "nll": 1.0}
    assert dec["base"][3]["nll"] == 3.0


def _report() -> dict[str, Any]:
    return {
        "config": {"suite": ["ci"], "seed": 0},
        "source": {"sha": "0123456789abcdef", "dirty": True},
        "base_model": {"description": "tiny test model"},
        "wall_seconds": 12.5,
        "timings": {"prepare": 1.0},
        "adapter_spread": {
            "code2lora-evo": {
                "repos": 2,
                "state_cosine": 0.9,
                "adapter_cosine": 0.8,
                "delta_cosine": 0.7,
            }
        },
        "repos": [{"repo": "r", "split": "train", "notes": ["history of 99 commits"]}],
        "skipped": [{"repo": "empty", "track": "all", "reason": "no Python files at HEAD"}],
        "notes": [],
        "training": {"code2lora-evo": {"steps": 3, "seconds": 1.5}},
        "adapter_costs": {"evo": {"code2lora-evo": {"adapter_seconds_mean": 0.002, "repos": 2}}},
        "summary": aggregate(RECORDS),
        "overlap": overlap(RECORDS),
        "decay": decay(RECORDS),
        "target_kinds": {"static": {"literal": 4}},
        "records": RECORDS,
    }


def test_markdown_has_the_tables_labels_overlap_and_skips() -> None:
    md = render_markdown(_report())
    assert "## Static track" in md and "## Evolution track" in md
    assert "| `base` |" in md and "| `code2lora-evo` |" in md
    assert "EM ref-cut†" in md and "never by the reference" in md
    assert "Overlap — in-repo: 50.0% of targets appear verbatim in the prompt" in md
    assert "skipped `empty` (all): no Python files at HEAD" in md
    assert "history of 99 commits" in md
    assert "cosine similarity 0.8000" in md and "(scaling * B A) 0.7000" in md
    assert "Per-commit-distance decay" in md and "| +1 | +2 | +3 |" in md
    assert "source 0123456789ab (with local edits)" in md  # a report without the paths
    report = {**_report(), "source": {"sha": "0123456789abcdef", "dirty": True,
                                      "edited": ["README.md"]}}  # fmt: skip
    assert "(with local edits: README.md)" in render_markdown(report)


def test_the_source_revision_names_the_commit_and_the_edited_files(tmp_path: Path) -> None:
    repo = GitRepo(tmp_path / "r")
    repo.commit({"a.py": "x = 1\n", "README.md": "hi\n"}, "one")
    sha = repo.git("rev-parse", "HEAD").strip()
    assert source_revision(repo.root) == {"sha": sha, "dirty": False, "edited": []}
    (repo.root / "README.md").write_text("hello\n")
    (repo.root / "new.py").write_text("untracked\n")  # not a local edit of the source
    assert source_revision(repo.root) == {"sha": sha, "dirty": True, "edited": ["README.md"]}
    assert source_revision(tmp_path)["sha"] is None  # not a checkout


def test_write_report_writes_json_markdown_and_png(tmp_path: Path) -> None:
    paths = write_report(_report(), tmp_path)
    data = json.loads(paths["json"].read_text())
    assert data["records"] == RECORDS and data["source"]["sha"] == "0123456789abcdef"
    assert paths["markdown"].read_text().startswith("# repo2lora bench")
    for name in ("em_by_method", "evo_decay"):
        png = tmp_path / "plots" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.stat().st_size > 5000


def test_compact_table_has_a_row_per_method_and_a_cell_per_track_and_split() -> None:
    table = compact_table(_report()).splitlines()
    assert table[0].startswith("| method | static in-repo: EM / ES / NLL")
    base = next(line for line in table if line.startswith("| `base` |"))
    # static in-repo: EM 1 of 2, ES (1.0 + 0.5) / 2, NLL (2 + 4) / 2
    assert base.split(" | ")[1] == "50.0 / 0.75 / 3.00"
    evo = next(line for line in table if line.startswith("| `code2lora-evo` |"))
    assert evo.split(" | ")[1] == "–"  # no static row for the evolving generator
    assert (
        table[-1]
        == "Tasks: static in-repo 2, static cross-repo 2, evo in-repo 1, evo cross-repo 2."
    )


def test_names_the_prompt_does_not_show_are_their_own_subset() -> None:
    """A target's defined name counts as unseen only when no identifier of the prompt is it
    (a longer identifier that contains it does not show it)."""
    code = b"class ParseError(Exception):\n    pass\n\n\ndef parse(text):\n    return text\n"
    names = NameIndex.of(chunk_source("pkg/core.py", code).chunks)
    assert names_unseen("ParseError", names, "with raises(") is True
    assert names_unseen("ParseError", names, "from pkg.core import ParseError\n") is False
    assert names_unseen("ParseError", names, "ParseErrorBase = 1\n") is True
    assert names_unseen("parse(x) + ParseError", names, "parse(1)\n") is True
    assert names_unseen("42", names, "") is False  # no defined name: not unseen
    assert names_unseen("ParseError", None, "") is None  # names not read
    records = [
        {**_record("static", "cross-repo", -1, False, False, base=(True, 1.0)),
         "names_target": True, "names_unseen": unseen}
        for unseen in (True, False)
    ]  # fmt: skip
    records[1]["task_id"] += "-seen"
    rows = aggregate(records)
    assert find_row(rows, "static", "cross-repo", "base", "repo-name")["n"] == 2  # type: ignore[index]
    assert find_row(rows, "static", "cross-repo", "base", "repo-name-unseen")["n"] == 1  # type: ignore[index]
    shares = {o["split"]: o["names_unseen"] for o in overlap(records)}
    assert shares["cross-repo"] == 0.5
    report = {**_report(), "summary": rows, "overlap": overlap(records), "records": records}
    md = render_markdown(report)
    assert "### Of those, tasks where that name is not in the prompt the model sees" in md
    assert "(cross-repo 50.0% of the tasks)" in md
