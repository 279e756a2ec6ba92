"""Benchmark progress lines for logs: one per tenth of a stage, with an ETA once there is a
second of work to estimate from."""

from __future__ import annotations

import io

import pytest

from benchmark import progress
from benchmark.progress import LineProgress


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
