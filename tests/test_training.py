"""Hypernetwork training: gradients only in the generator, per-sample adapters in one batch,
DDP under accelerate equal to one process, kill-and-resume equal to an uninterrupted run, and
a generated adapter that really lowers held-out task loss."""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from repo2lora.adapters.apply import attach_lora
from repo2lora.adapters.functional import functional_lora
from repo2lora.hypernet.checkpoint import build_hypernet, default_hypernet_config, load_generator
from repo2lora.hypernet.evo import EvoHypernet
from repo2lora.models import describe_base_model, load_base_model
from repo2lora.tasks.training_data import build_training_data
from repo2lora.training.data import RepoEncoding, TaskExample
from repo2lora.training.hypernet_trainer import HypernetLoss, train_hypernet
from repo2lora.training.shared import TrainConfig
from repo2lora.training.shared import tokenize_batch as _tokens
from repo_encoder.errors import UserError
from tests.cli import ENV

INFO = describe_base_model("tiny-random")


def _vecs(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("generator", ["code2lora-static", "code2lora-evo"])
def test_gradients_reach_every_generator_parameter_and_no_base_parameter(generator: str) -> None:
    base = load_base_model(INFO)
    cfg = dataclasses.replace(default_hypernet_config(INFO), generator=generator, b_init_bound=0.05)
    net = build_hypernet(cfg, INFO)
    loss_module = HypernetLoss(net, base.model)
    exs = [TaskExample("r", "x = comp", "ute(1)", step=1), TaskExample("r", "y = ", "42", step=0)]
    tok = _tokens(base.tokenizer, exs, TrainConfig())
    if generator == "code2lora-static":
        loss = loss_module(
            "static",
            vectors=_vecs(5, 0)[None].repeat(2, 1, 1),
            mask=torch.ones(2, 5, dtype=torch.bool),
            **tok,
        )
    else:
        enc = RepoEncoding("r", _vecs(5, 0), diffs=[(_vecs(2, 1), _vecs(1, 2), (1, 1, 0))])
        loss = loss_module("evo", repo=enc, start=0, end=1, steps=[1, 0], **tok)
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in base.model.parameters())
    assert not any(n.startswith("_base") for n, _ in loss_module.named_parameters())


def test_per_sample_adapters_are_isolated_and_match_peft() -> None:
    base = load_base_model(INFO).model
    net = build_hypernet(
        dataclasses.replace(default_hypernet_config(INFO), b_init_bound=0.05), INFO
    )
    ids = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(0))
    scaling = net.cfg.alpha / net.cfg.rank

    def logits_with(states: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), functional_lora(base, net.head.targets, net.head(states), scaling):
            return base(input_ids=ids).logits

    s0, s1, s2 = (net.encode(_vecs(6, i)) for i in range(3))
    both = logits_with(torch.stack([s0, s1]))
    other = logits_with(torch.stack([s0, s2]))
    torch.testing.assert_close(both[0], other[0], rtol=0, atol=0)  # sample 0 ignores adapter 1
    assert not torch.allclose(both[1], other[1])
    with torch.no_grad():
        peft_model = attach_lora(load_base_model(INFO).model, net.generate(s1).detached())
        torch.testing.assert_close(
            peft_model(input_ids=ids[1:]).logits[0], both[1], atol=1e-5, rtol=1e-5
        )


def test_generated_adapter_lowers_held_out_loss(suite: list[Path]) -> None:
    base = load_base_model(INFO)
    data = build_training_data(suite, base, evolving=False)
    assert data.train and data.test
    res = train_hypernet(
        base,
        data.encodings,
        data.train,
        Path(suite[0]).parent / "static-run",
        TrainConfig(steps=150, batch_size=8),
        eval_examples=data.test,
    )
    assert res.eval["nll_generated"] < res.eval["nll_base"] - 0.5, res.eval


def test_evo_training_walks_commits_and_learns(suite: list[Path], tmp_path: Path) -> None:
    base = load_base_model(INFO)
    data = build_training_data(suite, base, evolving=True)
    assert any(len(e.diffs) >= 4 for e in data.encodings.values())
    assert {e.step for e in data.train} - {0}, "tasks at later commits"
    res = train_hypernet(
        base,
        data.encodings,
        data.train,
        tmp_path / "evo",
        TrainConfig(generator="code2lora-evo", steps=60, batch_size=4, tbptt_window=2),
        eval_examples=data.test,
    )
    assert res.eval["nll_generated"] < res.eval["nll_base"] - 0.3, res.eval
    card = (tmp_path / "evo" / "hypernet.json").read_text()
    assert '"generator": "code2lora-evo"' in card and '"tbptt_window": 2' in card


