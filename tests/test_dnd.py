"""DnD-style generator: LoRA tokenization round-trips, gradients reach only the generator (the
collected LoRAs train on a copy of the base model), the decoder reconstructs its training
checkpoints from each repository's prompts, its adapters lower held-out target loss and load in
peft with the logits of in-process application."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import PeftModel

from repo2lora.adapters.functional import batched_to_weights, functional_lora
from repo2lora.adapters.targets import find_lora_targets
from repo2lora.adapters.weights import LoraWeights
from repo2lora.hypernet.checkpoint import build_hypernet, load_generator, load_hypernet
from repo2lora.hypernet.dnd import DndConfig, DndGenerator, LoraTokenizer, select_prompts
from repo2lora.models import describe_base_model, load_base_model
from repo2lora.models.loading import LoadedModel
from repo2lora.stateless_snapshot import repo_adapter as dnd_repo_adapter
from repo2lora.tasks.training_data import TrainingData, build_training_data
from repo2lora.training.baselines import LoraTrainConfig
from repo2lora.training.data import TaskExample
from repo2lora.training.dnd_trainer import (
    CollectConfig,
    DndLoss,
    collect_lora_checkpoints,
    train_collecting,
    train_dnd,
)
from repo2lora.training.loop import TrainResult
from repo2lora.training.shared import TrainConfig
from repo_encoder.errors import UserError
from tests.cli import run_json
from tests.generator_checks import assert_cli_snapshot_matches

pytestmark = pytest.mark.usefixtures("one_thread")
INFO = describe_base_model("tiny-random")
COLLECT = CollectConfig(lora=LoraTrainConfig(steps=60), save_every=5, keep=4)


@pytest.fixture(scope="module")
def trained(
    suite: list[Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[LoadedModel, TrainingData, TrainResult]:
    base = load_base_model(INFO)
    data = build_training_data(suite, base, evolving=False)
    cfg = TrainConfig(generator="dnd", steps=400, batch_size=8, lr=2e-3, eval_every=400)
    out = tmp_path_factory.mktemp("dnd-run")
    res = train_dnd(
        base, data.encodings, data.train, out, cfg, collect=COLLECT, eval_examples=data.test
    )
    return base, data, res


def _random_weights(seed: int) -> LoraWeights:
    g = torch.Generator().manual_seed(seed)
    targets = find_lora_targets(INFO.config, ("q_proj", "v_proj"))
    tensors = {
        t.path: (
            torch.randn(4, t.in_features, generator=g),
            torch.randn(t.out_features, 4, generator=g),
        )
        for t in targets
    }
    return LoraWeights(4, 8, ("q_proj", "v_proj"), tensors)


def test_lora_tokens_round_trip_with_padding_masked() -> None:
    w = _random_weights(0)
    targets = find_lora_targets(INFO.config, ("q_proj", "v_proj"))
    tok = LoraTokenizer(targets, 4)
    tokens = tok.tokens(w)
    assert tokens.shape == (2 * 4 * len(targets), 64)
    assert (tokens[~tok.mask] == 0).all(), "v_proj's 32-wide B columns are padded with zeros"
    back = batched_to_weights(tok.batched(tokens[None]), targets, 4, 8)
    for path, (a, b) in w.tensors.items():
        torch.testing.assert_close(back.tensors[path][0], a, rtol=0, atol=0)
        torch.testing.assert_close(back.tensors[path][1], b, rtol=0, atol=0)


def test_gradients_reach_every_generator_parameter_and_no_base_parameter() -> None:
    base = load_base_model(INFO)
    before = {k: v.clone() for k, v in base.model.state_dict().items()}
    exs = [TaskExample("r", "x = comp", "ute(1)"), TaskExample("r", "y = ", "42")]
    cfg = CollectConfig(lora=LoraTrainConfig(steps=3, batch_size=2), save_every=1, keep=2)
    saved = train_collecting(base, exs, cfg)
    assert [s for s, _, _ in saved] == [2, 3]
    assert all(p.grad is None for p in base.model.parameters())
    for k, v in base.model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)  # LoRAs train on a copy
    net: DndGenerator = build_hypernet(DndConfig(input_dim=64), INFO)  # rank 8, as collected
    net.fit_normalization(torch.stack([net.lora_tokens.tokens(w) for _, _, w in saved]))
    net.train()
    prompts = torch.stack([select_prompts(torch.randn(9, 64), 32, torch.Generator()) for _ in "ab"])
    target = net.normalize(torch.stack([net.lora_tokens.tokens(w) for _, _, w in saved]))
    DndLoss(net)(prompts, target).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_decoder_reconstructs_its_training_checkpoints_per_repository(
    trained: tuple[LoadedModel, TrainingData, TrainResult],
) -> None:
    base, data, res = trained
    assert res.eval["recon_mse"] < 0.25 * res.eval["checkpoint_variance"], res.eval
    net = load_generator(res.out_dir, INFO).net
    assert isinstance(net, DndGenerator)
    collection = collect_lora_checkpoints(
        base, data.train, Path(res.out_dir) / "lora-collection", COLLECT
    )
    own: dict[str, list[torch.Tensor]] = {}
    for c in collection:
        own.setdefault(c.repo, []).append(net.normalize(net.lora_tokens.tokens(c.weights)))
    means = {r: torch.stack(ts).mean(0) for r, ts in own.items()}
    with torch.no_grad():
        for repo, enc in data.encodings.items():
            pred = net.predict_tokens(net.encode(enc.vectors)[None])[0]
            dist = {r: float((pred - m).pow(2).sum()) for r, m in means.items()}
            assert min(dist, key=dist.__getitem__) == repo, dist


def test_trained_generator_lowers_held_out_target_loss(
    trained: tuple[LoadedModel, TrainingData, TrainResult],
) -> None:
    _, data, res = trained
    assert data.test
    assert res.eval["nll_generated"] < res.eval["nll_base"] - 0.5, res.eval
    card = json.loads((Path(res.out_dir) / "hypernet.json").read_text())
    assert card["generator"] == "dnd"
    assert sorted(card["collection"]["checkpoints"]) == sorted(data.encodings)


def test_repository_adapter_loads_in_peft_with_in_process_logits(
    trained: tuple[LoadedModel, TrainingData, TrainResult], suite: list[Path], tmp_path: Path
) -> None:
    base, data, res = trained
    net = load_generator(res.out_dir, INFO).net
    assert isinstance(net, DndGenerator)
    made = dnd_repo_adapter(suite[0], base, net, tmp_path / "adapter")
    assert made.inputs == data.encodings[suite[0].name].vectors.shape[0]
    ids = base.tokenizer("from x import y\nassert y.total(3) == ", return_tensors="pt").input_ids
    with torch.no_grad():
        batched = net(net.encode(data.encodings[suite[0].name].vectors)[None])
        with functional_lora(base.model, net.targets, batched, net.scaling):
            expected = base.model(input_ids=ids).logits
        plain = base.model(input_ids=ids).logits
        peft_model = PeftModel.from_pretrained(load_base_model(INFO).model, made.adapter_dir)
        got = peft_model(input_ids=ids).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert (got - plain).abs().max() > 1e-3, "the adapter changes the model"
    with pytest.raises(UserError, match="dnd generator"):
        load_hypernet(res.out_dir, INFO)


def test_collection_is_read_back_not_retrained(
    trained: tuple[LoadedModel, TrainingData, TrainResult],
) -> None:
    base, data, res = trained
    where = Path(res.out_dir) / "lora-collection"
    files = sorted(where.glob("*/*.safetensors"))
    assert len(files) == len(data.encodings) * COLLECT.keep
    stamps = [f.stat().st_mtime_ns for f in files]
    again = collect_lora_checkpoints(base, data.train, where, COLLECT)
    assert len(again) == len(files)
    assert [f.stat().st_mtime_ns for f in files] == stamps


def test_cli_trains_a_dnd_generator(suite: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "cli"
    res = run_json(
        "train", "--generator", "dnd", "--model", "tiny-random", "--repos", str(suite[0]),
        "--out", str(out), "--steps", "2", "--eval-every", "2", "--threads", "1",
    )  # fmt: skip
    assert res["steps"] == 2 and res["eval"]["nll_base"] > 0
    assert json.loads((out / "hypernet.json").read_text())["generator"] == "dnd"
    assert (out / "lora-collection" / "collection.json").is_file()


def test_cli_snapshot_with_a_dnd_checkpoint_writes_its_adapter(
    trained: Any, suite: list[Path]
) -> None:
    base, res = trained[0], trained[-1]
    net = load_generator(res.out_dir, INFO).net
    expected = dnd_repo_adapter(suite[0], base, net).weights
    assert_cli_snapshot_matches("dnd", res.out_dir, suite[0], expected)
