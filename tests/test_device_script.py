"""`scripts/train_on_device.sh`, the prepared GPU training run, run here on the CPU with the
tiny preset so that it cannot rot between the sessions that have a GPU: it trains, reports
its numbers, learns, and imports nothing the bare GPU machine lacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.cli import ENV

ROOT = Path(__file__).resolve().parent.parent


def test_the_device_training_script_runs_on_the_cpu_with_a_tiny_model(tmp_path: Path) -> None:
    out = tmp_path / "device"
    env = {
        **ENV,
        "OUT": str(out),
        "SHAPE": "tiny-random",
        "MINUTES": "0.01",
        "PYTHON": sys.executable,
        "OMP_NUM_THREADS": "1",
    }
    small = ["--repos", "10", "--tasks-per-repo", "6", "--batch-size", "4", "--encode-batch", "8"]
    steps = [
        "--min-steps",
        "6",
        "--max-steps",
        "8",
        "--calibration-steps",
        "2",
        "--eval-tasks",
        "8",
    ]
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "train_on_device.sh"), *small, *steps],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "device_training.json").read_text())
    assert json.loads(proc.stdout) == report
    assert report["processes"] == 1 and report["device"] == "cpu"
    assert 6 <= report["steps"] <= 8
    assert report["loss_fell"], report
    assert report["held_out"]["nll_generated"] < report["held_out"]["nll_base"]
    assert report["peak_memory_mb"] > 0 and report["estimated_memory_mb"] > 0
    assert report["step_seconds_median"] > 0 and report["input_tokens_per_s"] > 0
    assert report["imported_but_not_on_the_device"] == []