def test_an_evolving_run_started_from_a_static_checkpoint_starts_from_its_state(
    suite: list[Path], tmp_path: Path
) -> None:
    base = load_base_model(INFO)
    static = build_training_data(suite, base, evolving=False)
    train_hypernet(base, static.encodings, static.train, tmp_path / "static", TrainConfig(steps=4))
    data = build_training_data(suite, base, evolving=True)
    evo_cfg = TrainConfig(
        generator="code2lora-evo",
        steps=6,
        batch_size=4,
        tbptt_window=2,
        init_from=str(tmp_path / "static"),
        init_lr_scale=0.0,  # the copied encoder and head frozen: only the GRU step learns
    )
    train_hypernet(base, data.encodings, data.train, tmp_path / "evo", evo_cfg)
    static_net = load_generator(str(tmp_path / "static"), INFO).net
    evo_net = load_generator(str(tmp_path / "evo"), INFO).net
    assert isinstance(evo_net, EvoHypernet)
    enc = next(iter(data.encodings.values()))
    with torch.no_grad():
        h0 = evo_net.encode(enc.vectors)
        assert torch.equal(h0, static_net.encode(enc.vectors))  # h_0 is the static state
        assert torch.equal(evo_net.generate(h0).flat(), static_net.generate(h0).flat())
        fresh = build_hypernet(evo_net.cfg, INFO)
        assert isinstance(fresh, EvoHypernet)
        assert not torch.equal(  # ... and the GRU step did learn
            evo_net.step(h0, *enc.diffs[0]), fresh.step(h0, *enc.diffs[0])
        )

    wrong = dataclasses.replace(evo_cfg, init_from=str(tmp_path / "evo"))
    with pytest.raises(UserError, match="needs a code2lora-static checkpoint"):
        train_hypernet(base, data.encodings, data.train, tmp_path / "evo2", wrong)


def _train_cmd(repos: list[Path], out: Path, steps: int, batch: int = 8) -> list[str]:
    return [
        "train",
        "--model",
        "tiny-random",
        "--repos",
        *map(str, repos),
        "--out",
        str(out),
        "--steps",
        str(steps),
        "--batch-size",
        str(batch),
        "--checkpoint-every",
        "10",
        "--threads",
        "1",
        "--json",
    ]


def _params(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "hypernet.safetensors"))


