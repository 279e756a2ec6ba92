"""Checks shared by the SHINE and DnD tests: `repo2lora snapshot --hypernet CKPT` with a
trained generator checkpoint writes the same adapter the library makes in-process, and refuses
a --generator that contradicts the checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch

from repo2lora.adapters.peft_dir import load_peft_adapter
from repo2lora.adapters.weights import LoraWeights
from tests.cli import run_cli, run_json


def assert_cli_snapshot_matches(
    generator: str, checkpoint: str, repo: Path, expected: LoraWeights
) -> None:
    out = run_json("snapshot", str(repo), "--model", "tiny-random", "--hypernet", checkpoint)
    assert out["generator"] == generator and not out["hypernet_untrained"] and out["inputs"] > 0
    got = load_peft_adapter(out["adapter_path"])
    for path, (a, b) in expected.tensors.items():
        torch.testing.assert_close(got.tensors[path][0], a)
        torch.testing.assert_close(got.tensors[path][1], b)
    wrong = run_cli(
        "snapshot", str(repo), "--model", "tiny-random", "--hypernet", checkpoint,
        "--generator", "code2lora-evo",
    )  # fmt: skip
    assert wrong.returncode != 0 and f"holds a {generator} generator" in wrong.stderr
    assert "Traceback" not in wrong.stderr
