"""Base-model resolution: presets, local directories (safetensors only), hub ids offline."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from repo2lora.models import describe_base_model, load_base_model
from repo_encoder.errors import UserError
from tests.cli import run_json


def _save_tiny(path: Path) -> None:
    loaded = load_base_model(describe_base_model("tiny-random"))
    loaded.model.save_pretrained(str(path))
    loaded.tokenizer.save_pretrained(str(path))


def test_local_directory_loads_and_keys_by_weights(tmp_path: Path) -> None:
    _save_tiny(tmp_path / "m")
    info = describe_base_model(str(tmp_path / "m"))
    assert not info.untrained and info.model_key.startswith("dir:")
    assert info.identity == describe_base_model("tiny-random").identity
    loaded = load_base_model(info)
    ids = torch.tensor([[1, 2, 3]])
    ref = load_base_model(describe_base_model("tiny-random")).model
    torch.testing.assert_close(loaded.model(ids).logits, ref(ids).logits)
    assert all(not p.requires_grad for p in loaded.model.parameters())


def test_snapshot_with_a_local_model_directory(tmp_path: Path, sample_repo) -> None:
    _save_tiny(tmp_path / "m")
    out = run_json("snapshot", str(sample_repo.root), "--model", str(tmp_path / "m"))
    assert out["base_model_untrained"] is False and out["model_key"].startswith("dir:")


def test_pickle_only_checkpoint_is_refused(tmp_path: Path) -> None:
    _save_tiny(tmp_path / "bin")
    for f in (tmp_path / "bin").glob("*.safetensors"):  # leave only a pickle checkpoint
        f.unlink()
    model = load_base_model(describe_base_model("tiny-random")).model
    torch.save(model.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    with pytest.raises(UserError, match="safetensors only"):
        describe_base_model(str(tmp_path / "bin"))


def test_hub_id_offline_gives_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(UserError, match="HF_HUB_OFFLINE"):
        describe_base_model("someorg/some-model")


def test_the_shipped_default_verifies_and_comes_with_its_hypernetworks() -> None:
    from repo2lora.hypernet.checkpoint import load_hypernet, shipped_hypernet_dir
    from repo2lora.models import embedded

    card = embedded.verify()  # every shipped file against its sha256
    assert card["total_bytes"] <= 60_000_000  # the budget for the model and both hypernets
    assert {"model.safetensors", "tokenizer.json", "val_loss.png"} <= set(card["files"])
    curve = [c["val_loss"] for c in card["model"]["held_out_loss_curve"]]
    assert len(curve) >= 3 and curve[-1] < curve[0]
    info = describe_base_model(None)
    assert info.model_dir == embedded.DEFAULT_DIR and not info.untrained
    for generator in ("code2lora-static", "code2lora-evo"):
        meta = json.loads((shipped_hypernet_dir(info, generator) / "hypernet.json").read_text())
        assert meta["generator"] == generator
        assert meta["base_model"]["identity"] == info.identity
    hyper = load_hypernet(None, info)
    assert not hyper.untrained and hyper.net.generator_name == "code2lora-evo"
    assert os.environ.get("HF_HUB_OFFLINE") in (None, "1")
