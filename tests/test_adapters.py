"""Generated adapters: PEFT export loads with the same logits as the in-process application,
hot swap changes the model in place, an untrained hypernetwork barely moves the model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import PeftModel

from repo2lora.adapters.apply import attach_lora, swap_lora_weights
from repo2lora.adapters.peft_dir import save_peft_adapter
from repo2lora.hypernet.checkpoint import build_hypernet, default_hypernet_config
from repo2lora.models import describe_base_model, load_base_model

IDS = torch.tensor([[5, 17, 99, 200, 3, 42, 42, 7]])


def _fresh_base():
    return load_base_model(describe_base_model("tiny-random")).model


def _weights(seed_vectors: int):
    info = describe_base_model("tiny-random")
    net = build_hypernet(default_hypernet_config(info), info)
    g = torch.Generator().manual_seed(seed_vectors)
    vecs = torch.randn(12, info.config.hidden_size, generator=g)
    with torch.no_grad():
        return net.generate(net.encode(vecs)).detached()


def test_peft_dir_loads_with_in_process_logits(tmp_path: Path) -> None:
    w = _weights(1)
    in_process = attach_lora(_fresh_base(), w)
    expected = in_process(IDS).logits
    out = save_peft_adapter(w, tmp_path / "adapter", "tiny-random")
    assert (out / "adapter_config.json").is_file()
    assert (out / "adapter_model.safetensors").is_file()
    loaded = PeftModel.from_pretrained(_fresh_base(), str(out))
    loaded.eval()
    got = loaded(IDS).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_untrained_adapter_changes_logits_but_barely() -> None:
    base_logits = _fresh_base()(IDS).logits
    adapted = attach_lora(_fresh_base(), _weights(1))(IDS).logits
    diff = (adapted - base_logits).abs().max().item()
    assert diff > 1e-7, "the adapter must change the model"
    assert diff < 1e-2 * base_logits.abs().max().item(), "an untrained adapter must barely move it"


def test_hot_swap_in_place_matches_a_fresh_attach() -> None:
    w1, w2 = _weights(1), _weights(2)
    model = attach_lora(_fresh_base(), w1)
    first = model(IDS).logits
    swap_lora_weights(model, w2)
    swapped = model(IDS).logits
    fresh = attach_lora(_fresh_base(), w2)(IDS).logits
    assert not torch.allclose(first, swapped)
    torch.testing.assert_close(swapped, fresh, rtol=0, atol=1e-6)


def test_hot_swap_with_wrong_shapes_leaves_old_adapter() -> None:
    w1 = _weights(1)
    model = attach_lora(_fresh_base(), w1)
    before = model(IDS).logits
    bad = _weights(2)
    path = next(iter(bad.tensors))
    a, b = bad.tensors[path]
    bad.tensors[path] = (a[:-1], b[:, :-1])  # wrong rank on the first target only
    with pytest.raises(ValueError, match="do not fit"):
        swap_lora_weights(model, bad)
    torch.testing.assert_close(model(IDS).logits, before, rtol=0, atol=0)
