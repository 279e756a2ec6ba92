"""One generator interface: every kind implements `hypernet.protocol.Generator` and says what it
can do through its capabilities; the decisions the CLI used to make are library functions."""

from __future__ import annotations

import dataclasses
import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from repo2lora.cli.arguments import GENERATORS, OTHER_GENERATORS
from repo2lora.hypernet.checkpoint import (
    KINDS,
    STATELESS_KINDS,
    build_hypernet,
    default_hypernet_config,
    keeps_state,
    save_hypernet,
)
from repo2lora.hypernet.dnd import DndConfig
from repo2lora.hypernet.protocol import Generator, SnapshotInput, replay, snapshot_adapter
from repo2lora.hypernet.shine import ShineConfig
from repo2lora.models import describe_base_model, load_base_model
from repo2lora.train import TRAINERS, check_init_from
from repo_encoder.chunker import chunk_files
from repo_encoder.errors import UserError

INFO = describe_base_model("tiny-random")


def _generator(kind: str) -> Generator:
    d = INFO.config.hidden_size
    if kind == "shine":
        return build_hypernet(ShineConfig(input_dim=d, context_tokens=64), INFO)
    if kind == "dnd":
        return build_hypernet(DndConfig(input_dim=d), INFO)
    return build_hypernet(dataclasses.replace(default_hypernet_config(INFO), generator=kind), INFO)


@functools.cache
def _snapshot() -> SnapshotInput:
    base = load_base_model(INFO)
    files = [
        ("pkg/a.py", b"def area(w, h):\n    return w * h\n"),
        ("pkg/b.py", b"class Box:\n    size = 3\n"),
    ]
    chunks = chunk_files(files).chunks
    n, d = len(chunks), INFO.config.hidden_size
    vectors = torch.randn(n, d, generator=torch.Generator().manual_seed(0))
    return SnapshotInput(vectors, chunks, base.model, base.tokenizer)


def test_the_cli_offers_every_kind_and_knows_which_keep_no_state() -> None:
    assert list(KINDS) == GENERATORS
    assert STATELESS_KINDS == OTHER_GENERATORS
    assert OTHER_GENERATORS == ("shine", "dnd")
    assert {k.trainer for k in KINDS.values()} <= set(TRAINERS)


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_encodes_a_snapshot_and_generates_an_adapter(kind: str) -> None:
    net = _generator(kind)
    snap = _snapshot()
    weights = snapshot_adapter(net, snap)
    assert weights.tensors and all(a.requires_grad is False for a, _ in weights.tensors.values())
    # the same snapshot gives the same adapter (generation reads it deterministically)
    again = snapshot_adapter(net, snap)
    assert torch.equal(weights.flat(), again.flat())
    described = net.describe()
    assert described["generator"] == kind == net.generator_name
    assert described["stateful"] == net.stateful and int(str(described["params"])) > 0
    assert net.stores_state == (kind not in STATELESS_KINDS)
    assert (net.name_probe(snap.base_model, snap.tokenizer) is not None) == net.reads_names


@pytest.mark.parametrize("kind", list(KINDS))
def test_only_a_stateful_kind_steps_and_replay_follows_it(kind: str) -> None:
    net = _generator(kind)
    d = INFO.config.hidden_size
    diff = (torch.randn(3, d), torch.randn(1, d), (2, 0, 1))
    if not net.stateful:
        with pytest.raises(UserError, match="no evolving state"):
            net.step(torch.zeros(4), *diff)
        h = torch.zeros(4)
        assert replay(net, h, [diff]) is h
        return
    with torch.no_grad():
        h0 = net.encode_snapshot(SnapshotInput(vectors=torch.randn(5, d)))
        by_hand = net.step(net.step(h0, *diff), *diff)
        assert torch.equal(replay(net, h0, [diff, diff]), by_hand)
        assert not torch.equal(by_hand, h0)


def test_a_snapshot_uses_the_stored_state_path_unless_the_kind_keeps_none(tmp_path: Path) -> None:
    assert keeps_state(None, None) and keeps_state("code2lora-names", None)
    assert not keeps_state("shine", None) and not keeps_state("dnd", None)
    ckpt = save_hypernet(_generator("dnd"), INFO, tmp_path / "dnd")
    assert not keeps_state(None, str(ckpt))
    assert keeps_state(None, str(tmp_path / "missing"))  # the loader then says what is wrong


def test_init_from_needs_a_code2lora_run_and_a_static_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="add --generator code2lora-static"):
        check_init_from("shine", str(tmp_path))
    with pytest.raises(UserError, match="holds no hypernetwork checkpoint"):
        check_init_from("code2lora-evo", str(tmp_path))
    evo = save_hypernet(_generator("code2lora-evo"), INFO, tmp_path / "evo")
    for run in ("code2lora-evo", "code2lora-static"):
        with pytest.raises(UserError, match="needs a code2lora-static checkpoint"):
            check_init_from(run, str(evo))
    check_init_from("code2lora-names", str(evo))  # a names run may start from an evolving one
    static = save_hypernet(_generator("code2lora-static"), INFO, tmp_path / "static")
    check_init_from("code2lora-static", str(static))  # a static run goes on from a static one
    check_init_from("code2lora-evo", None)


def test_nothing_but_the_bench_command_imports_the_benchmark() -> None:
    """Every module of the library, the server and the lower packages imports without pulling
    in `benchmark` (the CLI's `bench` command imports it when it runs)."""
    code = (
        "import importlib, pkgutil, sys\n"
        "for pkg in ('repo_encoder', 'evo_state', 'repo2lora', 'lsp_server'):\n"
        "    root = importlib.import_module(pkg)\n"
        "    for m in pkgutil.walk_packages(root.__path__, pkg + '.'):\n"
        "        if not m.name.endswith('__main__'):\n"
        "            importlib.import_module(m.name)\n"
        "print(sorted(n for n in sys.modules if n.split('.')[0] == 'benchmark'))\n"
    )
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=root, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
