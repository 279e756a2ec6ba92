"""SHINE-style generator: the frozen base model reads the repository's source text, gradients
reach only the generator, a trained generator lowers held-out target loss, its adapters load in
peft with the logits of in-process application, and `repo2lora train --generator shine` works."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import PeftModel

from repo2lora.adapters.functional import functional_lora
from repo2lora.hypernet.checkpoint import build_hypernet, load_generator, load_hypernet
from repo2lora.hypernet.shine import ShineConfig, ShineGenerator, chunk_token_ids, pack_context
from repo2lora.models import describe_base_model, load_base_model
from repo2lora.models.loading import LoadedModel
from repo2lora.stateless_snapshot import repo_adapter as shine_repo_adapter
from repo2lora.tasks.training_data import TrainingData, build_training_data
from repo2lora.training.data import TaskExample
from repo2lora.training.loop import TrainResult
from repo2lora.training.shared import TrainConfig
from repo2lora.training.shared import tokenize_batch as _tokens
from repo2lora.training.shine_trainer import (
    ShineLoss,
    default_shine_config,
    repo_chunk_texts,
    train_shine,
)
from repo_encoder.errors import UserError
from tests.cli import run_json
from tests.generator_checks import assert_cli_snapshot_matches

pytestmark = pytest.mark.usefixtures("one_thread")
INFO = describe_base_model("tiny-random")


def _ids(base: LoadedModel, text: str) -> list[int]:
    return list(base.tokenizer(text, add_special_tokens=False)["input_ids"])


@pytest.fixture(scope="module")
def trained(
    suite: list[Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[LoadedModel, TrainingData, TrainResult]:
    base = load_base_model(INFO)
    data = build_training_data(suite, base, evolving=False)
    texts = {p.name: repo_chunk_texts(p) for p in suite}
    cfg = TrainConfig(generator="shine", steps=60, batch_size=8, eval_every=60)
    arch = dataclasses.replace(default_shine_config(base, cfg), context_tokens=512)
    out = tmp_path_factory.mktemp("shine-run")
    res = train_shine(base, texts, data.train, out, cfg, arch=arch, eval_examples=data.test)
    return base, data, res


def test_gradients_reach_every_generator_parameter_and_no_base_parameter() -> None:
    base = load_base_model(INFO)
    net = build_hypernet(ShineConfig(input_dim=64, context_tokens=64), INFO)
    net.train()
    loss_module = ShineLoss(net, base.model)
    contexts = [_ids(base, "def alpha():\n    return 1\n"), _ids(base, "class Beta:\n    pass\n")]
    exs = [
        TaskExample("a", "x = al", "pha()"),
        TaskExample("b", "y = ", "Beta()"),
        TaskExample("a", "z = ", "1"),
    ]
    tok = _tokens(base.tokenizer, exs, TrainConfig())
    owner = torch.tensor([0, 1, 0])
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    # the meta-LoRA's B starts at zero (reading starts as the plain base model), so its A gets
    # gradient from the second step on
    for _ in range(2):
        opt.zero_grad()
        loss_module(contexts, owner, tok).backward()
        opt.step()
    opt.zero_grad()
    loss_module(contexts, owner, tok).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in base.model.parameters())
    assert not any(n.startswith("_base") for n, _ in loss_module.named_parameters())


def test_each_repository_adapter_ignores_the_other_contexts_in_its_batch() -> None:
    base = load_base_model(INFO)
    net: ShineGenerator = build_hypernet(ShineConfig(input_dim=64, b_init_bound=0.5), INFO)
    short, long = _ids(base, "X = 1\n"), _ids(base, "def f(a, b):\n    return a * b + 7\n" * 4)
    with torch.no_grad():
        alone = net(base.model, [short])
        mixed = net(base.model, [short, long])
        other = net(base.model, [long])
    for mt in alone:
        for i in range(2):  # A, B
            torch.testing.assert_close(mixed[mt][i][0], alone[mt][i][0], atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(mixed[mt][i][1], other[mt][i][0], atol=1e-5, rtol=1e-4)
        assert not torch.allclose(alone[mt][1], other[mt][1])


def test_context_fits_the_budget_keeps_repository_order_and_is_reproducible() -> None:
    chunks = [[i] * (3 + i % 4) for i in range(30)]
    every = pack_context(chunks, 10_000)
    assert every == [t for c in chunks for t in c]
    packed = pack_context(chunks, 40)
    assert 30 <= len(packed) <= 40
    assert packed == sorted(packed), "chunks stay in repository order"
    assert pack_context(chunks, 40) == packed
    assert pack_context(chunks, 40, seed=1) != packed, "training draws other subsets"


def test_trained_generator_lowers_held_out_target_loss(
    trained: tuple[LoadedModel, TrainingData, TrainResult],
) -> None:
    _, data, res = trained
    assert data.test
    assert res.eval["nll_generated"] < res.eval["nll_base"] - 0.5, res.eval
    card = json.loads((Path(res.out_dir) / "hypernet.json").read_text())
    assert card["generator"] == "shine" and card["config"]["context_tokens"] == 512


def test_repository_adapter_loads_in_peft_with_in_process_logits(
    trained: tuple[LoadedModel, TrainingData, TrainResult], suite: list[Path], tmp_path: Path
) -> None:
    base, _, res = trained
    net = load_generator(res.out_dir, INFO).net
    assert isinstance(net, ShineGenerator)
    made = shine_repo_adapter(suite[0], base, net, tmp_path / "adapter")
    again = shine_repo_adapter(suite[0], base, net)
    for path, (a, b) in made.weights.tensors.items():
        torch.testing.assert_close(again.weights.tensors[path][0], a, rtol=0, atol=0)
        torch.testing.assert_close(again.weights.tensors[path][1], b, rtol=0, atol=0)
    assert made.seconds["generate"] > 0 and made.inputs > 0
    ids = torch.tensor([_ids(base, "from x import y\nassert y.total(3) == ")])
    with torch.no_grad():
        chunks = chunk_token_ids(base.tokenizer, repo_chunk_texts(suite[0]), net.cfg.chunk_tokens)
        context = pack_context(chunks, net.cfg.context_tokens)
        with functional_lora(base.model, net.targets, net(base.model, [context]), net.scaling):
            expected = base.model(input_ids=ids).logits
        plain = base.model(input_ids=ids).logits
        peft_model = PeftModel.from_pretrained(load_base_model(INFO).model, made.adapter_dir)
        got = peft_model(input_ids=ids).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert (got - plain).abs().max() > 1e-3, "the adapter changes the model"
    provenance = json.loads((tmp_path / "adapter" / "repo2lora.json").read_text())
    assert provenance["generator"] == "shine" and provenance["commit"] == made.commit


def test_snapshot_path_refuses_a_shine_checkpoint_with_a_clear_error(
    trained: tuple[LoadedModel, TrainingData, TrainResult],
) -> None:
    with pytest.raises(UserError, match="shine generator"):
        load_hypernet(trained[2].out_dir, INFO)


def test_cli_trains_a_shine_generator(suite: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "cli"
    res = run_json(
        "train", "--generator", "shine", "--model", "tiny-random", "--repos", *map(str, suite),
        "--out", str(out), "--steps", "2", "--eval-every", "2", "--threads", "1",
    )  # fmt: skip
    assert res["steps"] == 2 and res["eval"]["nll_base"] > 0
    assert json.loads((out / "hypernet.json").read_text())["generator"] == "shine"


def test_cli_snapshot_with_a_shine_checkpoint_writes_its_adapter(
    trained: Any, suite: list[Path]
) -> None:
    base, res = trained[0], trained[-1]
    net = load_generator(res.out_dir, INFO).net
    expected = shine_repo_adapter(suite[0], base, net).weights
    assert_cli_snapshot_matches("shine", res.out_dir, suite[0], expected)
