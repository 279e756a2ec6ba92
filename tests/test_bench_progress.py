"""Progress lines for logs (the benchmark's, and the long commands'): one per tenth of a stage,
with an ETA once there is a second of work to estimate from."""

from __future__ import annotations

import io

import pytest

from repo2lora import progress
from repo2lora.progress import LineProgress


def test_line_progress_prints_tenths_with_an_eta(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter(float(t) for t in range(1000))
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    out = io.StringIO()
    show = LineProgress(out)
    for done in range(0, 101):
        show("evaluate static", done, 100)
    lines = out.getvalue().splitlines()
    assert len(lines) == 11  # the start, then every tenth
    assert lines[0] == "evaluate static: 0/100  elapsed 0:00:00"
    # 10 of 100 after 10 s: 90 s to go
    assert lines[1] == "evaluate static: 10/100  elapsed 0:00:10  ETA 0:01:30"
    assert lines[-1] == "evaluate static: 100/100  elapsed 0:01:40  done"


def test_line_progress_keeps_to_the_stages_it_is_given() -> None:
    out = io.StringIO()
    show = LineProgress(out, stages=("repositories",))
    show("repositories", 0, 2)
    for done in range(3):
        show("encode", done, 2)  # a step inside one repository: not in the log
    show("repositories", 2, 2)
    lines = out.getvalue().splitlines()
    assert [line.split("  ")[0] for line in lines] == ["repositories: 0/2", "repositories: 2/2"]