def test_two_processes_under_accelerate_match_one(suite: list[Path], tmp_path: Path) -> None:
    accelerate = Path(sys.executable).parent / "accelerate"
    two = subprocess.run(
        [
            str(accelerate),
            "launch",
            "--cpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "-m",
            "repo2lora",
            *_train_cmd(suite, tmp_path / "two", 12),
        ],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run(
        [sys.executable, "-m", "repo2lora", *_train_cmd(suite, tmp_path / "one", 12)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = _params(tmp_path / "two"), _params(tmp_path / "one")
    assert set(a) == set(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-4, rtol=1e-4)


def test_kill_and_resume_reaches_the_same_parameters(suite: list[Path], tmp_path: Path) -> None:
    # 30 steps of 16: a checkpoint every 10, so the kill lands with 20 steps still to go
    cmd = [sys.executable, "-m", "repo2lora", *_train_cmd(suite, tmp_path / "killed", 30, 16)]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ckpts = tmp_path / "killed" / "checkpoints"
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if ckpts.is_dir() and any(p.name.startswith("step-") for p in ckpts.iterdir()):
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the kill must land mid-run"
    assert not (tmp_path / "killed" / "hypernet.safetensors").exists()
    resumed = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = (tmp_path / "killed" / "train_log.jsonl").read_text()
    assert '"event": "checkpoint"' in log
    whole = subprocess.run(
        [sys.executable, "-m", "repo2lora", *_train_cmd(suite, tmp_path / "whole", 30, 16)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert whole.returncode == 0
    a, b = _params(tmp_path / "killed"), _params(tmp_path / "whole")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0)


def test_lora_baselines_train_save_and_load(suite: list[Path], tmp_path: Path) -> None:
    from repo2lora.training.baselines import (
        LoraTrainConfig,
        load_lora_baseline,
        train_lora_baseline,
    )
    from repo2lora.training.data import per_example_nll, tokenize_examples

    base = load_base_model(INFO)
    data = build_training_data(suite, base, evolving=False)
    shared = train_lora_baseline(base, data.train, tmp_path / "shared", LoraTrainConfig(steps=120))
    assert shared.steps == 120 and shared.seconds > 0
    assert (tmp_path / "shared" / "adapter_model.safetensors").is_file()
    repo = data.train[0].repo
    per_repo = train_lora_baseline(
        base,
        [e for e in data.train if e.repo == repo],
        tmp_path / "per-repo",
        LoraTrainConfig(steps=20),
        source_texts=["def f(x):\n    return x + 1\n" * 20],
    )
    assert per_repo.source_pieces > 0
    tb = tokenize_examples(base.tokenizer, data.test, 256, 32)
    with torch.no_grad():
        lora = per_example_nll(
            load_lora_baseline(base, shared.adapter_dir)(
                input_ids=tb.input_ids, attention_mask=tb.attention_mask
            ).logits,
            tb.labels,
        ).mean()
        plain = per_example_nll(
            base.model(input_ids=tb.input_ids, attention_mask=tb.attention_mask).logits, tb.labels
        ).mean()
    assert lora < plain - 0.5
    # the caller's base model was not wrapped or changed by peft
    assert not any("lora" in n for n, _ in base.model.named_parameters())


def test_window_examples_are_a_seeded_sample_not_the_earliest() -> None:
    from repo2lora.training.shared import sample_in_order

    items = list(range(100))
    picked = sample_in_order(items, 10, (0, 3, 1))
    assert picked == sorted(picked) and len(set(picked)) == 10
    assert max(picked) >= 20  # not the window's first ten (P(max < 20) is about 1e-9)
    assert picked == sample_in_order(items, 10, (0, 3, 1))  # reproducible: resume sees the same
    assert picked != sample_in_order(items, 10, (0, 4, 1))  # another step draws another sample
    assert sample_in_order(items[:5], 10, (0, 0, 0)) == items[:5]
    seen = {i for step in range(50) for i in sample_in_order(items, 10, (0, step, 0))}
    assert len(seen) > 90  # over steps, every commit's examples get trained on


def test_an_evolving_window_backpropagates_to_its_first_commit() -> None:
    """Truncated BPTT over a window of 3 commits: the loss at the window's last commit reaches
    the first commit's GRU input; a later window's reaches its own first commit, never the
    replayed commits before it."""
    base = load_base_model(INFO)
    cfg = dataclasses.replace(
        default_hypernet_config(INFO), generator="code2lora-evo", b_init_bound=0.05
    )
    loss_module = HypernetLoss(build_hypernet(cfg, INFO), base.model)
    diffs = [
        (_vecs(2, 10 + t).requires_grad_(), _vecs(1, 20 + t).requires_grad_(), (1, 1, 0))
        for t in range(6)
    ]
    enc = RepoEncoding("r", _vecs(5, 0), diffs=diffs)
    tok = _tokens(base.tokenizer, [TaskExample("r", "x = comp", "ute(1)", step=3)], TrainConfig())
    loss_module("evo", repo=enc, start=0, end=3, steps=[3], **tok).backward()
    first_in, first_out, _ = diffs[0]
    assert first_in.grad is not None and first_in.grad.abs().sum() > 0
    assert first_out.grad is not None and first_out.grad.abs().sum() > 0
    for d_in, _, _ in diffs:
        d_in.grad = None
    tok = _tokens(base.tokenizer, [TaskExample("r", "x = comp", "ute(1)", step=6)], TrainConfig())
    loss_module("evo", repo=enc, start=3, end=6, steps=[6], **tok).backward()
    assert diffs[3][0].grad is not None and diffs[3][0].grad.abs().sum() > 0
    assert all(d_in.grad is None for d_in, _, _ in diffs[:3])


def test_the_bench_trains_the_evolving_network_with_the_configured_window() -> None:
    from benchmark.config import bench_config
    from benchmark.train import _hypernet_config

    assert _hypernet_config(bench_config(("ci",)), "code2lora-evo", 10).tbptt_window == 16
    cfg = bench_config(("ci",), tbptt_window=3)
    assert _hypernet_config(cfg, "code2lora-evo", 10).tbptt_window == 3
    assert cfg.fingerprint()["tbptt_window"] == 3
